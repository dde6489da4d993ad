"""What a scenario is: one module that owns its run, its metrics, its knobs and its report.

A scenario object has

- ``name`` (its name on the command line and in results.json) and ``kind``
  (``"steady"`` or ``"fault"``); ``concurrent``: its figures are bound by timers of seconds,
  so the runner runs every transport at once, each on its own processes; ``max_repeats``:
  at most this many repeats (None: the run's);
- a docstring saying what it measures and how delivery is checked (the report prints it);
- ``knobs``: profile name -> its knobs (a frozen dataclass of its own), for ``quick``,
  ``default`` and ``full``;
- ``columns``: the report table's columns (metric key, header with its unit);
  ``headline``: the few the console summary shows;
- ``variant(params)``: what tells two rows of one transport apart (a rate, a client count);
- ``async run(ctx) -> list[Record]``: the records of one transport and one repeat, delivery
  judged by :mod:`experiments.scenarios.delivery` before any timing is reported;
- ``sections(results, out_dir) -> list[str]``: markdown (plots included) after its table.

Adding a scenario is one module and one line in :mod:`experiments.scenarios.registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from experiments.histogram import PERCENTILES, merge, summarize
from experiments.report.columns import LATENCY_COLUMNS, Column, latency_column
from experiments.results import Record, Results, Scalar

if TYPE_CHECKING:
    from experiments.run.context import RunContext

__all__ = [
    "LATENCY_COLUMNS",
    "Column",
    "Kind",
    "Scenario",
    "latency_column",
    "latency_metrics",
]

Kind = Literal["steady", "fault"]


def latency_metrics(encoded: str, prefix: str = "latency_ms") -> dict[str, Scalar]:
    """The design's per-record latency keys (``latency_ms_p50`` ... ``_p999``, ``_max``,
    ``_mean``) from one encoded histogram, and ``latency_samples``, the count behind them.
    The report pools the histograms over repeats instead of taking medians of these."""
    h = merge([encoded])
    keys = [*PERCENTILES, "max", "mean"]
    if h is None:
        empty: dict[str, Scalar] = {f"{prefix}_{k}": None for k in keys}
        empty["latency_samples"] = 0
        return empty
    s = summarize(h)
    out: dict[str, Scalar] = {f"{prefix}_{k}": s.value(k) for k in keys}
    out["latency_samples"] = s.count
    return out


class Scenario(Protocol):
    name: str
    kind: Kind
    concurrent: bool
    #: At most this many repeats (None: as many as the run makes).
    max_repeats: int | None

    @property
    def knobs(self) -> Mapping[str, object]: ...

    @property
    def columns(self) -> tuple[Column, ...]: ...

    @property
    def headline(self) -> tuple[Column, ...]: ...

    def variant(self, params: Mapping[str, Scalar]) -> str: ...

    async def run(self, ctx: RunContext) -> list[Record]: ...

    def sections(self, results: Results, out_dir: Path) -> list[str]: ...
