"""The ``reset`` scenario."""

from __future__ import annotations

import asyncio
from typing import Any

from experiments.context import RunContext
from experiments.fault_figures import FaultWindow
from experiments.fault_profiles import fault_profile
from experiments.scenarios.fault_common import (
    Proxies,
    fault_metrics,
    heartbeat_params,
    now_ns,
    proxied_groups,
    timeline,
    wait_flowing,
)

__all__ = ["RESET", "Reset"]


class Reset:
    """RST both sides of the connection mid-stream, through the fault proxy.

    One client reads through a fault proxy; each round, once samples flow, the proxy resets
    both sockets (SO_LINGER 0 then close: client and server each see "connection reset").
    Per fault: time until the client noticed (its ``disconnected`` event) and time until the
    first sample arrived on a new connection. A transport that resumes should lose and
    duplicate nothing (ledger over the whole run); one that does not loses what was published
    while it reconnected.
    """

    name = "reset"
    kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = fault_profile(ctx.profile.name)
        windows: list[FaultWindow] = []
        recovered = 0
        async with ctx.server(fp.rate_hz) as server, Proxies(server.port, 1) as proxies:
            proxy = proxies.items[0]
            job = ctx.job(
                server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False
            )
            origin = now_ns()
            async with ctx.clients(job) as worker:
                await worker.wait_ready()
                for round_ in range(fp.reset_rounds):
                    ctx.note(f"reset {round_ + 1}/{fp.reset_rounds}")
                    await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s)
                    await asyncio.sleep(fp.settle_s)  # the stream runs before the fault
                    at = now_ns()
                    proxy.reset_peer()
                    windows.append(FaultWindow(at, at))
                    if await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s):
                        recovered += 1
                await asyncio.sleep(fp.settle_s)
                result = await worker.stop()
        metrics, observations = fault_metrics(ctx, result, [windows])
        metrics["recovered"] = recovered
        params = {"rate_hz": fp.rate_hz, "rounds": fp.reset_rounds, **heartbeat_params(ctx)}
        record = ctx.record(params, metrics)
        record["timeline"] = timeline(result, [windows], origin)
        record["observations"] = [
            {"detect_s": o.detect_s, "reconnect_s": o.reconnect_s} for o in observations[0]
        ]
        return [record]


RESET = Reset()
