"""The ``slow-consumer`` scenario."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from experiments.context import RunContext
from experiments.fault_profiles import fault_profile
from experiments.harness import ServerProcess
from experiments.jobs import ClientGroup
from experiments.proxy import PeerClose
from experiments.scenarios.fault_common import Proxies
from experiments.stats import latency_summary

__all__ = ["SLOW_CONSUMER", "SlowConsumer", "describe_outcome", "server_cuts"]

#: The slow-consumer scenario publishes this many times the fault scenarios' rate, so a
#: reader at a tenth of it falls behind the hub's queue bound within the phase.
RATE_FACTOR = 10
#: How often server RSS is sampled.
PROBE_EVERY_S = 0.2


def server_cuts(closes: Sequence[PeerClose]) -> list[int]:
    """When the server closed a connection the client had not closed first (a cut, not the
    server answering the client's own close at the end of the run)."""
    first: dict[int, PeerClose] = {}
    for close in closes:
        first.setdefault(close.connection, close)
    return sorted(c.at_ns for c in first.values() if c.side == "upstream")


def describe_outcome(role: str, client: dict[str, Any], cut_after_s: float | None) -> str:
    """What became of one slow or stopped client, in words."""
    if role == "stopped":
        if cut_after_s is None:
            return "stopped: still connected at the end (the server kept it, writes buffered)"
        return f"stopped: closed by the server after {cut_after_s:.1f} s"
    drops = [e for e in client["events"] if e["type"] == "disconnected"]
    lost = client["counts"]["lost"]
    if not drops:
        return f"slow: never cut (buffered), received {client['received']}, {lost} lost"
    return (
        f"slow: cut {len(drops)}x ({drops[0]['reason'][:60]}), reconnected, "
        f"{client['received']} received, {lost} lost"
    )


class SlowConsumer:
    """Beside a normal client, one client reads at a tenth of the rate and one stops reading.

    Phase 1 (steady state): one normal client alone, its p99 latency. Phase 2: a normal client,
    a slow one (``slow_read_fraction`` of the rate) and a stopped one (connects once, never
    reads; through a transparent proxy, which sees when the server closes it: the proxy adds
    its own 256 KiB pipe and a socket pair of buffering before the server feels it). Server RSS is
    sampled through both phases: the hub bounds what a subscriber may hold, so RSS should stay
    flat. Reported: ``server_rss_growth_bytes`` (highest RSS in phase 2 minus RSS when it
    began), the normal client's p99 in phase 2 against phase 1, and what became of the slow
    ones (cut by the server and resumed, or kept and buffered). Delivery to the normal client
    is checked with its ledger.
    """

    name = "slow-consumer"
    kind = "fault"

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = fault_profile(ctx.profile.name)
        rate = fp.rate_hz * RATE_FACTOR
        slow_rate = rate * fp.slow_read_fraction
        phase = fp.slow_phase_s
        rss: list[tuple[float, int]] = []
        async with ctx.server(rate) as server:
            origin = time.monotonic()
            ctx.note("steady state")
            steady_job = ctx.job(server.port, (ClientGroup(1),), warmup_s=0.3, duration_s=phase)
            steady = await self._with_probe(ctx, server, steady_job, rss, origin)
            ctx.note("slow and stopped consumers")
            rss_before = server.rss()
            phase2_from = time.monotonic() - origin
            async with Proxies(server.port, 1) as proxies:
                stopped_via = proxies.items[0]
                job = ctx.job(
                    server.port,
                    (
                        ClientGroup(1),
                        ClientGroup(1, "slow", slow_rate),
                        ClientGroup(1, "stopped", port=stopped_via.port),
                    ),
                    warmup_s=0.3,
                    duration_s=phase,
                )
                phase2_ns = time.monotonic_ns()
                loaded = await self._with_probe(ctx, server, job, rss, origin)
                cuts = server_cuts(stopped_via.peer_closes)
            alive = server.running
        normal_steady = steady["clients"][0]
        normal, slow = loaded["clients"][0], loaded["clients"][1]
        p99_steady = latency_summary(normal_steady["latencies_ns"])["latency_ms_p99"]
        p99_loaded = latency_summary(normal["latencies_ns"])["latency_ms_p99"]
        phase2_rss = [value for at, value in rss if at >= phase2_from] or [rss_before]
        stopped_cut_s = (cuts[0] - phase2_ns) / 1e9 if cuts else None
        outcomes = [
            describe_outcome("slow", slow, None),
            describe_outcome("stopped", loaded["clients"][2], stopped_cut_s),
        ]
        lost = normal["counts"]["lost"] + normal_steady["counts"]["lost"]
        problems = []
        if lost or normal["counts"]["duplicated"] or normal["counts"]["reordered"]:
            problems.append(f"normal client: {normal['counts']}")
        if any(e["type"] == "disconnected" for e in normal["events"]):
            problems.append("the normal client was disconnected")
        if not alive:
            problems.append("the server died")
        metrics: dict[str, Any] = {
            "server_rss_growth_bytes": max(phase2_rss) - rss_before,
            "server_rss_start_bytes": rss[0][1] if rss else None,
            "normal_client_latency_ms_p99": p99_loaded,
            "steady_latency_ms_p99": p99_steady,
            "normal_p99_ratio": (p99_loaded / p99_steady) if p99_loaded and p99_steady else None,
            "slow_client_outcome": "; ".join(outcomes),
            "slow_cuts": sum(1 for e in slow["events"] if e["type"] == "disconnected"),
            "slow_received": slow["received"],
            "slow_lost": slow["counts"]["lost"],
            "stopped_cut_s": stopped_cut_s,
            "normal_received": normal["received"],
            "lost": lost,
            "delivery_ok": not problems,
            "delivery_problems": "; ".join(problems),
        }
        params = {
            "rate_hz": rate,
            "slow_read_hz": slow_rate,
            "phase_s": phase,
            "queue_size": ctx.effective_settings.queue_size,
            "send_buffer_bytes": ctx.effective_settings.send_buffer_bytes,
        }
        record = ctx.record(params, metrics)
        record["rss_series"] = [[at, value] for at, value in rss]
        return [record]

    @staticmethod
    async def _with_probe(
        ctx: RunContext,
        server: ServerProcess,
        job: Any,
        rss: list[tuple[float, int]],
        origin: float,
    ) -> dict[str, Any]:
        """Run ``job`` to its end, sampling server RSS meanwhile."""
        async with ctx.clients(job) as worker:
            done = asyncio.create_task(worker.result())
            while not done.done():
                rss.append((time.monotonic() - origin, server.rss()))
                # A sampling period, not synchronisation: the job ends on its own clock.
                await asyncio.wait({done}, timeout=PROBE_EVERY_S)
            return await done


SLOW_CONSUMER = SlowConsumer()
