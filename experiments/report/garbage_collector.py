"""``## Garbage collector``: each transport under both ``--gc`` policies, once (pure markdown).

``--gc default,freeze`` (:mod:`experiments.run.gc_dimension`) runs every step under the
interpreter's collector as it comes and under ``freeze`` (after start-up: ``gc.collect()``,
``gc.freeze()``, higher thresholds; :mod:`transports.gc_policy`), in servers, client workers
and baseline pushers alike. The section shows, per transport (and per combination of the other
dimensions that vary in the run), the figures a collector's pauses move, under each policy
and their ratio, freeze over default:

- latency p99 at 1,000 samples/s (the latency scenario's highest rate when it did not run
  1,000/s), pooled over repeats, with the sample count behind it;
- fan-out p99 and the server's CPU % at the largest number of clients both policies ran
  (the ``N`` column), the figures of the fan-out table;
- the throughput scenario's server CPU per 1,000 samples (``server_cpu_s_per_1k``, in ms).

Each cell is the figure its scenario's own table shows. The section is written only when some
transport ran one of these scenarios under both policies; a side that was not applicable
is said under the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from experiments.report.dimensions import DIMENSIONS, dimension, label, not_applicable, varying
from experiments.report.figures import format_number
from experiments.report.rows import Row, figure, rows
from experiments.report.side_by_side import (
    COMPARED_RATE_HZ,
    NOT_RUN,
    Comparison,
    Dimension,
    Measure,
    Side,
)
from experiments.results import Record, Results

__all__ = ["GC", "MEASURES", "GcRow", "gc_rows", "gc_section"]

GC = Dimension(
    "gc",
    "default",
    "freeze",
    "Garbage collector",
    "Each transport under the interpreter's collector as it comes and under `freeze` "
    "(`--gc default,freeze`: after start-up `gc.collect()`, `gc.freeze()` and higher "
    "thresholds; the conditions say which): servers, client workers and baseline pushers all "
    "under the same policy. Latency p99 at 1,000/s; fan-out p99 and server CPU at the largest "
    "N both ran. ×: freeze / default.",
)

#: The fan-out scenario: its rows are picked by their number of clients.
FANOUT = "fanout"

MEASURES: tuple[Measure, ...] = (
    Measure("latency p99 ms", "latency", "latency:normal:p99"),
    Measure("fan-out p99 ms", FANOUT, "latency:normal:p99"),
    Measure("fan-out server CPU %", FANOUT, "server_cpu_percent"),
    Measure("server CPU ms/1k", "throughput", "server_cpu_s_per_1k", scale=1000.0),
)


@dataclass(frozen=True, slots=True)
class GcRow:
    """One transport under one combination of the other dimensions, both policies."""

    transport: str
    #: The other dimensions that vary in the run, e.g. ``wan · uvloop`` ("" when none).
    conditions: str
    #: The fan-out size compared (None: no size measured under both policies).
    clients: int | None
    comparisons: tuple[Comparison, ...]
    #: Why a side did not run at all (its not-applicable reason), per policy.
    not_applicable: tuple[tuple[str, str], ...] = ()


def _number(row: Row, key: str) -> float:
    value = row.params.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _measured(records: Sequence[Record], scenario: str) -> list[Row]:
    return [row for row in rows(records, scenario) if row.records]


def _largest_common_n(first: Sequence[Record], second: Sequence[Record]) -> int | None:
    """The largest fan-out size measured under both policies (None: none)."""
    sizes = [
        {int(_number(r, "clients")) for r in _measured(side, FANOUT)} for side in (first, second)
    ]
    common = sizes[0] & sizes[1]
    return max(common) if common else None


def _side(records: Sequence[Record], measure: Measure, clients: int | None) -> Side:
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
        at_rate = [row for row in candidates if _number(row, "rate_hz") == COMPARED_RATE_HZ]
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


def gc_rows(records: Sequence[Record]) -> list[GcRow]:
    """A row per transport and combination of the other varying dimensions under which the
    transport ran both policies (one side may be not applicable, never both)."""
    others = varying(records, [k for k in DIMENSIONS if k != GC.key])
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.transport, label(r.params, others)), []).append(r)
    out = []
    for (transport, conditions), group in groups.items():
        first = [r for r in group if dimension(r.params, GC.key) == GC.first]
        second = [r for r in group if dimension(r.params, GC.key) == GC.second]
        if not first or not second:
            continue
        skipped = tuple(
            (value, reason)
            for value, side in ((GC.first, first), (GC.second, second))
            if (reason := not_applicable(side)) is not None
        )
        if len(skipped) == 2:
            continue
        n = _largest_common_n(first, second)
        comparisons = tuple(
            Comparison(m, _side(first, m, n), _side(second, m, n)) for m in MEASURES
        )
        out.append(GcRow(transport, conditions, n, comparisons, skipped))
    return out


def _ratio_text(ratio: float | None) -> str:
    return "" if ratio is None else f"×{ratio:.2f}"


def gc_section(results: Results) -> str:
    """``## Garbage collector`` ("" unless some transport ran under both policies, measured)."""
    table_rows = gc_rows(results.records)
    ran = {r.scenario for r in results.records}
    measures = [m for m in MEASURES if m.scenario in ran]
    if not measures or all(row.not_applicable for row in table_rows):
        return ""
    conditions = any(row.conditions for row in table_rows)
    fanout = any(m.scenario == FANOUT for m in measures)
    head = ["transport", *(["conditions"] if conditions else []), *(["N"] if fanout else [])]
    for m in measures:
        head += [f"{m.header} {GC.first}", f"{m.header} {GC.second}", "×"]
    out = [f"## {GC.title}", "", GC.intro, ""]
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
            f"- {row.transport}{where}, gc {value}: {why.removeprefix('not applicable: ')}"
            for value, why in row.not_applicable
        ]
    legend = f"`{NOT_RUN}`: not run; `—`: too few samples for that percentile."
    if fanout:
        legend += " N: the fan-out size compared (clients)."
    out += ["", legend]
    if notes:
        out += ["", "Not applicable:", "", *notes]
    return "\n".join(out)
