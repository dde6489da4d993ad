"""Two values of one dimension side by side: ``## TLS overhead``, ``## Event loops side by
side``, ``## Browser and Python clients side by side`` and, with measures of its own,
``## Garbage collector`` (:mod:`experiments.report.garbage_collector`); pure markdown from
results.json. A :class:`Dimension` names its values and the figures it compares; a fan-out
figure is compared at the largest client count both values ran (the ``N`` column).

Per transport (and per combination of the other dimensions that vary in the run: network,
via, client kind, and the loop or the security), the headline figures under each value and
their ratio, second over first: latency p50 and p99 at 1,000 samples/s (100/s for client
kinds; the latency scenario's highest rate when it did not run that one; pooled over
repeats, with the sample count behind the p99; ``—`` when too few samples support it),
saturation throughput (``samples_per_s``) and the server's CPU per 1,000 samples
(``server_cpu_s_per_1k``, shown in ms) of the throughput scenario (medians over repeats).
Each cell is the figure the scenario's own table shows, so a ratio never says more than the
tables behind it. A section is written only when some transport ran the latency or the
throughput scenario under both values; a side that was not applicable (WebTransport has no
plaintext) is said under the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from experiments.report.dimensions import DIMENSIONS, dimension, label, not_applicable, varying
from experiments.report.figures import format_number
from experiments.report.rows import Row, figure, rows
from experiments.results import Record, Results

__all__ = [
    "CLIENT_KINDS",
    "FANOUT",
    "LOOPS",
    "MEASURES",
    "TLS",
    "Comparison",
    "Dimension",
    "Measure",
    "PairRow",
    "Side",
    "client_kinds_section",
    "loops_section",
    "pair_rows",
    "side_by_side_section",
    "tls_section",
]

#: The latency scenario's rate the sections compare at (every transport carries it).
COMPARED_RATE_HZ = 1000.0
#: A figure whose scenario did not run under that value.
NOT_RUN = "·"
#: The fan-out scenario: its rows are picked by their number of clients.
FANOUT = "fanout"


@dataclass(frozen=True, slots=True)
class Measure:
    """One compared figure: a column metric of a scenario, scaled for print."""

    header: str
    scenario: str
    metric: str
    scale: float = 1.0


MEASURES: tuple[Measure, ...] = (
    Measure("p50 ms", "latency", "latency:normal:p50"),
    Measure("p99 ms", "latency", "latency:normal:p99"),
    Measure("samples/s", "throughput", "samples_per_s"),
    Measure("server CPU ms/1k", "throughput", "server_cpu_s_per_1k", scale=1000.0),
)


@dataclass(frozen=True, slots=True)
class Dimension:
    """Which dimension, its two values (the ratio is second / first), and the section."""

    key: str
    first: str
    second: str
    title: str
    intro: str
    #: The latency scenario's rate the section compares at.
    rate_hz: float = COMPARED_RATE_HZ
    #: The figures compared (a fan-out one at the largest client count both values ran).
    measures: tuple[Measure, ...] = MEASURES
    #: What a not-applicable note names before the value (``gc`` says ``gc freeze``).
    value_prefix: str = ""


TLS = Dimension(
    "security",
    "plain",
    "tls",
    "TLS overhead",
    "Each transport plain and over TLS (`--security plain,tls`: a throwaway CA and server "
    "certificate made for the run; the client verifies it). ×: tls / plain. Throughput's "
    "baseline pushers have no TLS, so under tls its overhead column includes what TLS costs.",
)
LOOPS = Dimension(
    "loop",
    "asyncio",
    "uvloop",
    "Event loops side by side",
    "Each transport on asyncio's own event loop and on uvloop (`--loop asyncio,uvloop`): "
    "servers, client workers and baseline pushers all on the same loop. ×: uvloop / asyncio.",
)
CLIENT_KINDS = Dimension(
    "client_kind",
    "python",
    "browser",
    "Browser and Python clients side by side",
    "The same server read by the suite's Python client and by the live page in headless "
    "Chromium (`--client-kinds python,browser`), latency at 100 samples/s, a rate a browser "
    "dashboard lives with (the browser's receive times mapped onto the server's clock, see "
    "the latency section). ×: browser / Python. Browsers run no throughput scenario.",
    rate_hz=100.0,
)


@dataclass(frozen=True, slots=True)
class Side:
    """One figure under one value: its number, or the words saying why there is none."""

    value: float | None
    #: What the cell says (the number, ``— (n=…)``, ``n/a``, ``·``, ``not applicable``).
    text: str


@dataclass(frozen=True, slots=True)
class Comparison:
    measure: Measure
    first: Side
    second: Side

    @property
    def ratio(self) -> float | None:
        """second / first (None: either side without a supported figure, or first <= 0)."""
        a, b = self.first.value, self.second.value
        if a is None or b is None or a <= 0 or b < 0:
            return None
        return b / a


@dataclass(frozen=True, slots=True)
class PairRow:
    """One transport under one combination of the other dimensions, both values."""

    transport: str
    #: The other dimensions that vary in the run, e.g. ``wan · uvloop`` ("" when none).
    conditions: str
    comparisons: tuple[Comparison, ...]
    #: Why a side did not run at all (its not-applicable reason), per value.
    not_applicable: tuple[tuple[str, str], ...] = ()
    #: The fan-out size compared (None: no fan-out measure, or no size run under both).
    clients: int | None = None


def _number(row: Row, key: str) -> float:
    value = row.params.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _measured(records: Sequence[Record], scenario: str) -> list[Row]:
    return [row for row in rows(records, scenario) if row.records]


def _largest_common_n(first: Sequence[Record], second: Sequence[Record]) -> int | None:
    """The largest fan-out size measured under both values (None: none)."""
    sizes = [
        {int(_number(r, "clients")) for r in _measured(side, FANOUT)} for side in (first, second)
    ]
    common = sizes[0] & sizes[1]
    return max(common) if common else None


def _side(records: Sequence[Record], measure: Measure, rate_hz: float, clients: int | None) -> Side:
    mine = [r for r in records if r.scenario == measure.scenario]
    if not mine:
        return Side(None, NOT_RUN)
    if not_applicable(mine) is not None:
        return Side(None, "not applicable")
    candidates = _measured(mine, measure.scenario)
    if not candidates:
        return Side(None, "failed")
    if measure.scenario == FANOUT:
        at_n = [row for row in candidates if int(_number(row, "clients")) == clients]
        if not at_n:
            return Side(None, NOT_RUN)
        row = at_n[0]
    else:
        # Latency at the dimension's rate: 1,000/s, which every transport carries (at
        # 10,000/s some are past their saturation and their latency is their queue), or
        # 100/s for browsers; the highest rate when it did not run.
        at_rate = [row for row in candidates if _number(row, "rate_hz") == rate_hz]
        row = at_rate[0] if at_rate else max(candidates, key=lambda r: _number(r, "rate_hz"))
    fig = figure(row, measure.metric)
    if fig is None:
        return Side(None, "n/a")
    if not fig.supported:
        return Side(None, f"— (n={fig.samples or 0:,})")
    text = format_number(fig.value * measure.scale)
    if fig.samples is not None and measure.metric.endswith(":p99"):
        text += f" (n={fig.samples:,})"
    return Side(fig.value, text)


def pair_rows(records: Sequence[Record], dim: Dimension) -> list[PairRow]:
    """A row per transport and combination of the other varying dimensions under which
    the transport ran both ``dim.first`` and ``dim.second`` (one side may be not applicable,
    never both)."""
    others = varying(records, [k for k in DIMENSIONS if k != dim.key])
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.transport, label(r.params, others)), []).append(r)
    fanout = any(m.scenario == FANOUT for m in dim.measures)
    out = []
    for (transport, conditions), group in groups.items():
        first = [r for r in group if dimension(r.params, dim.key) == dim.first]
        second = [r for r in group if dimension(r.params, dim.key) == dim.second]
        if not first or not second:
            continue
        skipped = tuple(
            (value, reason)
            for value, side in ((dim.first, first), (dim.second, second))
            if (reason := not_applicable(side)) is not None
        )
        if len(skipped) == 2:
            continue
        n = _largest_common_n(first, second) if fanout else None
        comparisons = tuple(
            Comparison(m, _side(first, m, dim.rate_hz, n), _side(second, m, dim.rate_hz, n))
            for m in dim.measures
        )
        out.append(PairRow(transport, conditions, comparisons, skipped, n))
    return out


def _ratio_text(ratio: float | None) -> str:
    return "" if ratio is None else f"×{ratio:.2f}"


def side_by_side_section(results: Results, dim: Dimension) -> str:
    """The section's markdown ("" when no transport ran under both values, measured)."""
    table_rows = pair_rows(results.records, dim)
    ran = {r.scenario for r in results.records}
    measures = [m for m in dim.measures if m.scenario in ran]
    if not measures or all(row.not_applicable for row in table_rows):
        return ""
    conditions = any(row.conditions for row in table_rows)
    fanout = any(m.scenario == FANOUT for m in measures)
    head = ["transport", *(["conditions"] if conditions else []), *(["N"] if fanout else [])]
    for m in measures:
        head += [f"{m.header} {dim.first}", f"{m.header} {dim.second}", "×"]
    out = [f"## {dim.title}", "", dim.intro, ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for row in table_rows:
        cells = [row.transport, *([row.conditions] if conditions else [])]
        if fanout:
            cells.append(NOT_RUN if row.clients is None else f"{row.clients:,}")
        for c in row.comparisons:
            if c.measure in measures:
                cells += [c.first.text, c.second.text, _ratio_text(c.ratio)]
        out.append("| " + " | ".join(cells) + " |")
        where = f" ({row.conditions})" if row.conditions else ""
        notes += [
            f"- {row.transport}{where}, {dim.value_prefix}{value}: "
            f"{why.removeprefix('not applicable: ')}"
            for value, why in row.not_applicable
        ]
    legend = f"`{NOT_RUN}`: not run; `—`: too few samples for that percentile."
    if fanout:
        legend += " N: the fan-out size compared (clients)."
    out += ["", legend]
    if notes:
        out += ["", "Not applicable:", "", *notes]
    return "\n".join(out)


def tls_section(results: Results) -> str:
    """``## TLS overhead`` ("" unless some transport ran both plain and over TLS)."""
    return side_by_side_section(results, TLS)


def loops_section(results: Results) -> str:
    """``## Event loops side by side`` ("" unless some transport ran on both loops)."""
    return side_by_side_section(results, LOOPS)


def client_kinds_section(results: Results) -> str:
    """``## Browser and Python clients side by side`` ("" unless a browser ran beside a
    Python client)."""
    return side_by_side_section(results, CLIENT_KINDS)
