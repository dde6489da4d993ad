"""The ``latency`` scenario: open-loop latency at fixed rates, one client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from experiments.report.plots import latency_cdf_plot
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.scenarios.delivery import judge
from experiments.scenarios.scenario import (
    LATENCY_COLUMNS,
    Column,
    Kind,
    latency_column,
    latency_metrics,
)
from experiments.worker.page_outcome import BROWSER_CLOCK
from experiments.worker.schema import ClientGroup

__all__ = ["LATENCY", "Latency", "LatencyKnobs"]


@dataclass(frozen=True, slots=True)
class LatencyKnobs:
    rates_hz: tuple[float, ...]
    warmup_s: float
    duration_s: float
    #: Longer windows for slow rates, so they still collect this many samples per repeat.
    min_samples: int = 0

    def duration_at(self, rate_hz: float) -> float:
        return max(self.duration_s, self.min_samples / rate_hz)


class Latency:
    """Open-loop latency at fixed rates, one client.

    For each rate, a fresh server publishes at that rate (``--rate R``) and one client reads.
    Latency is the client's receive ``time.monotonic_ns()`` minus the sample's *scheduled*
    time (``sent_ns``), so a server that lags is charged for it (no coordinated omission).
    Samples received during the warm-up are left out. Percentiles are pooled over every
    repeat (HDR histograms, merged) and shown with their sample count; a percentile the count
    cannot support is left out. Delivery is judged by the ledger over the whole run first:
    ``delivery_ok`` is false (and the report flags the row) when anything was lost,
    duplicated, reordered or corrupted, or the client reconnected.
    """

    name = "latency"
    kind: Kind = "steady"
    concurrent = False
    max_repeats: int | None = None
    knobs: Mapping[str, LatencyKnobs] = {
        # A smoke test of the pipeline: short windows.
        "quick": LatencyKnobs(rates_hz=(1000.0,), warmup_s=0.2, duration_s=0.8),
        # 100/s x 4 s x 3 repeats: 1,200 samples pooled for the p99 (the rate browser and
        # Python clients are compared at); 1,000/s x 1 s x 3: 3,000; 10,000/s: 30,000 for the
        # p99.9. The full profile adds 10/s, long enough for its p90.
        "default": LatencyKnobs(
            rates_hz=(100.0, 1000.0, 10000.0), warmup_s=0.2, duration_s=1.0, min_samples=400
        ),
        "full": LatencyKnobs(
            rates_hz=(10.0, 100.0, 1000.0, 10000.0),
            warmup_s=2.0,
            duration_s=10.0,
            min_samples=300,
        ),
    }
    columns: tuple[Column, ...] = (
        *LATENCY_COLUMNS,
        Column("delivered", "delivered"),
        Column("lost", "lost"),
        Column("duplicated", "duplicated"),
        Column("reordered", "reordered"),
    )
    headline = (latency_column("p50"), latency_column("p99"), latency_column("max"))

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return f"{params.get('rate_hz', 0):g}/s"

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]
        records = []
        for rate in k.rates_hz:
            duration = k.duration_at(rate)
            ctx.note(f"{rate:g}/s for {duration:g} s")
            async with ctx.server(rate) as server:
                result = await ctx.run_worker(
                    server, (ClientGroup(1),), warmup_s=k.warmup_s, duration_s=duration
                )
            metrics: dict[str, Scalar] = judge(result.clients)
            metrics.update(latency_metrics(result.latency.get("normal", "")))
            seconds = result.window.seconds
            metrics["window_s"] = seconds
            metrics["expected_in_window"] = rate * seconds
            metrics["client_cpu_s"] = result.cpu_window_s
            if result.server is not None:
                metrics["server_cpu_s"] = result.server.cpu_s
            params = {"rate_hz": rate, "clients": 1, "duration_s": duration,
                      "warmup_s": k.warmup_s}  # fmt: skip
            records.append(ctx.record(params, metrics, latency=result.latency))
        return records

    def _label(self, record: Record) -> str:
        return f"{record.transport} {self.variant(record.params)}"

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        records = [r for r in results.records if r.scenario == self.name and not r.error]
        link = latency_cdf_plot(records, out_dir / "latency_cdf.png", self._label)
        out = [link] if link else []
        if any(r.params.get("client_kind") == "browser" for r in records):
            out.append(BROWSER_CLOCK)
        return out


LATENCY = Latency()
