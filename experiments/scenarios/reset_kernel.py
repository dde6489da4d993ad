"""The ``reset-kernel`` scenario: the path answers a client's TCP packets with resets."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from experiments.faults.kernel import Drops, SocketWatch, kernel_path, kernel_rounds, path_of
from experiments.faults.rounds import (
    PACE,
    FaultPace,
    FaultScenario,
    fault_outcome,
    keepalive_params,
    now_ns,
)
from experiments.faults.udp_relay import require_tcp
from experiments.faults.windows import FaultWindow
from experiments.results import Record, Results
from experiments.run.context import RunContext
from experiments.scenarios.blackhole import Blackhole

__all__ = ["RESET_KERNEL", "ResetKernel", "ResetKernelKnobs"]


@dataclass(frozen=True, slots=True)
class ResetKernelKnobs:
    pace: FaultPace
    rounds: int
    #: The router answers the client's packets, both ways, with resets this long.
    hold_s: float


class ResetKernel(FaultScenario):
    """The path answers every TCP packet of a client, both ways, with a reset, for a while.

    One client in its own namespace of an emulated path (``lan`` on a loopback run), the
    server in the server namespace. Each round, once samples flow, nftables in the router
    rejects the client's TCP packets in both directions ``with tcp reset`` for ``hold_s``
    (connection attempts meanwhile are refused the same way), then lets them through. Each
    side gets its reset with its next packet: the server, which writes samples, at once; a
    client that only reads when it next sends something or when its read timeout fires.
    Both kernels are read every 100 ms with sock_diag; the server drop is the moment the
    server's kernel no longer holds the connection. Per fault: time until the client noticed
    (its ``disconnected`` event), until the server dropped, from the end of the resets to the
    first sample on a new connection, and the ledger over the whole run (lost, duplicated,
    reordered, posterior error), judged like every fault scenario.
    """

    name = "reset-kernel"
    knobs: Mapping[str, ResetKernelKnobs] = {
        "quick": ResetKernelKnobs(PACE["quick"], rounds=1, hold_s=1.0),
        "default": ResetKernelKnobs(PACE["default"], rounds=3, hold_s=1.0),
        "full": ResetKernelKnobs(PACE["full"], rounds=5, hold_s=1.0),
    }
    # The proxy black hole's columns: the server drop is seen here too.
    columns = Blackhole.columns
    headline = Blackhole.headline

    async def run(self, ctx: RunContext) -> list[Record]:
        require_tcp(ctx.transport, "nftables 'reject with tcp reset' has no UDP counterpart")
        k = self.knobs[ctx.profile.name]
        async with kernel_path(ctx, 1) as kctx:
            path = path_of(kctx)
            async with kctx.server(k.pace.rate_hz, keep=False) as server:
                watch = SocketWatch(path, server.port)

                async def strike() -> list[tuple[FaultWindow, bool]]:
                    await watch.wait_flowing(0, watch.acked(0), k.pace.recover_timeout_s)
                    await asyncio.sleep(k.pace.settle_s)
                    drops = Drops(watch, 0)
                    start = now_ns()
                    drops.start()
                    try:
                        await path.reset(0, k.hold_s)
                        end = now_ns()
                        mark = watch.acked(0)
                        flowing = await watch.wait_flowing(0, mark, k.pace.recover_timeout_s)
                        seen = now_ns()
                        # A server that sends nothing on the connection (polling between
                        # requests) hears of no reset: watch (bounded) for its own timers.
                        await drops.wait_both(k.pace.recover_timeout_s)
                    finally:
                        await drops.stop()
                    window = FaultWindow(
                        start, end, detect_until_ns=seen, server_drop_ns=drops.server_ns
                    )
                    return [(window, flowing)]

                try:
                    done = await kernel_rounds(
                        kctx, server, k.rounds, k.pace.settle_s,
                        lambda i: f"kernel reset {i + 1}/{k.rounds}", strike,
                    )  # fmt: skip
                finally:
                    watch.close()
            out = fault_outcome(
                kctx, done.result, done.windows, k.pace.rate_hz, sees_server_drop=True
            )
            out.metrics["recovered"] = done.recovered
            params = {
                "rate_hz": k.pace.rate_hz,
                "rounds": k.rounds,
                "hold_s": k.hold_s,
                **keepalive_params(kctx),
            }
            return [
                kctx.record(params, out.metrics, observations=out.observations, traces=out.traces)
            ]

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return [KERNEL_VS_PROXY, *super().sections(results, out_dir)]


#: Why the two resets differ; the figures are in the tables.
KERNEL_VS_PROXY = (
    "**Proxy and kernel resets differ in who hears of them, and when.** The fault proxy "
    "resets both of its sockets at once, so client and server each read a reset "
    "immediately. nftables can only answer a packet: the server, which writes samples at "
    "the publish rate, gets its reset within one sample interval; a client that only reads "
    "hears nothing until it sends something itself (a pong, a poll) or its read timeout "
    "(dead-after) fires, and its next packet after the hold meets a server kernel that no "
    "longer knows the connection and answers with a reset of its own. Client detection here "
    "is therefore bounded by the transport's client-side traffic and timers, not by the "
    "fault."
)

RESET_KERNEL = ResetKernel()
