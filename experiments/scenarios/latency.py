"""The ``latency`` scenario."""

from __future__ import annotations

from typing import Any

from experiments.context import RunContext
from experiments.jobs import ClientGroup
from experiments.scenarios.common import delivery_metrics, run_worker, window_s
from experiments.stats import cdf_points, latency_summary, pooled_latencies

__all__ = ["LATENCY", "Latency"]


class Latency:
    """Open-loop latency at fixed rates, one client.

    For each rate of the profile, a fresh server publishes at that rate (``--rate R``) and one
    client reads. Latency is the client's receive ``time.monotonic_ns()`` minus the sample's
    *scheduled* time (``sent_ns``), so a server that lags is charged for it (no coordinated
    omission). Samples received during the warm-up are left out. Delivery is judged by the
    ledger over the whole run first: ``delivery_ok`` is false (and the report flags the row)
    when anything was lost, duplicated, reordered or corrupted, or the client reconnected.
    """

    name = "latency"
    kind = "steady"

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        lp = ctx.profile.latency
        records = []
        for rate in lp.rates_hz:
            duration = max(lp.duration_s, lp.min_samples / rate)
            ctx.note(f"{rate:g}/s for {duration:g} s")
            async with ctx.server(rate) as server:
                result = await run_worker(
                    ctx, server, (ClientGroup(1),), warmup_s=lp.warmup_s, duration_s=duration
                )
            metrics: dict[str, Any] = delivery_metrics(result)
            latencies = pooled_latencies(result["clients"])
            metrics.update(latency_summary(latencies))
            seconds = window_s(result)
            metrics["window_s"] = seconds
            metrics["expected_in_window"] = rate * seconds
            metrics["client_cpu_s"] = result["cpu_s"]["window"]
            if result["server"] is not None:
                metrics["server_cpu_s"] = result["server"]["cpu_s"]
            params = {
                "rate_hz": rate,
                "clients": 1,
                "duration_s": duration,
                "warmup_s": lp.warmup_s,
            }
            record = ctx.record(params, metrics)
            record["series"] = {"latency_cdf_ms": cdf_points(latencies)}
            records.append(record)
        return records


LATENCY = Latency()
