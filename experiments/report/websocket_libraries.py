"""``## WebSocket libraries side by side`` (pure markdown from results.json).

The WebSocket transports share one wire, one path and one token, so what separates them is the
library: tornado, websockets, aiohttp (and the seed design, tornado with its first settings).
One line per library with each scenario's headline figure, as that scenario's own table shows
it: saturation samples/s and its ratio to the library's own minimal pusher, the server's CPU
per 1,000 samples, p99 latency at 1,000 samples/s, fan-out p99 at the
largest client count, own lines of code and cyclomatic complexity, the median reconnect after
a server restart and after a reset, and the samples lost over every fault scenario.
Which transports are WebSocket ones is what their registry records say (a ``ws://`` endpoint).
One table per combination of the dimensions that vary in the run (network, via, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from experiments.report.dimensions import DIMENSIONS, label, varying
from experiments.report.figures import format_number
from experiments.report.rows import Row, figure, rows
from experiments.results import Record, Results

__all__ = ["COLUMNS", "LibraryColumn", "websocket_libraries_section"]

#: Scenarios whose lost samples are summed in the last column.
FAULTS = ("restart", "reset", "blackhole", "blackhole-kernel", "reset-kernel", "link-down")


@dataclass(frozen=True, slots=True)
class LibraryColumn:
    header: str
    scenario: str
    metric: str
    #: Which of the scenario's rows: the one with the largest value of this param ...
    largest: str | None = None
    scale: float = 1.0
    #: ... unless one has this value of it.
    prefer: float | None = None


COLUMNS: tuple[LibraryColumn, ...] = (
    LibraryColumn("samples/s", "throughput", "samples_per_s"),
    LibraryColumn("baseline samples/s", "throughput", "pusher_samples_per_s"),
    LibraryColumn("server CPU ms/1k", "throughput", "server_cpu_s_per_1k", scale=1000.0),
    LibraryColumn("p99 ms at 1,000/s", "latency", "latency:normal:p99", "rate_hz", prefer=1000.0),
    LibraryColumn("fan-out p99 ms", "fanout", "latency:normal:p99", largest="clients"),
    LibraryColumn("own lines", "complexity", "sloc"),
    LibraryColumn("cyclomatic", "complexity", "cyclomatic_total"),
    LibraryColumn("restart: reconnect s", "restart", "reconnect_s_median"),
    LibraryColumn("reset: reconnect s", "reset", "reconnect_s_median"),
)


def _param(row: Row, key: str) -> float:
    value = row.params.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _cell(records: Sequence[Record], column: LibraryColumn) -> str:
    candidates = [row for row in rows(records, column.scenario) if row.records]
    if not candidates:
        return "·"
    key = column.largest
    row = max(candidates, key=lambda r: _param(r, key)) if key else candidates[0]
    preferred = [r for r in candidates if key and _param(r, key) == column.prefer]
    row = preferred[0] if preferred else row
    fig = figure(row, column.metric)
    if fig is None:
        return "n/a"
    if not fig.supported:
        return f"— (n={fig.samples or 0:,})"
    text = format_number(fig.value * column.scale)
    if key == "clients":
        text += f" (×{_param(row, key):,.0f})"
    return text


def _lost(records: Sequence[Record]) -> str:
    faulted = [r for r in records if r.scenario in FAULTS and r.error is None]
    if not faulted:
        return "·"
    total = sum(int(v) for r in faulted if isinstance(v := r.metrics.get("lost"), int | float))
    return f"{total:,}"


def websocket_libraries_section(results: Results, is_websocket: Callable[[str], bool]) -> str:
    """The section ("" when fewer than two WebSocket transports ran)."""
    mine = [r for r in results.records if is_websocket(r.transport)]
    if len({r.transport for r in mine}) < 2:
        return ""
    head = ["library", *(c.header for c in COLUMNS), "lost over faults"]
    out = [
        "## WebSocket libraries side by side",
        "",
        "The same wire, path and resume token on every one (any client reads any server: "
        "`tests/test_ws_interop.py`); what differs is the library. Each cell is the figure "
        "its scenario's table shows (·: that scenario did not run).",
    ]
    others = varying(mine, DIMENSIONS)
    groups: dict[str, list[Record]] = {}
    for r in mine:
        groups.setdefault(label(r.params, others), []).append(r)
    for conditions, group in groups.items():
        if conditions:
            out += ["", f"### {conditions}"]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for transport in dict.fromkeys(r.transport for r in group):
            theirs = [r for r in group if r.transport == transport]
            cells = [transport, *(_cell(theirs, c) for c in COLUMNS), _lost(theirs)]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
