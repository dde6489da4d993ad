"""What the restart, reset and black-hole scenarios share.

- :class:`FaultPace`: the knobs every fault scenario has (rate, settle time, recovery bound);
- :func:`target_s`: the detection figure to reach, heartbeat + dead-after + 1 s;
- :func:`keepalive_params`: the dead-peer settings in force for a transport, with the
  figures its record declares (``Transport.keepalive_params``);
- :class:`Proxies`: K fault proxies in front of one server, one per client;
- :func:`wait_flowing`: wait (bounded) until a proxy forwards server data again;
- :func:`run_rounds`: one client through one proxy, a fault injected per round once samples
  flow (restart and reset differ only in the fault);
- :func:`fault_outcome`: the design's metric keys, the per-fault observations and the
  backlog traces, from a worker result and the faults injected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from experiments.faults.proxy import FaultProxy
from experiments.faults.udp_relay import UdpFaultProxy
from experiments.faults.windows import FaultWindow, observe, summarize, trace
from experiments.report.faults import reconnection_section
from experiments.report.plots import timeline_plot
from experiments.results import FaultTrace, Observation, Results, Scalar
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess
from experiments.scenarios.delivery import Expect, judge
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.schema import ClientGroup, WorkerResult
from transports.settings import Settings

__all__ = [
    "FAULT_COLUMNS",
    "FaultPace",
    "FaultScenario",
    "Outcome",
    "Proxies",
    "Rounds",
    "fault_outcome",
    "keepalive_params",
    "now_ns",
    "proxied_groups",
    "run_rounds",
    "target_s",
    "wait_flowing",
]

now_ns = time.monotonic_ns


@dataclass(frozen=True, slots=True)
class FaultPace:
    """How fast and how patiently a fault scenario runs."""

    #: Publish rate during the fault scenarios (samples per second).
    rate_hz: float
    #: Samples flow this long before each fault and after the last recovery.
    settle_s: float
    #: Most seconds to wait for samples to flow again after a fault before giving up on it.
    recover_timeout_s: float


#: The pace of every fault scenario, per profile.
PACE: dict[str, FaultPace] = {
    "quick": FaultPace(rate_hz=100.0, settle_s=0.4, recover_timeout_s=12.0),
    "default": FaultPace(rate_hz=100.0, settle_s=0.5, recover_timeout_s=15.0),
    "full": FaultPace(rate_hz=100.0, settle_s=1.0, recover_timeout_s=20.0),
}


def target_s(settings: Settings) -> float | None:
    """Heartbeat + dead-after + 1 s: when a black hole should be noticed on both sides."""
    if not settings.heartbeat_s or settings.dead_after_s is None:
        return None
    return settings.heartbeat_s + settings.dead_after_s + 1.0


def keepalive_params(ctx: RunContext) -> dict[str, Scalar]:
    """The dead-peer and reconnect settings this transport ran the fault with."""
    s = ctx.effective_settings
    out: dict[str, Scalar] = {
        "heartbeat_s": s.heartbeat_s,
        "dead_after_s": s.dead_after_s,
        "backoff_base_s": s.backoff_base_s,
        "backoff_cap_s": s.backoff_cap_s,
        "backoff_jitter": s.backoff_jitter,
        "resume": s.resume,
        "has_heartbeat": ctx.transport.features.heartbeat,
        "target_s": target_s(s),
    }
    out.update(ctx.transport.keepalive_in_force(s))
    return out


class Proxies:
    """``count`` fault proxies in front of one server (an async context manager)."""

    def __init__(self, ctx: RunContext, server: ServerProcess, count: int) -> None:
        # On an emulated path the proxies live in the client's namespace (their sockets are
        # made there), so their upstream traffic crosses the path like the client's would.
        sockets = ctx.client_sockets()
        # A UDP transport (QUIC) gets a UDP relay with the proxy's interface instead.
        udp = ctx.transport.features.transport_protocol == "udp"
        kind = UdpFaultProxy if udp else FaultProxy
        self.items = [kind(server.host, server.port, sockets=sockets) for _ in range(count)]
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Proxies:
        for proxy in self.items:
            await proxy.start()
            self._stack.push_async_callback(proxy.stop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()


def proxied_groups(proxies: Proxies, group: ClientGroup | None = None) -> tuple[ClientGroup, ...]:
    """One client per proxy (client i goes through proxy i)."""
    base = group or ClientGroup(1)
    return tuple(
        ClientGroup(1, base.role, base.read_rate_hz, port=proxy.port, host=proxy.host)
        for proxy in proxies.items
    )


async def wait_flowing(proxy: FaultProxy, after_bytes: int, timeout_s: float) -> bool:
    """Wait until the proxy forwarded server data beyond ``after_bytes``; False on timeout."""
    try:
        await proxy.wait_until(lambda: proxy.forwarded_bytes > after_bytes, timeout_s)
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Outcome:
    metrics: dict[str, Scalar]
    observations: list[Observation]
    traces: list[FaultTrace]


def fault_outcome(
    ctx: RunContext,
    result: WorkerResult,
    windows: Sequence[Sequence[FaultWindow]],
    rate_hz: float,
    *,
    sees_server_drop: bool = False,
) -> Outcome:
    """The design's metric keys; ``windows[i]`` are the faults client ``i`` went through.
    ``sees_server_drop``: the scenario watched for the server dropping the connection."""
    clients = result.clients
    observations: list[Observation] = []
    traces: list[FaultTrace] = []
    for index, (client, client_windows) in enumerate(zip(clients, windows, strict=True)):
        for w in client_windows:
            observations.append(observe(index, client, w))
            traces.append(trace(index, client, w, rate_hz))
    metrics: dict[str, Scalar] = {"faults": sum(len(w) for w in windows)}
    metrics.update(summarize("detect_s", [o.detect_s for o in observations]))
    metrics.update(summarize("reconnect_s", [o.reconnect_s for o in observations]))
    if sees_server_drop:
        metrics.update(summarize("server_drop_s", [o.server_drop_s for o in observations]))
    expect = Expect(faults=True, resumes=ctx.transport.features.resume, window=False)
    metrics.update(judge(clients, expect))
    return Outcome(metrics, observations, traces)


@dataclass(frozen=True, slots=True)
class Rounds:
    """What :func:`run_rounds` leaves: the worker's result and one window per fault."""

    result: WorkerResult
    windows: list[FaultWindow]
    #: Faults after which server data flowed again within the recovery timeout.
    recovered: int


