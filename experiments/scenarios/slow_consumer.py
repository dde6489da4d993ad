"""The ``slow-consumer`` scenario: a slow and a stopped reader beside a normal one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from experiments.faults.proxy import PeerClose
from experiments.faults.rounds import PACE, Proxies
from experiments.histogram import merge, summarize
from experiments.report.pyplot import pyplot
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess
from experiments.scenarios.delivery import judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import (
    ClientGroup,
    ClientJob,
    ClientOutcome,
    Disconnected,
    WorkerResult,
)

__all__ = ["SLOW_CONSUMER", "SlowConsumer", "SlowConsumerKnobs", "describe_outcome", "server_cuts"]

#: How often server RSS is sampled.
PROBE_EVERY_S = 0.2


@dataclass(frozen=True, slots=True)
class SlowConsumerKnobs:
    #: Publish rate: ten times the fault scenarios' rate, so a reader at a tenth of it falls
    #: behind the hub's queue bound within the phase.
    rate_hz: float
    #: Each phase (steady state, then with the slow consumers) lasts this long.
    phase_s: float
    #: The slow consumer reads at this fraction of the publish rate.
    read_fraction: float


class Detail(msgspec.Struct, frozen=True):
    #: (seconds since the first phase began, server RSS bytes).
    rss: list[tuple[float, int]]


def server_cuts(closes: Sequence[PeerClose]) -> list[int]:
    """When the server closed a connection the client had not closed first (a cut, not the
    server answering the client's own close at the end of the run)."""
    first: dict[int, PeerClose] = {}
    for close in closes:
        first.setdefault(close.connection, close)
    return sorted(c.at_ns for c in first.values() if c.side == "upstream")


def describe_outcome(client: ClientOutcome, cut_after_s: float | None = None) -> str:
    """What became of one slow or stopped client, in words."""
    if client.role == "stopped":
        if cut_after_s is None:
            return "stopped: still connected at the end (the server kept it, writes buffered)"
        return f"stopped: closed by the server after {cut_after_s:.1f} s"
    drops = [e for e in client.events if isinstance(e, Disconnected)]
    lost = client.counts.lost
    if not drops:
        return f"slow: never cut (buffered), received {client.received}, {lost} lost"
    reason = drops[0].reason[:60]
    return (
        f"slow: cut {len(drops)}x ({reason}), reconnected, {client.received} received, {lost} lost"
    )


def _p99(result: WorkerResult) -> float | None:
    h = merge([result.latency.get("normal", "")])
    return None if h is None else summarize(h).p99_ms


class SlowConsumer:
    """Beside a normal client, one client reads at a tenth of the rate and one stops reading.

    Phase 1 (steady state): one normal client alone, its p99 latency. Phase 2: a normal client,
    a slow one (``read_fraction`` of the rate) and a stopped one (connects once, never reads;
    through a transparent proxy, which sees when the server closes it: the proxy adds its own
    256 KiB pipe and a socket pair of buffering before the server feels it). Server RSS is
    sampled through both phases: the hub bounds what a subscriber may hold, so RSS should stay
    flat. Reported: ``server_rss_growth_bytes`` (highest RSS in phase 2 minus RSS when it
    began), the normal client's p99 in phase 2 against phase 1, and what became of the slow
    ones (cut by the server and resumed, or kept and buffered). Delivery to the normal client
    is checked with its ledger.
    """

    name = "slow-consumer"
    kind: Kind = "fault"
    concurrent = False
    max_repeats: int | None = None
    knobs: Mapping[str, SlowConsumerKnobs] = {
        "quick": SlowConsumerKnobs(10 * PACE["quick"].rate_hz, phase_s=1.0, read_fraction=0.1),
        "default": SlowConsumerKnobs(10 * PACE["default"].rate_hz, phase_s=1.5, read_fraction=0.1),
        "full": SlowConsumerKnobs(10 * PACE["full"].rate_hz, phase_s=8.0, read_fraction=0.1),
    }
    columns = (
        Column("server_rss_growth_bytes", "server RSS growth MiB", scale=1 / 2**20),
        Column("steady_latency_ms_p99", "normal p99 ms, alone"),
        Column("normal_client_latency_ms_p99", "normal p99 ms, beside slow ones"),
        Column("normal_p99_ratio", "p99 ratio"),
        Column("slow_cuts", "slow client cuts"),
        Column("stopped_cut_s", "stopped client cut after s"),
    )
    headline = (
        Column("server_rss_growth_bytes", "rss growth MiB", scale=1 / 2**20),
        Column("normal_client_latency_ms_p99", "p99 ms"),
        Column("steady_latency_ms_p99", "steady p99 ms"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return ""

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]
        slow_rate = k.rate_hz * k.read_fraction
        rss: list[tuple[float, int]] = []
        async with ctx.server(k.rate_hz) as server:
            origin = time.monotonic()
            ctx.note("steady state")
            steady_job = ctx.job(server.port, (ClientGroup(1),), warmup_s=0.3, duration_s=k.phase_s)
            steady = await self._with_probe(ctx, server, steady_job, rss, origin)
            ctx.note("slow and stopped consumers")
            rss_before = server.rss()
            phase2_from = time.monotonic() - origin
            async with Proxies(ctx, server, 1) as proxies:
                stopped_via = proxies.items[0]
                job = ctx.job(
                    server.port,
                    (
                        ClientGroup(1),
                        ClientGroup(1, "slow", slow_rate),
                        ClientGroup(1, "stopped", port=stopped_via.port, host=stopped_via.host),
                    ),
                    warmup_s=0.3,
                    duration_s=k.phase_s,
                )
                phase2_ns = time.monotonic_ns()
                loaded = await self._with_probe(ctx, server, job, rss, origin)
                cuts = server_cuts(stopped_via.peer_closes)
            alive = server.running
        normal, slow, stopped = loaded.clients
        p99_steady, p99_loaded = _p99(steady), _p99(loaded)
        phase2_rss = [value for at, value in rss if at >= phase2_from] or [rss_before]
        stopped_cut_s = (cuts[0] - phase2_ns) / 1e9 if cuts else None
        delivery = judge([steady.clients[0], normal])
        problems = [str(delivery["delivery_problems"])] if not delivery["delivery_ok"] else []
        if not alive:
            problems.append("the server died")
        metrics: dict[str, Scalar] = {
            **delivery,
            "server_rss_growth_bytes": max(phase2_rss) - rss_before,
            "server_rss_start_bytes": rss[0][1] if rss else None,
            "normal_client_latency_ms_p99": p99_loaded,
            "steady_latency_ms_p99": p99_steady,
            "normal_p99_ratio": (p99_loaded / p99_steady) if p99_loaded and p99_steady else None,
            "slow_client_outcome": "; ".join(
                (describe_outcome(slow), describe_outcome(stopped, stopped_cut_s))
            ),
            "slow_cuts": slow.disconnects(),
            "slow_received": slow.received,
            "slow_lost": slow.counts.lost,
            "stopped_cut_s": stopped_cut_s,
            "normal_received": normal.received,
            "delivery_ok": not problems,
            "delivery_problems": "; ".join(problems),
        }
        params = {
            "rate_hz": k.rate_hz,
            "slow_read_hz": slow_rate,
            "phase_s": k.phase_s,
            "queue_size": ctx.effective_settings.queue_size,
            "send_buffer_bytes": ctx.effective_settings.send_buffer_bytes,
        }
        latency = {"normal": loaded.latency.get("normal", "")}
        return [ctx.record(params, metrics, latency=latency, detail=Detail(rss))]

    @staticmethod
    async def _with_probe(
        ctx: RunContext,
        server: ServerProcess,
        job: ClientJob,
        rss: list[tuple[float, int]],
        origin: float,
    ) -> WorkerResult:
        """Run ``job`` to its end, sampling server RSS meanwhile."""
        async with ctx.clients(job) as worker:
            done = asyncio.create_task(worker.result())
            while not done.done():
                rss.append((time.monotonic() - origin, server.rss()))
                # A sampling period, not synchronisation: the job ends on its own clock.
                await asyncio.wait({done}, timeout=PROBE_EVERY_S)
            return await done

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        """What became of the slow consumers, and server RSS over both phases (first repeat)."""
        firsts: dict[str, Record] = {}
        for r in results.records:
            if r.scenario == self.name and not r.error:
                firsts.setdefault(r.transport, r)
        if not firsts:
            return []
        lines = ["What became of the slow consumers (first repeat):", ""]
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 3))
        for transport, r in firsts.items():
            lines.append(f"- {transport}: {r.metrics.get('slow_client_outcome')}")
            try:
                series = msgspec.json.decode(r.detail, type=Detail | None)
            except msgspec.ValidationError:
                series = None  # a schema-1 record
            if series is not None and series.rss:
                ax.plot([s[0] for s in series.rss], [s[1] / 2**20 for s in series.rss],
                        label=transport)  # fmt: skip
        ax.set_xlabel("seconds (steady phase, then slow + stopped clients)")
        ax.set_ylabel("server RSS, MiB")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "slow_consumer_rss.png", dpi=90)
        plt.close(fig)
        return ["\n".join([*lines, "", "![server RSS](slow_consumer_rss.png)"])]


SLOW_CONSUMER = SlowConsumer()
