"""The ``throughput`` scenario: saturation, beside the transport's own baseline pusher."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from experiments.baselines import baseline_of
from experiments.baselines.process import BaselineResult, measure_pusher
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import settle_teardowns
from experiments.scenarios.delivery import judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import ClientGroup

__all__ = ["THROUGHPUT", "Throughput", "ThroughputKnobs", "per_1k"]


def per_1k(seconds: float, samples: int) -> float | None:
    return 1000.0 * seconds / samples if samples else None


@dataclass(frozen=True, slots=True)
class ThroughputKnobs:
    warmup_s: float
    duration_s: float


class Throughput:
    """Saturation throughput, beside a minimal pusher on the same library.

    The server runs with ``--rate 0``: the publisher publishes as fast as the slowest reader
    takes. One client reads for the window; ``samples_per_s`` = samples received in the window
    / its length. ``server_cpu_s_per_1k`` and ``client_cpu_s_per_1k`` are each process's CPU
    seconds (user + system, psutil) per 1,000 samples; ``wire_bytes_per_sample`` is the TCP
    payload both ways on the server's sockets over the window (the kernel's counters via
    ``ss``, :mod:`experiments.worker.probe`, read by the worker at the window's edges) per
    sample; at saturation it also counts bytes that grew the socket buffers during the window
    (acknowledged, not yet read), so short windows overstate it: the ``complexity`` scenario
    measures it cleanly at a fixed rate. The transport's baseline pusher (named on its
    registry record, :mod:`experiments.baselines`) runs in the same repeat with the same
    reader work; ``overhead_fraction`` = 1 - samples_per_s / pusher_samples_per_s. The ledger
    checks delivery (nothing lost, duplicated, reordered or corrupted) before any figure is
    trusted.
    """

    name = "throughput"
    kind: Kind = "steady"
    concurrent = False
    max_repeats: int | None = None
    knobs: Mapping[str, ThroughputKnobs] = {
        "quick": ThroughputKnobs(warmup_s=0.2, duration_s=0.6),
        "default": ThroughputKnobs(warmup_s=0.2, duration_s=0.8),
        "full": ThroughputKnobs(warmup_s=2.0, duration_s=10.0),
    }
    columns = (
        Column("samples_per_s", "samples/s", ratio=True),
        Column("pusher_samples_per_s", "baseline samples/s"),
        Column("overhead_fraction", "overhead %", scale=100.0),
        Column("server_cpu_s_per_1k", "server CPU ms/1k", scale=1000.0),
        Column("client_cpu_s_per_1k", "client CPU ms/1k", scale=1000.0),
        Column("wire_bytes_per_sample", "wire B/sample"),
    )
    headline = (
        Column("samples_per_s", "samples/s"),
        Column("pusher_samples_per_s", "baseline/s"),
        Column("overhead_fraction", "overhead %", scale=100.0),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return ""

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]
        ctx.note("saturating")
        # Not kept between repeats: a saturating server with no reader left would spin
        # beside the baseline pusher measured next.
        async with ctx.server(0.0, keep=False) as server:
            result = await ctx.run_worker(
                server,
                (ClientGroup(1),),
                warmup_s=k.warmup_s,
                duration_s=k.duration_s,
                keep_latencies=False,
            )
        metrics: dict[str, Scalar] = judge(result.clients)
        got, seconds = sum(c.received_in_window for c in result.clients), result.window.seconds
        metrics["window_s"] = seconds
        metrics["samples_per_s"] = got / seconds if seconds else None
        metrics["client_cpu_s_per_1k"] = per_1k(result.cpu_window_s, got)
        if result.server is not None:
            metrics["server_cpu_s_per_1k"] = per_1k(result.server.cpu_s, got)
            wire = result.server.wire_bytes
            metrics["wire_bytes_per_sample"] = wire / got if wire is not None and got else None
        base = await self._baseline(ctx, k)
        metrics.update(baseline_metrics(base))
        rate = metrics["samples_per_s"]
        if base.samples_per_s and isinstance(rate, float):
            metrics["overhead_fraction"] = 1.0 - rate / base.samples_per_s
        params = {"rate_hz": 0, "clients": 1, "duration_s": k.duration_s, "warmup_s": k.warmup_s}
        return [ctx.record(params, metrics)]

    @staticmethod
    async def _baseline(ctx: RunContext, k: ThroughputKnobs) -> BaselineResult:
        """The transport's baseline pusher in this repeat (measured once per repeat)."""
        pusher = baseline_of(ctx.transport)
        key = (pusher.name, ctx.network_name, ctx.repeat)
        if key not in ctx.baselines:
            ctx.note(f"baseline {pusher.name}")
            await settle_teardowns()  # the transport's server is gone before the pusher runs
            ctx.baselines[key] = await measure_pusher(
                pusher,
                seed=ctx.seed,
                p=ctx.p,
                warmup_s=k.warmup_s,
                duration_s=k.duration_s,
                ready_timeout_s=ctx.profile.ready_timeout_s,
                place=ctx.place,
            )
        return ctx.baselines[key]

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return []


def baseline_metrics(base: BaselineResult) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {
        "pusher": base.pusher,
        "pusher_samples_per_s": base.samples_per_s,
        "pusher_error": base.error,
        "pusher_lost": base.counts.lost,
    }
    n = base.samples_in_window
    if base.server is not None and n:
        out["pusher_server_cpu_s_per_1k"] = per_1k(base.server.cpu_s, n)
        out["pusher_client_cpu_s_per_1k"] = per_1k(base.cpu_s, n)
        wire = base.server.wire_bytes
        if wire is not None:
            out["pusher_wire_bytes_per_sample"] = wire / n
    return out


THROUGHPUT = Throughput()
