"""The ``blackhole-kernel`` scenario: the path drops every packet of a client, both ways."""

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
    target_s,
)
from experiments.faults.udp_relay import require_tcp
from experiments.faults.windows import FaultWindow
from experiments.network import NetworkPath
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.scenarios.blackhole import Blackhole

__all__ = [
    "BLACKHOLE_KERNEL",
    "BlackholeKernel",
    "BlackholeKernelKnobs",
    "side_by_side",
    "within_target",
]


@dataclass(frozen=True, slots=True)
class BlackholeKernelKnobs:
    pace: FaultPace
    rounds: int
    #: Clients faulted at once, each in its own client namespace (its own address, so the
    #: path drops that client only), holes staggered across a heartbeat interval.
    connections: int
    #: A hole is healed once both kernels dropped the connection, or at the target
    #: (heartbeat + dead-after + 1 s) plus this grace, or at ``max_hold_s``.
    grace_s: float
    max_hold_s: float


def within_target(
    metrics: dict[str, Scalar], detect: list[float | None], drop: list[float | None],
    target: float | None, hold_s: float,
) -> None:  # fmt: skip
    """The black-hole metrics both hole scenarios add: how many met the target, and a note
    for what the hold did not see."""
    if target is not None:
        metrics["detect_within_target"] = sum(d is not None and d <= target for d in detect)
        metrics["server_drop_within_target"] = sum(d is not None and d <= target for d in drop)
    # A hole held ``hold_s`` at most: what was not noticed by then is said so, not capped.
    for key, label in (("detect_s", "client"), ("server_drop_s", "server")):
        if metrics.get(f"{key}_missed"):
            metrics[f"{key}_note"] = (
                f"{label}: {metrics[f'{key}_missed']} of {metrics['faults']} "
                f"not detected within {hold_s:g} s"
            )


def _cell(results: Results, scenario: str, transport: str, key: str) -> str:
    values = [
        r.metric(key)
        for r in results.records
        if r.scenario == scenario and r.transport == transport and r.error is None
    ]
    seen = [float(v) for v in values if isinstance(v, int | float)]
    if not seen:
        return "—" if not values else "never"
    return f"{max(seen):.2f}"