#: Injects one fault and returns its window (it may restart the server, reset the proxy...).
Inject = Callable[[ServerProcess, FaultProxy], Awaitable[FaultWindow]]


async def run_rounds(ctx: RunContext, pace: FaultPace, rounds: int, inject: Inject) -> Rounds:
    """One client reads through one proxy; ``rounds`` times, once samples flow and have run
    for ``settle_s``, ``inject`` a fault and wait (bounded) for data to flow again."""
    windows: list[FaultWindow] = []
    recovered = 0
    async with ctx.server(pace.rate_hz) as server, Proxies(ctx, server, 1) as proxies:
        proxy = proxies.items[0]
        job = ctx.job(server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False)
        async with ctx.clients(job) as worker:
            await worker.wait_ready()
            for round_ in range(rounds):
                ctx.note(f"{ctx.scenario} {round_ + 1}/{rounds}")
                await wait_flowing(proxy, proxy.forwarded_bytes, pace.recover_timeout_s)
                await asyncio.sleep(pace.settle_s)  # the stream runs before the fault
                windows.append(await inject(server, proxy))
                if await wait_flowing(proxy, proxy.forwarded_bytes, pace.recover_timeout_s):
                    recovered += 1
            await asyncio.sleep(pace.settle_s)
            result = await worker.stop()
    return Rounds(result, windows, recovered)


#: The table columns of every fault scenario.
FAULT_COLUMNS: tuple[Column, ...] = (
    Column("faults", "faults"),
    Column("detect_s_median", "detect s (median)"),
    Column("detect_s_max", "detect s (max)"),
    Column("reconnect_s_median", "reconnect s (median)", ratio=True),
    Column("reconnect_s_max", "reconnect s (max)"),
    Column("lost", "lost"),
    Column("duplicated", "duplicated"),
    Column("posterior_mean_error", "posterior |Δmean|"),
)


class FaultScenario:
    """What restart, reset and black hole share: kind, columns, report sections."""

    name: str
    kind: Kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True
    max_repeats: int | None = None
    columns: tuple[Column, ...] = FAULT_COLUMNS
    headline: tuple[Column, ...] = (
        Column("faults", "faults"),
        Column("detect_s_median", "detect s"),
        Column("reconnect_s_median", "reconnect s"),
        Column("lost", "lost"),
        Column("duplicated", "dup"),
    )

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return ""

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        """The backlog timelines of the first repeat, and (after the last fault scenario)
        the reconnection table over all of them."""
        firsts: dict[str, list[FaultTrace]] = {}
        for r in results.records:
            if r.scenario == self.name and not r.error and r.traces:
                firsts.setdefault(r.transport, list(r.traces))
        out = []
        if firsts:
            out.append(
                timeline_plot(firsts, out_dir / f"timeline_{self.name}.png", self.name)
            )
        present = [
            name
            for name in (
                "restart", "reset", "blackhole", "blackhole-kernel", "reset-kernel", "link-down"
            )
            if any(r.scenario == name for r in results.records)
        ]
        if present and present[-1] == self.name:
            out.append(reconnection_section(results))
        return [s for s in out if s]
