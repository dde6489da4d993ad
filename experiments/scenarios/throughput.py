"""The ``throughput`` scenario."""

from __future__ import annotations

from typing import Any

from experiments.context import RunContext
from experiments.harness import settle_teardowns
from experiments.jobs import ClientGroup
from experiments.pushers import pusher_for
from experiments.pushers.process import measure_pusher
from experiments.scenarios.common import delivery_metrics, run_worker, window_s, wire_bytes

__all__ = ["THROUGHPUT", "Throughput"]


def per_1k(seconds: float, samples: int) -> float | None:
    return 1000.0 * seconds / samples if samples else None


class Throughput:
    """Saturation throughput, beside a minimal pusher on the same library.

    The server runs with ``--rate 0``: the publisher publishes as fast as the slowest reader
    takes. One client reads for the window; ``samples_per_s`` = samples received in the window
    / its length. ``server_cpu_s_per_1k`` and ``client_cpu_s_per_1k`` are each process's CPU
    seconds (user + system, psutil) per 1,000 samples; ``wire_bytes_per_sample`` is the TCP
    payload both ways on the server's sockets over the window (the kernel's counters via
    ``ss``, :mod:`experiments.sockstats`, read by the worker at the window's edges) per
    sample; at saturation it also counts bytes that grew the socket buffers during the window
    (acknowledged, not yet read), so short windows overstate it: the ``complexity`` scenario
    measures it cleanly at a fixed rate. The library's minimal pusher
    (:mod:`experiments.pushers`, chosen by the transport's dependencies) runs in the same run
    with the same reader work;
    ``overhead_fraction`` = 1 - samples_per_s / pusher_samples_per_s. The ledger checks
    delivery (nothing lost, duplicated, reordered or corrupted) before any figure is trusted.
    """

    name = "throughput"
    kind = "steady"

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        tp = ctx.profile.throughput
        ctx.note("saturating")
        async with ctx.server(0.0) as server:
            result = await run_worker(
                ctx,
                server,
                (ClientGroup(1),),
                warmup_s=tp.warmup_s,
                duration_s=tp.duration_s,
                keep_latencies=False,
            )
        metrics: dict[str, Any] = delivery_metrics(result)
        got, seconds = metrics["received_in_window"], window_s(result)
        metrics["window_s"] = seconds
        metrics["samples_per_s"] = got / seconds if seconds else None
        metrics["client_cpu_s_per_1k"] = per_1k(result["cpu_s"]["window"], got)
        probe = result["server"]
        if probe is not None:
            metrics["server_cpu_s_per_1k"] = per_1k(probe["cpu_s"], got)
            wire = wire_bytes(probe)
            metrics["wire_bytes_per_sample"] = wire / got if wire is not None and got else None
        pusher = pusher_for(ctx.transport)
        key = f"pusher:{pusher.name}:{ctx.repeat}"
        if key not in ctx.shared:
            ctx.note(f"pusher {pusher.name}")
            await settle_teardowns()  # the transport's server is gone before the pusher runs
            ctx.shared[key] = await measure_pusher(
                pusher,
                seed=ctx.seed,
                p=ctx.p,
                warmup_s=tp.warmup_s,
                duration_s=tp.duration_s,
                ready_timeout_s=ctx.profile.ready_timeout_s,
            )
        pr = ctx.shared[key]
        pusher_rate = pr["samples_in_window"] / pr["window_s"] if pr["window_s"] else None
        metrics["pusher"] = pusher.name
        metrics["pusher_samples_per_s"] = pusher_rate
        metrics["pusher_error"] = pr["error"]
        metrics["pusher_lost"] = pr["counts"]["lost"]
        if pr["server"] is not None and pr["samples_in_window"]:
            n = pr["samples_in_window"]
            metrics["pusher_server_cpu_s_per_1k"] = per_1k(pr["server"]["cpu_s"], n)
            metrics["pusher_client_cpu_s_per_1k"] = per_1k(pr["cpu_s"], n)
            pusher_wire = wire_bytes(pr["server"])
            if pusher_wire is not None:
                metrics["pusher_wire_bytes_per_sample"] = pusher_wire / n
        if pusher_rate and metrics["samples_per_s"] is not None:
            metrics["overhead_fraction"] = 1.0 - metrics["samples_per_s"] / pusher_rate
        params = {
            "rate_hz": 0,
            "clients": 1,
            "duration_s": tp.duration_s,
            "warmup_s": tp.warmup_s,
        }
        return [ctx.record(params, metrics)]


THROUGHPUT = Throughput()
