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
is said under the table. It is one more side-by-side dimension
(:mod:`experiments.report.side_by_side`), with measures of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.report.side_by_side import (
    FANOUT,
    Dimension,
    Measure,
    PairRow,
    pair_rows,
    side_by_side_section,
)
from experiments.results import Record, Results

__all__ = ["GC", "MEASURES", "GcRow", "gc_rows", "gc_section"]

MEASURES: tuple[Measure, ...] = (
    Measure("latency p99 ms", "latency", "latency:normal:p99"),
    Measure("fan-out p99 ms", FANOUT, "latency:normal:p99"),
    Measure("fan-out server CPU %", FANOUT, "server_cpu_percent"),
    Measure("server CPU ms/1k", "throughput", "server_cpu_s_per_1k", scale=1000.0),
)
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
    measures=MEASURES,
    value_prefix="gc ",
)
#: One transport under one combination of the other dimensions, both policies.
GcRow = PairRow


def gc_rows(records: Sequence[Record]) -> list[GcRow]:
    """A row per transport and combination of the other varying dimensions under which the
    transport ran both policies (one side may be not applicable, never both)."""
    return pair_rows(records, GC)


def gc_section(results: Results) -> str:
    """``## Garbage collector`` ("" unless some transport ran under both policies, measured)."""
    return side_by_side_section(results, GC)
