"""The ``link-down`` scenario: a client's link loses carrier for a while, then comes back."""

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
from experiments.network import NetworkPath
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess
from experiments.scenarios.blackhole import Blackhole
from experiments.scenarios.scenario import Column
from experiments.worker.schema import ClientOutcome, Connected, Disconnected

__all__ = ["LINK_DOWN", "LinkDown", "LinkDownKnobs", "survived"]


@dataclass(frozen=True, slots=True)
class LinkDownKnobs:
    pace: FaultPace
    #: Outages per duration.
    rounds: int
    #: How long the link stays down, one record each: shorter than dead-after (the
    #: connection may ride it out on retransmissions) and longer than the target.
    down_s: tuple[float, ...]


def survived(client: ClientOutcome, window: FaultWindow) -> bool:
    """Whether the client's connection rode out the outage: no disconnect and no new
    connection between the link going down and data flowing again."""
    until = window.detect_until_ns
    return not any(
        isinstance(e, Connected | Disconnected)
        and e.at_ns >= window.start_ns
        and (until is None or e.at_ns < until)
        for e in client.events
    )


class LinkDown(FaultScenario):
    """A client's link goes down (no carrier) for ``down_s`` seconds, then comes back up.

    One client in its own namespace of an emulated path (``lan`` on a loopback run), the
    server in the server namespace. Each round, once samples flow, the router's end of the
    client's veth goes down: the client's interface loses carrier, packets both ways vanish,
    addresses and routes stay (a pulled cable). After ``down_s`` it comes back up ("up" once
    both ends are operational). TCP does not react to carrier: an outage shorter than the
    transport's timers can pass with the connection intact, its data retransmitted (the
    ``survived`` column); a longer one is a black hole that each side's timers end. Both
    kernels are read every 100 ms with sock_diag; the server drop is the moment the server's
    kernel no longer holds the connection. Per fault: time until the client noticed (its
    ``disconnected`` event, before data flowed again), until the server dropped, from the
    link being up to the first sample received after it (on the old connection or a new
    one), and the ledger over each duration's run (lost, duplicated, reordered, posterior
    error), judged like every fault scenario: a resuming transport loses nothing.
    """

    name = "link-down"
    knobs: Mapping[str, LinkDownKnobs] = {
        "quick": LinkDownKnobs(PACE["quick"], rounds=1, down_s=(3.0,)),
        # 3 s: within TCP's retransmissions; the full profile adds 1 s and 12 s.
        "default": LinkDownKnobs(PACE["default"], rounds=2, down_s=(3.0,)),
        "full": LinkDownKnobs(PACE["full"], rounds=3, down_s=(1.0, 3.0, 12.0)),
    }
    columns = (*Blackhole.columns[:-1], Column("survived", "survived (no reconnect)"),
               Blackhole.columns[-1])  # fmt: skip
    headline = (*Blackhole.headline, Column("survived", "survived"))

    def variant(self, params: Mapping[str, Scalar]) -> str:
        down = params.get("down_s")
        return f"down {down:g} s" if isinstance(down, int | float) else ""

    async def run(self, ctx: RunContext) -> list[Record]:
        # Flow, the hole's end and both drops are read from the kernel's TCP socket tables.
        require_tcp(ctx.transport, "the kernel's TCP tables, read here, hold no QUIC session")
        k = self.knobs[ctx.profile.name]
        records: list[Record] = []
        async with kernel_path(ctx, 1) as kctx:
            path = path_of(kctx)
            async with kctx.server(k.pace.rate_hz, keep=False) as server:
                watch = SocketWatch(path, server.port)
                try:
                    for down_s in k.down_s:
                        records.append(await self._outages(kctx, server, watch, path, down_s, k))
                finally:
                    watch.close()
        return records

    async def _outages(
        self, ctx: RunContext, server: ServerProcess, watch: SocketWatch, path: NetworkPath,
        down_s: float, k: LinkDownKnobs,
    ) -> Record:  # fmt: skip
        """``k.rounds`` outages of ``down_s`` with a worker of their own: one record."""

        async def strike() -> list[tuple[FaultWindow, bool]]:
            await watch.wait_flowing(0, watch.acked(0), k.pace.recover_timeout_s)
            await asyncio.sleep(k.pace.settle_s)
            drops = Drops(watch, 0)
            start = now_ns()
            try:
                await path.link_down(0)
                drops.start()
                await asyncio.sleep(down_s)
                mark = watch.acked(0)
            finally:
                # Shielded: a cancelled run must not leave the client's link down.
                await asyncio.shield(path.link_up(0))
            up = now_ns()
            try:
                flowing = await watch.wait_flowing(0, mark, k.pace.recover_timeout_s)
                seen = now_ns()
                if drops.client_ns is not None:
                    # The client gave the old connection up: watch (bounded) for the server
                    # doing the same, which may only happen once the link is up.
                    await drops.wait_both(k.pace.recover_timeout_s)
            finally:
                await drops.stop()
            return [(FaultWindow(start, up, detect_until_ns=seen, server_drop_ns=drops.server_ns),
                     flowing)]  # fmt: skip

        done = await kernel_rounds(
            ctx, server, k.rounds, k.pace.settle_s,
            lambda i: f"link down {down_s:g} s, {i + 1}/{k.rounds}", strike,
        )  # fmt: skip
        result, windows = done.result, done.windows[0]
        out = fault_outcome(ctx, result, [windows], k.pace.rate_hz, sees_server_drop=True)
        client = result.clients[0]
        out.metrics["survived"] = sum(survived(client, w) for w in windows)
        out.metrics["recovered"] = done.recovered
        params = {
            "rate_hz": k.pace.rate_hz,
            "rounds": k.rounds,
            "down_s": down_s,
            **keepalive_params(ctx),
        }
        return ctx.record(params, out.metrics, observations=out.observations, traces=out.traces)

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return [LINK_NOTE, *super().sections(results, out_dir)]


LINK_NOTE = (
    "**A link that goes down is a black hole TCP does not see.** Linux keeps the addresses "
    "and routes of an interface without carrier and TCP ignores carrier, so a short outage "
    "is bridged by retransmission (the connection survives; the first sample after the "
    "outage waits for the next retransmission, whose timer has backed off while the link "
    "was down), while an outage longer than dead-after ends the connection on each side's "
    "timers exactly as a black hole does. For a survived outage, detect and server drop are "
    "empty by design (counted as missed), and reconnect s is the time from the link being "
    "up to the first sample on the same connection."
)

LINK_DOWN = LinkDown()