def side_by_side(results: Results) -> str:
    """Proxy and kernel black holes per transport (max over repeats), when both ran."""
    pairs = (("blackhole", "proxy"), ("blackhole-kernel", "kernel"))
    transports = [
        t
        for t in dict.fromkeys(r.transport for r in results.records)
        if all(any(r.scenario == s and r.transport == t for r in results.records) for s, _ in pairs)
    ]
    if not transports:
        return ""
    lines = [
        "#### Proxy and kernel black holes side by side",
        "",
        "Seconds (max over faults and repeats); never = not within the hold. Each row's "
        "network is in its record (the kernel hole runs on a path of its own: `lan` on a "
        "loopback run).",
        "",
        "| transport | detect s (proxy) | detect s (kernel) | server drop s (proxy) "
        "| server drop s (kernel) | reconnect s (proxy) | reconnect s (kernel) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in transports:
        cells = [
            _cell(results, scenario, t, key)
            for key in ("detect_s_max", "server_drop_s_max", "reconnect_s_max")
            for scenario, _ in pairs
        ]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class BlackholeKernel(FaultScenario):
    """The path silently drops every packet of a client, both ways, then lets them through.

    Each faulted client runs in its own client namespace of an emulated path (``lan`` on a
    loopback run), its own worker process; the server in the server namespace. A hole is an
    nftables drop of the client's address in the router, both directions: unlike the proxy
    black hole nothing acknowledges the server's bytes, so its unacknowledged data and
    retransmissions build up as on a real network, and ``TCP_USER_TIMEOUT`` (if the server
    sets it) can fire. Holes start staggered over one heartbeat interval. Both kernels are
    read every 100 ms with sock_diag: the server drop is the moment the server's kernel no
    longer holds an established connection with that client (the application closed it, or
    the kernel aborted it). A hole is healed once both sides dropped, or at the target
    (heartbeat + dead-after + 1 s) plus a grace, at most ``max_hold_s``. Per fault: time
    until the client noticed (its ``disconnected`` event, counted only before the heal),
    until the server dropped, from the heal to the first sample received again, and the
    ledger over the whole run (lost, duplicated, reordered, posterior error), judged like
    every fault scenario. The keepalive settings in force are in the record's params.
    """

    name = "blackhole-kernel"
    knobs: Mapping[str, BlackholeKernelKnobs] = {
        "quick": BlackholeKernelKnobs(
            PACE["quick"], 1, connections=2, grace_s=1.0, max_hold_s=12.0
        ),
        "default": BlackholeKernelKnobs(
            PACE["default"], 1, connections=4, grace_s=2.0, max_hold_s=30.0
        ),
        "full": BlackholeKernelKnobs(PACE["full"], 2, connections=4, grace_s=6.0, max_hold_s=45.0),
    }
    # The proxy black hole's columns, so the two tables read side by side.
    columns = Blackhole.columns
    headline = Blackhole.headline

    async def run(self, ctx: RunContext) -> list[Record]:
        # Flow, the hole's end and both drops are read from the kernel's TCP socket tables.
        require_tcp(ctx.transport, "the kernel's TCP tables, read here, hold no QUIC session")
        k = self.knobs[ctx.profile.name]
        settings = ctx.effective_settings
        target = target_s(settings)
        hold_s = k.max_hold_s if target is None else min(k.max_hold_s, target + k.grace_s)
        stagger_s = (settings.heartbeat_s or 1.0) / k.connections
        async with kernel_path(ctx, k.connections) as kctx:
            path = path_of(kctx)
            async with kctx.server(k.pace.rate_hz, keep=False) as server:
                watch = SocketWatch(path, server.port)

                async def strike() -> list[tuple[FaultWindow, bool]]:
                    return await asyncio.gather(*(
                        self._hole(path, watch, i, i * stagger_s, hold_s, k.pace)
                        for i in range(k.connections)
                    ))  # fmt: skip

                try:
                    done = await kernel_rounds(
                        kctx, server, k.rounds, k.pace.settle_s,
                        lambda i: f"kernel black hole {i + 1}/{k.rounds}, ≤{hold_s:g} s", strike,
                    )  # fmt: skip
                finally:
                    watch.close()
            out = fault_outcome(
                kctx, done.result, done.windows, k.pace.rate_hz, sees_server_drop=True
            )
            metrics = out.metrics
            within_target(
                metrics,
                [o.detect_s for o in out.observations],
                [o.server_drop_s for o in out.observations],
                target,
                hold_s,
            )
            metrics["recovered"] = done.recovered
            params = {
                "rate_hz": k.pace.rate_hz,
                "rounds": k.rounds,
                "connections": k.connections,
                "hold_max_s": hold_s,
                **keepalive_params(kctx),
            }
            return [kctx.record(params, metrics, observations=out.observations, traces=out.traces)]

    @staticmethod
    async def _hole(
        path: NetworkPath, watch: SocketWatch, client: int, delay_s: float, hold_s: float,
        pace: FaultPace,
    ) -> tuple[FaultWindow, bool]:  # fmt: skip
        """One hole for one client: its window, and whether data came back after the heal."""
        await watch.wait_flowing(client, watch.acked(client), pace.recover_timeout_s)
        await asyncio.sleep(pace.settle_s + delay_s)  # stream first; stagger the phases
        drops = Drops(watch, client)
        start = now_ns()
        await path.blackhole(client)
        drops.start()
        try:
            # When the hold runs out, whatever was not noticed by then is reported as missed.
            await drops.wait_both(hold_s)
        finally:
            await drops.stop()
            mark = watch.acked(client)
            await path.heal(client)
        healed = now_ns()
        flowing = await watch.wait_flowing(client, mark, pace.recover_timeout_s)
        window = FaultWindow(start, healed, detect_until_ns=healed, server_drop_ns=drops.server_ns)
        return window, flowing

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        return [
            KERNEL_VS_PROXY,
            *[s for s in (side_by_side(results),) if s],
            *super().sections(results, out_dir),
        ]


#: Why the two black holes differ; the figures are in the tables.
KERNEL_VS_PROXY = (
    "**Proxy and kernel black holes differ in what the server's kernel sees.** The fault "
    "proxy is a userspace process: it keeps reading and acknowledging whatever the server "
    "sends, so the server's socket never holds unacknowledged data and `TCP_USER_TIMEOUT` "
    "cannot fire; a server that only writes (SSE) notices nothing unless its application "
    "has a timer of its own. The kernel black hole drops the packets in the router: the "
    "server's sent data stays unacknowledged, its retransmissions back off, and with "
    "`TCP_USER_TIMEOUT` = dead-after on the accepted socket its kernel aborts the connection "
    "once the oldest unacknowledged byte is dead-after old (checked when a retransmission "
    "timer fires, so up to about a second later; with samples flowing, the oldest byte is "
    "as old as the hole). A server drop measured here is the "
    "server's kernel no longer holding the connection as established; without "
    "`TCP_USER_TIMEOUT` only the application's own timers (ping timeouts) or the kernel's "
    "retransmission limit (`tcp_retries2`: about 15 minutes) end it. The client notices "
    "through its read timeout (dead-after) in both cases."
)

BLACKHOLE_KERNEL = BlackholeKernel()
