"""The ``fanout`` scenario."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from experiments.context import RunContext
from experiments.jobs import ClientGroup
from experiments.profiles import FanoutProfile
from experiments.scenarios.common import delivery_metrics, window_s
from experiments.stats import cdf_points, latency_summary, pooled_latencies

__all__ = ["FANOUT", "Fanout", "split_clients"]


def split_clients(clients: int, fp: FanoutProfile) -> list[int]:
    """How many clients each worker process carries (one worker below the minimum)."""
    workers = 1 if clients < fp.clients_per_worker_min else max(1, fp.max_workers)
    base, extra = divmod(clients, workers)
    return [base + (1 if i < extra else 0) for i in range(workers) if base or i < extra]


class Fanout:
    """Fan-out cost: N clients at a fixed rate each, from one server.

    One server publishes at ``rate_hz``; for each N of the profile, N clients (in one or two
    worker processes) connect, warm up and read for the window. Reported: latency p50/p99
    pooled over every client's samples, ``delivered_fraction`` (the ledger's delivered /
    (delivered + lost) over all clients), ``server_cpu_percent`` over the window, and
    ``server_rss_bytes_per_connection`` = (server RSS with N clients - RSS just before they
    connected) / N. Delivery is checked first: any loss, duplicate, reorder, disconnect or
    client that never connected clears ``delivery_ok``.
    """

    name = "fanout"
    kind = "steady"

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = ctx.profile.fanout
        records = []
        async with ctx.server(fp.rate_hz) as server:
            for n in fp.clients:
                ctx.note(f"{n} clients")
                rss_idle = server.rss()
                shares = split_clients(n, fp)
                workers = [
                    ctx.clients(
                        ctx.job(
                            server.port,
                            (ClientGroup(share),),
                            warmup_s=fp.warmup_s,
                            duration_s=fp.duration_s,
                            connect_timeout_s=60.0,
                            server_pid=server.pid if i == 0 else None,
                        )
                    )
                    for i, share in enumerate(shares)
                ]
                async with contextlib.AsyncExitStack() as stack:
                    for w in workers:
                        await stack.enter_async_context(w)
                    results = await asyncio.gather(*(w.result() for w in workers))
                clients = [c for r in results for c in r["clients"]]
                merged = {**results[0], "clients": clients}
                metrics: dict[str, Any] = delivery_metrics(merged)
                metrics["clients"] = n
                latencies = pooled_latencies(clients)
                metrics.update(latency_summary(latencies))
                delivered, lost = metrics["delivered"], metrics["lost"]
                metrics["delivered_fraction"] = (
                    delivered / (delivered + lost) if delivered + lost else 0.0
                )
                seconds = window_s(results[0])
                metrics["window_s"] = seconds
                expected = n * fp.rate_hz * seconds
                metrics["received_in_window_fraction"] = (
                    metrics["received_in_window"] / expected if expected else None
                )
                probe = results[0]["server"]
                if probe is not None and seconds > 0:
                    metrics["server_cpu_percent"] = 100.0 * probe["cpu_s"] / seconds
                    metrics["server_rss_bytes"] = probe["rss_end"]
                    metrics["server_rss_idle_bytes"] = rss_idle
                    metrics["server_rss_bytes_per_connection"] = (probe["rss_end"] - rss_idle) / n
                metrics["client_cpu_s"] = sum(r["cpu_s"]["window"] for r in results)
                metrics["workers"] = len(shares)
                params = {
                    "clients": n,
                    "rate_hz": fp.rate_hz,
                    "duration_s": fp.duration_s,
                    "warmup_s": fp.warmup_s,
                    "workers": len(shares),
                }
                record = ctx.record(params, metrics)
                record["series"] = {"latency_cdf_ms": cdf_points(latencies)}
                records.append(record)
        return records


FANOUT = Fanout()
