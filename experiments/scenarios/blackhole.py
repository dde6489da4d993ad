"""The ``blackhole`` scenario."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from experiments.context import RunContext
from experiments.fault_figures import FaultWindow, summarize
from experiments.fault_profiles import FaultProfile, fault_profile
from experiments.proxy import FaultProxy
from experiments.scenarios.fault_common import (
    Proxies,
    fault_metrics,
    heartbeat_params,
    now_ns,
    proxied_groups,
    target_s,
    timeline,
    wait_flowing,
)

__all__ = ["BLACKHOLE", "Blackhole", "dropped_both_sides"]

SIDES = ("upstream", "downstream")


def dropped_both_sides(proxy: FaultProxy, connections: frozenset[int]) -> bool:
    """Whether server and client both closed every one of ``connections``."""
    closed = {(c.connection, c.side) for c in proxy.peer_closes if c.connection in connections}
    return all((n, side) in closed for n in connections for side in SIDES)


class Blackhole:
    """The network silently drops everything for a while, then comes back.

    Each faulted connection goes through its own fault proxy; the holes start staggered over
    one heartbeat interval, so each meets the heartbeat timers at a different phase. A hole
    forwards nothing and closes nothing (no FIN, no RST; what a peer sends is read and
    discarded, and a close is held back). It is healed once both the client and the server
    dropped the connection (seen by the proxy), or at the target (heartbeat + dead-after + 1 s)
    plus a grace, at most ``blackhole_max_hold_s``. Per fault: time until the client noticed
    (its ``disconnected`` event, counted only before the heal), time until the server dropped
    the dead connection (``server_drop_s``, from the proxy), time from the heal to the first
    sample received again, and the ledger over the whole run (lost, duplicated, reordered,
    posterior error). The heartbeat settings in force are in the record's params.
    """

    name = "blackhole"
    kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = fault_profile(ctx.profile.name)
        settings = ctx.effective_settings
        target = target_s(settings)
        hold_s = fp.blackhole_max_hold_s
        if target is not None:
            hold_s = min(hold_s, target + fp.blackhole_grace_s)
        stagger_s = (settings.heartbeat_s or 1.0) / fp.blackhole_connections
        k = fp.blackhole_connections
        windows: list[list[FaultWindow]] = [[] for _ in range(k)]
        server_drops: list[float | None] = []
        recovered = 0
        async with ctx.server(fp.rate_hz) as server, Proxies(server.port, k) as proxies:
            job = ctx.job(
                server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False
            )
            origin = now_ns()
            async with ctx.clients(job) as worker:
                await worker.wait_ready()
                for round_ in range(fp.blackhole_rounds):
                    ctx.note(f"black hole {round_ + 1}/{fp.blackhole_rounds}, ≤{hold_s:g} s")
                    holes = [
                        self._hole(proxy, index * stagger_s, hold_s, fp)
                        for index, proxy in enumerate(proxies.items)
                    ]
                    for index, (window, drop_s, flowing) in enumerate(await asyncio.gather(*holes)):
                        windows[index].append(window)
                        server_drops.append(drop_s)
                        recovered += flowing
                await asyncio.sleep(fp.settle_s)
                result = await worker.stop()
        metrics, observations = fault_metrics(ctx, result, windows)
        metrics.update(summarize("server_drop_s", server_drops))
        detects = [o.detect_s for per_client in observations for o in per_client]
        if target is not None:
            metrics["detect_within_target"] = sum(d is not None and d <= target for d in detects)
            metrics["server_drop_within_target"] = sum(
                d is not None and d <= target for d in server_drops
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
            "rate_hz": fp.rate_hz,
            "rounds": fp.blackhole_rounds,
            "connections": k,
            "hold_max_s": hold_s,
            **heartbeat_params(ctx),
        }
        record = ctx.record(params, metrics)
        record["timeline"] = timeline(result, windows, origin)
        record["observations"] = [
            {"detect_s": o.detect_s, "reconnect_s": o.reconnect_s}
            for per_client in observations
            for o in per_client
        ]
        record["server_drops_s"] = server_drops
        return [record]

    @staticmethod
    async def _hole(
        proxy: FaultProxy, delay_s: float, hold_s: float, fp: FaultProfile
    ) -> tuple[FaultWindow, float | None, bool]:
        """One hole on one proxy: its window, the server's drop time, whether data came back."""
        await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s)
        await asyncio.sleep(fp.settle_s + delay_s)  # stream first; stagger the phases
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
        drop_s = (min(drops) - start) / 1e9 if drops else None
        flowing = await wait_flowing(proxy, mark, fp.recover_timeout_s)
        return FaultWindow(start, healed, detect_until_ns=healed), drop_s, flowing


BLACKHOLE = Blackhole()
