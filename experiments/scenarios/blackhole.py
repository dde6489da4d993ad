"""The ``blackhole`` scenario: the network silently drops everything, then comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.faults.proxy import FaultProxy
from experiments.faults.rounds import (
    PACE,
    FaultPace,
    FaultScenario,
    Proxies,
    fault_outcome,
    keepalive_params,
    now_ns,
    proxied_groups,
    target_s,
    wait_flowing,
)
from experiments.faults.udp_relay import require_tcp
from experiments.faults.windows import FaultWindow
from experiments.results import Record
from experiments.run.context import RunContext
from experiments.scenarios.scenario import Column

__all__ = ["BLACKHOLE", "Blackhole", "BlackholeKnobs", "dropped_both_sides"]

SIDES = ("upstream", "downstream")


@dataclass(frozen=True, slots=True)
class BlackholeKnobs:
    pace: FaultPace
    rounds: int
    #: Connections faulted at once, each through its own proxy, holes staggered across a
    #: heartbeat interval so their phases differ.
    connections: int
    #: A hole is healed once the client and the server both dropped the connection, or at the
    #: target (heartbeat + dead-after + 1 s) plus this grace, or at ``max_hold_s``.
    grace_s: float
    max_hold_s: float


def dropped_both_sides(proxy: FaultProxy, connections: frozenset[int]) -> bool:
    """Whether server and client both closed every one of ``connections``."""
    closed = {(c.connection, c.side) for c in proxy.peer_closes if c.connection in connections}
    return all((n, side) in closed for n in connections for side in SIDES)


class Blackhole(FaultScenario):
    """The network silently drops everything for a while, then comes back.

    Each faulted connection goes through its own fault proxy; the holes start staggered over
    one heartbeat interval, so each meets the heartbeat timers at a different phase. A hole
    forwards nothing and closes nothing (no FIN, no RST; what a peer sends is read and
    discarded, and a close is held back). It is healed once both the client and the server
    dropped the connection (seen by the proxy), or at the target (heartbeat + dead-after + 1 s)
    plus a grace, at most ``max_hold_s``. Per fault: time until the client noticed (its
    ``disconnected`` event, counted only before the heal), time until the server dropped the
    dead connection (``server_drop_s``, from the proxy), time from the heal to the first
    sample received again, and the ledger over the whole run (lost, duplicated, reordered,
    posterior error). The keepalive settings in force are in the record's params.
    """

    name = "blackhole"
    knobs: Mapping[str, BlackholeKnobs] = {
        "quick": BlackholeKnobs(PACE["quick"], 1, connections=2, grace_s=0.0, max_hold_s=7.0),
        "default": BlackholeKnobs(
            PACE["default"], 1, connections=6, grace_s=2.0, max_hold_s=30.0
        ),
        "full": BlackholeKnobs(PACE["full"], 1, connections=5, grace_s=6.0, max_hold_s=45.0),
    }
    columns = (
        *FaultScenario.columns[:3],
        Column("server_drop_s_median", "server drop s (median)"),
        Column("server_drop_s_max", "server drop s (max)"),
        *FaultScenario.columns[3:],
    )
    headline = (
        *FaultScenario.headline[:2],
        Column("server_drop_s_median", "server drop s"),
        *FaultScenario.headline[2:],
    )

    async def run(self, ctx: RunContext) -> list[Record]:
        require_tcp(ctx.transport, "a relay cannot see a UDP server drop its peer")
        k = self.knobs[ctx.profile.name]
        settings = ctx.effective_settings
        target = target_s(settings)
        hold_s = k.max_hold_s if target is None else min(k.max_hold_s, target + k.grace_s)
        stagger_s = (settings.heartbeat_s or 1.0) / k.connections
        windows: list[list[FaultWindow]] = [[] for _ in range(k.connections)]
        recovered = 0
        async with ctx.server(k.pace.rate_hz) as server, Proxies(
            ctx, server, k.connections
        ) as proxies:
            job = ctx.job(
                server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False
            )
            async with ctx.clients(job) as worker:
                await worker.wait_ready()
                for round_ in range(k.rounds):
                    ctx.note(f"black hole {round_ + 1}/{k.rounds}, ≤{hold_s:g} s")
                    holes = [
                        self._hole(proxy, index * stagger_s, hold_s, k.pace)
                        for index, proxy in enumerate(proxies.items)
                    ]
                    for index, (window, flowing) in enumerate(await asyncio.gather(*holes)):
                        windows[index].append(window)
                        recovered += flowing
                await asyncio.sleep(k.pace.settle_s)
                result = await worker.stop()
        out = fault_outcome(ctx, result, windows, k.pace.rate_hz, sees_server_drop=True)
        metrics = out.metrics
        if target is not None:
            metrics["detect_within_target"] = sum(
                o.detect_s is not None and o.detect_s <= target for o in out.observations
            )
            metrics["server_drop_within_target"] = sum(
                o.server_drop_s is not None and o.server_drop_s <= target
                for o in out.observations
            )
        metrics["recovered"] = recovered
        # A hole held ``hold_s`` at most: what was not noticed by then is said so, not capped.
        for key, label in (("detect_s", "client"), ("server_drop_s", "server")):
            if metrics.get(f"{key}_missed"):
                metrics[f"{key}_note"] = (
                    f"{label}: {metrics[f'{key}_missed']} of {metrics['faults']} "
                    f"not detected within {hold_s:g} s"
                )
        params = {
            "rate_hz": k.pace.rate_hz,
            "rounds": k.rounds,
            "connections": k.connections,
            "hold_max_s": hold_s,
            **keepalive_params(ctx),
        }
        return [ctx.record(params, metrics, observations=out.observations, traces=out.traces)]

    @staticmethod
    async def _hole(
        proxy: FaultProxy, delay_s: float, hold_s: float, pace: FaultPace
    ) -> tuple[FaultWindow, bool]:
        """One hole on one proxy: its window, and whether data came back after the heal."""
        await wait_flowing(proxy, proxy.forwarded_bytes, pace.recover_timeout_s)
        await asyncio.sleep(pace.settle_s + delay_s)  # stream first; stagger the phases
        connections = proxy.connection_ids
        start = now_ns()
        proxy.blackhole()
        # When the hold runs out, whatever was not noticed by then is reported as missed.
        with contextlib.suppress(TimeoutError):
            await proxy.wait_until(lambda: dropped_both_sides(proxy, connections), hold_s)
        mark = proxy.forwarded_bytes
        proxy.heal()
        healed = now_ns()
        drops = [
            c.at_ns
            for c in proxy.peer_closes
            if c.side == "upstream" and c.connection in connections and start <= c.at_ns <= healed
        ]
        flowing = await wait_flowing(proxy, mark, pace.recover_timeout_s)
        window = FaultWindow(
            start, healed, detect_until_ns=healed, server_drop_ns=min(drops) if drops else None
        )
        return window, flowing


BLACKHOLE = Blackhole()
