"""``## Through a reverse proxy``: per transport and ``--via`` path, what the stream looks like
through nginx (pure markdown from results.json).

One row per transport and path (direct, nginx as recommended, nginx with nothing but
``proxy_pass``): does it work at all (if not, the first failure its client saw), the first
sample's latency (its age: received minus due) and the time from the connection being up
to it, the p99 at 100/s (the quiet-stream scenario's live part, pooled, with
its sample count), the latency scenario's p99 at its lowest rate, what a restart of the
upstream and a black hole in front of nginx look like to the client, and whether the path cut
a quiet stream (heartbeats off, ``proxy_read_timeout`` shortened for that part) and one with
heartbeats. Each cell is the figure the scenario's own table shows (medians over repeats,
latency pooled); ``·`` means the scenario did not run there. A transport nginx cannot carry
gets one "not applicable" row per path. When other dimensions vary too (network, security,
client kind, loop), each of their combinations gets rows of its own, named in a column per
dimension: no cell mixes them. The section is empty when the run used one path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from experiments.report.dimensions import DIMENSIONS, dimension, not_applicable, split
from experiments.report.figures import format_number
from experiments.report.rows import Row, figure, rows
from experiments.results import Record, Results

__all__ = ["NOT_RUN", "via_section"]

#: A cell whose scenario did not run on that path.
NOT_RUN = "·"
#: A cell whose scenario ran on that path but failed (listed under the table).
FAILED = "failed"
#: Longest reason quoted in a cell.
_REASON_CHARS = 70
_TEMPLATES = "experiments/via/"


@dataclass(frozen=True, slots=True)
class _Cells:
    """The records of one transport on one path, by scenario."""

    records: Sequence[Record]

    def row(self, scenario: str, pick: Callable[[Row], float] | None = None) -> Row | None:
        found = [r for r in rows(self.records, scenario) if r.records]
        if not found:
            return None
        return min(found, key=pick) if pick else found[0]

    def missing(self, scenario: str) -> str:
        """What a cell of ``scenario`` says when it has no measured row."""
        return FAILED if any(r.scenario == scenario for r in self.records) else NOT_RUN

    def number(self, scenario: str, metric: str) -> str:
        row = self.row(scenario)
        if row is None:
            return self.missing(scenario)
        fig = figure(row, metric)
        return "n/a" if fig is None else format_number(fig.value)

    def pooled(self, scenario: str, metric: str, pick: Callable[[Row], float] | None = None) -> str:
        row = self.row(scenario, pick)
        if row is None:
            return self.missing(scenario)
        fig = figure(row, metric)
        if fig is None:
            return "n/a"
        if not fig.supported:
            return f"— (n={fig.samples or 0:,})"
        return f"{format_number(fig.value)} (n={fig.samples or 0:,})"


def _rate(row: Row) -> float:
    value = row.params.get("rate_hz")
    return float(value) if isinstance(value, int | float) else 0.0


def _short(reason: object) -> str:
    text = str(reason)
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _works(cells: _Cells) -> str:
    row = cells.row("quiet-stream")
    if row is not None:
        failures = [r.metrics.get("failure") for r in row.records if not r.metrics.get("works")]
        return "yes" if not failures else f"**no**: {_short(failures[0])}"
    for scenario in ("latency", "restart", "blackhole"):
        row = cells.row(scenario)
        received = None if row is None else figure(row, "received")
        if received is not None:
            return "yes" if received.value > 0 else "**no**"
    return cells.missing("quiet-stream")


def _first(cells: _Cells) -> str:
    age = cells.number("quiet-stream", "first_sample_ms")
    after = cells.number("quiet-stream", "connect_to_first_sample_ms")
    return age if age == after else f"{age} / {after}"


def _cut(cells: _Cells, prefix: str) -> str:
    row = cells.row("quiet-stream")
    if row is None:
        return cells.missing("quiet-stream")
    record = row.records[0]
    if record.metrics.get(f"{prefix}_connected") is False:
        return "never connected"
    count = figure(row, f"{prefix}_cuts")
    if count is None or count.value == 0:
        return "not cut"
    after = figure(row, f"{prefix}_cut_after_s")
    silent = f" after {format_number(after.value)} s silent" if after is not None else ""
    reason = record.metrics.get(f"{prefix}_cut_reason")
    why = f" ({_short(reason)})" if reason else ""
    return f"cut {format_number(count.value)}×{silent}{why}"


def _latency_header(records: Sequence[Record], pct: str) -> str:
    rates = sorted(
        {_rate(r) for r in rows(records, "latency") if r.records and not not_applicable(r.records)}
    )
    return f"latency {pct} ms at {rates[0]:g}/s (n)" if rates else f"latency {pct} ms (n)"


def _values(records: Sequence[Record], key: str, *, invert: bool = False) -> str:
    """The distinct numeric values of param ``key`` (or their inverses), ``3`` or ``3, 5``."""
    found = sorted(
        {1 / float(v) if invert else float(v) for r in records
         if isinstance(v := r.params.get(key), int | float) and v}
    )  # fmt: skip
    return ", ".join(f"{v:g}" for v in found)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    #: The scenario it reads (None: any); a column whose scenario did not run is left out.
    scenario: str | None
    cell: Callable[[_Cells], str]


def _columns(records: Sequence[Record]) -> list[_Column]:
    ran = {r.scenario for r in records}
    columns = [
        _Column("works", None, _works),
        _Column("first sample ms: age / after connect", "quiet-stream", _first),
        _Column("p99 ms at 100/s (n)", "quiet-stream",
                lambda c: c.pooled("quiet-stream", "latency:normal:p99")),
        _Column(_latency_header(records, "p50"), "latency",
                lambda c: c.pooled("latency", "latency:normal:p50", pick=_rate)),
        _Column(_latency_header(records, "p99"), "latency",
                lambda c: c.pooled("latency", "latency:normal:p99", pick=_rate)),
        _Column("restart: reconnect s", "restart",
                lambda c: c.number("restart", "reconnect_s_median")),
        _Column("restart: lost", "restart", lambda c: c.number("restart", "lost")),
        _Column("black hole: client notices s", "blackhole",
                lambda c: c.number("blackhole", "detect_s_median")),
        _Column("black hole: server side drops s", "blackhole",
                lambda c: c.number("blackhole", "server_drop_s_median")),
        _Column("black hole: reconnect s", "blackhole",
                lambda c: c.number("blackhole", "reconnect_s_median")),
        _Column("quiet stream, heartbeats off", "quiet-stream", lambda c: _cut(c, "quiet")),
        _Column("quiet stream, heartbeats on", "quiet-stream", lambda c: _cut(c, "heartbeat")),
    ]  # fmt: skip
    return [c for c in columns if c.scenario is None or c.scenario in ran]


def _intro(results: Results) -> str:
    records = results.records
    version = results.environment.packages.get("nginx")
    text = (
        f"The same scenarios with nginx{f' {version}' if version else ''} between client and "
        "server: `direct` (no proxy), `nginx` (the recommended config, "
        f"`{_TEMPLATES}nginx-recommended.conf`) and `nginx-defaults` (nothing but "
        f"`proxy_pass`, `{_TEMPLATES}nginx-defaults.conf`). A restart kills the server behind "
        "a running nginx; a black hole sits between the client and nginx."
    )
    quiet = [r for r in records if r.scenario == "quiet-stream" and not r.error]
    if quiet:
        timeouts = _values(quiet, "proxy_read_timeout_s")
        shortened = f"`proxy_read_timeout {timeouts}s`" if timeouts else "a shortened timeout"
        rates = _values(quiet, "quiet_rate_hz", invert=True)
        every = f"every {rates} s" if rates else "rarely"
        text += (
            f" The quiet stream has a sample {every}, through nginx with {shortened}; "
            "*heartbeats off* also turns the client's read timeout off, so only the path can "
            "end the stream."
        )
    return text + f" `{NOT_RUN}`: not run on that path; `—`: too few samples for the percentile."


def via_section(results: Results) -> str:
    """The section's markdown ("" when every record ran on one path)."""
    records = results.records
    vias = list(dict.fromkeys(str(r.params.get("via", "direct")) for r in records))
    if vias in ([], ["direct"]):
        return ""
    columns = _columns(records)
    groups = split(records, [k for k in DIMENSIONS if k != "via"])
    keys = list(groups[0].params)
    head = ["transport", "via", *keys, *(c.header for c in columns)]
    out = ["## Through a reverse proxy", "", _intro(results), ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for transport in dict.fromkeys(r.transport for r in records):
        for group in groups:
            for via in vias:
                mine = [
                    r
                    for r in group.records
                    if r.transport == transport and dimension(r.params, "via") == via
                ]
                if not mine:
                    continue
                named = [transport, via, *(group.params[k] for k in keys)]
                why_not = next((str(r.metrics["not_applicable"]) for r in mine
                                if "not_applicable" in r.metrics), None)  # fmt: skip
                if why_not is not None:
                    line = [*named, why_not, *[NOT_RUN] * (len(columns) - 1)]
                else:
                    cells = _Cells(mine)
                    line = [*named, *(c.cell(cells) for c in columns)]
                out.append("| " + " | ".join(_escape(c) for c in line) + " |")
    failed = [r for r in records if r.error]
    if failed:
        out += ["", "Failed measurements (no figures):", ""]
        out += [
            f"- {r.transport} via {r.params.get('via')}, {r.scenario} repeat {r.repeat}: "
            f"{_escape(r.error or '')}"
            for r in failed
        ]
    return "\n".join(out)
