"""What the restart, reset and black-hole scenarios share.

- :func:`heartbeat_params`: the dead-peer settings in force for a transport (for tornado also
  the ping interval, the effective ping timeout and tornado's hard-coded 5 s close wait);
- :func:`target_s`: the detection figure to reach, heartbeat + dead-after + 1 s;
- :class:`Proxies`: K fault proxies in front of one server, one per client;
- :func:`wait_flowing`: wait (bounded) until a proxy forwards server data again;
- :func:`run_rounds`: one client through one proxy, a fault injected per round once samples
  flow (restart and reset differ only in the fault);
- :func:`fault_metrics`: the design's metric keys from a worker result and the faults injected;
- :func:`timeline`: samples received per bin per client, with the fault windows, for the plots;
- :func:`rounds_record`: the record of a :func:`run_rounds` run, timeline and observations.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from experiments.context import RunContext
from experiments.fault_figures import FaultObservation, FaultWindow, observe, summarize
from experiments.fault_profiles import fault_profile
from experiments.harness import ServerProcess
from experiments.jobs import ClientGroup
from experiments.proxy import FaultProxy
from experiments.stats import delivery_totals
from transports.settings import Settings
from transports.tornado_ws import ping_timeout

__all__ = [
    "TIMELINE_BIN_S",
    "TORNADO_CLOSE_WAIT_S",
    "Proxies",
    "Rounds",
    "fault_metrics",
    "heartbeat_params",
    "is_tornado",
    "now_ns",
    "proxied_groups",
    "rounds_record",
    "run_rounds",
    "target_s",
    "timeline",
    "wait_flowing",
]

#: tornado.websocket.WebSocketProtocol13.close(): after sending its close frame tornado waits
#: ``io_loop.time() + 5`` for the peer's before aborting (a literal, not configurable).
TORNADO_CLOSE_WAIT_S = 5.0
#: Width of one bin of the timeline plots.
TIMELINE_BIN_S = 0.1

now_ns = time.monotonic_ns


def is_tornado(ctx: RunContext) -> bool:
    return "transports.tornado_ws" in ctx.transport.modules


def target_s(settings: Settings) -> float | None:
    """Heartbeat + dead-after + 1 s: when a black hole should be noticed on both sides."""
    if not settings.heartbeat_s or settings.dead_after_s is None:
        return None
    return settings.heartbeat_s + settings.dead_after_s + 1.0


def heartbeat_params(ctx: RunContext) -> dict[str, Any]:
    """The dead-peer and reconnect settings this transport ran the fault with."""
    s = ctx.effective_settings
    out: dict[str, Any] = {
        "heartbeat_s": s.heartbeat_s,
        "dead_after_s": s.dead_after_s,
        "backoff_base_s": s.backoff_base_s,
        "backoff_cap_s": s.backoff_cap_s,
        "backoff_jitter": s.backoff_jitter,
        "resume": s.resume,
        "has_heartbeat": ctx.transport.features.heartbeat,
        "target_s": target_s(s),
    }
    if is_tornado(ctx):
        out["ws_ping_interval_s"] = s.heartbeat_s
        out["ws_ping_timeout_s"] = ping_timeout(s)
        out["tornado_close_wait_s"] = TORNADO_CLOSE_WAIT_S
    return out


class Proxies:
    """``count`` fault proxies in front of one server (an async context manager)."""

    def __init__(self, upstream_port: int, count: int) -> None:
        self.items = [FaultProxy("127.0.0.1", upstream_port) for _ in range(count)]
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
        ClientGroup(1, base.role, base.read_rate_hz, port=proxy.port) for proxy in proxies.items
    )


async def wait_flowing(proxy: FaultProxy, after_bytes: int, timeout_s: float) -> bool:
    """Wait until the proxy forwarded server data beyond ``after_bytes``; False on timeout."""
    try:
        await proxy.wait_until(lambda: proxy.forwarded_bytes > after_bytes, timeout_s)
    except TimeoutError:
        return False
    return True


def _delivery(ctx: RunContext, clients: Sequence[dict[str, Any]]) -> dict[str, Any]:
    totals = delivery_totals(clients)
    errors = [c["posterior_error"] for c in clients]
    # A posterior counts each (epoch, seq) once: alpha + beta above the truth by more than the
    # lost samples would mean a sample counted twice.
    counted_twice = sum(
        max(0, round(e["alpha_error"] + e["beta_error"]) + c["counts"]["lost"])
        for e, c in zip(errors, clients, strict=True)
    )
    problems = []
    for key in ("corrupted", "reordered"):
        if totals[key]:
            problems.append(f"{totals[key]} {key}")
    if counted_twice:
        problems.append(f"posterior counted {counted_twice} samples twice")
    if ctx.transport.features.resume:
        for key in ("lost", "duplicated"):
            if totals[key]:
                problems.append(f"{totals[key]} {key} (the transport resumes)")
    died = [c["error"] for c in clients if c["error"]]
    if died:
        problems.append(f"{len(died)} client errors (first: {died[0]})")
    return {
        "lost": totals["lost"],
        "duplicated": totals["duplicated"],
        "reordered": totals["reordered"],
        "corrupted": totals["corrupted"],
        "delivered": totals["delivered"],
        "posterior_mean_error": max((e["mean_error"] for e in errors), default=0.0),
        "posterior_counted_twice": counted_twice,
        "delivery_ok": not problems,
        "delivery_problems": "; ".join(problems),
    }


def fault_metrics(
    ctx: RunContext,
    result: dict[str, Any],
    windows: Sequence[Sequence[FaultWindow]],
) -> tuple[dict[str, Any], list[list[FaultObservation]]]:
    """The design's metric keys; ``windows[i]`` are the faults client ``i`` went through."""
    clients = result["clients"]
    observations = [
        [observe(client, w) for w in client_windows]
        for client, client_windows in zip(clients, windows, strict=True)
    ]
    flat = [o for per_client in observations for o in per_client]
    metrics: dict[str, Any] = {"faults": sum(len(w) for w in windows)}
    for name, values in (
        ("detect_s", [o.detect_s for o in flat]),
        ("reconnect_s", [o.reconnect_s for o in flat]),
    ):
        metrics.update(summarize(name, values))
    metrics.update(_delivery(ctx, clients))
    metrics["disconnects"] = sum(
        1 for c in clients for e in c["events"] if e["type"] == "disconnected"
    )
    return metrics, observations


def timeline(
    result: dict[str, Any], windows: Sequence[Sequence[FaultWindow]], origin_ns: int
) -> dict[str, Any]:
    """Samples received per ``TIMELINE_BIN_S`` per client, and the fault windows, in seconds
    from ``origin_ns`` (what the report's timeline plots draw)."""
    clients = result["clients"]
    end_ns = max(
        (s[0] for c in clients for s in c["samples"]),
        default=origin_ns,
    )
    bins = max(1, math.ceil((end_ns - origin_ns) / 1e9 / TIMELINE_BIN_S) + 1)
    counts: list[list[int]] = []
    for c in clients:
        row = [0] * bins
        for s in c["samples"]:
            index = int((s[0] - origin_ns) / 1e9 / TIMELINE_BIN_S)
            if 0 <= index < bins:
                row[index] += 1
        counts.append(row)
    return {
        "bin_s": TIMELINE_BIN_S,
        "counts": counts,
        "faults": [
            [[(w.start_ns - origin_ns) / 1e9, (w.end_ns - origin_ns) / 1e9] for w in ws]
            for ws in windows
        ],
        "epochs": [c["epochs"] for c in clients],
    }


@dataclass(frozen=True, slots=True)
class Rounds:
    """What :func:`run_rounds` leaves: the worker's result and one window per fault."""

    result: dict[str, Any]
    windows: list[FaultWindow]
    #: Faults after which server data flowed again within the recovery timeout.
    recovered: int
    origin_ns: int


#: Injects one fault and returns its window (it may restart the server, reset the proxy...).
Inject = Callable[[ServerProcess, FaultProxy], Awaitable[FaultWindow]]


async def run_rounds(ctx: RunContext, rounds: int, inject: Inject) -> Rounds:
    """One client reads through one proxy; ``rounds`` times, once samples flow and have run
    for ``settle_s``, ``inject`` a fault and wait (bounded) for data to flow again."""
    fp = fault_profile(ctx.profile.name)
    windows: list[FaultWindow] = []
    recovered = 0
    async with ctx.server(fp.rate_hz) as server, Proxies(server.port, 1) as proxies:
        proxy = proxies.items[0]
        job = ctx.job(server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False)
        origin = now_ns()
        async with ctx.clients(job) as worker:
            await worker.wait_ready()
            for round_ in range(rounds):
                ctx.note(f"{ctx.scenario} {round_ + 1}/{rounds}")
                await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s)
                await asyncio.sleep(fp.settle_s)  # the stream runs before the fault
                windows.append(await inject(server, proxy))
                if await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s):
                    recovered += 1
            await asyncio.sleep(fp.settle_s)
            result = await worker.stop()
    return Rounds(result, windows, recovered, origin)


def rounds_record(
    ctx: RunContext,
    params: dict[str, Any],
    metrics: dict[str, Any],
    rounds: Rounds,
    observations: Sequence[FaultObservation],
) -> dict[str, Any]:
    """The record of a :func:`run_rounds` run, with its timeline and per-fault figures."""
    record = ctx.record(params, {**metrics, "recovered": rounds.recovered})
    record["timeline"] = timeline(rounds.result, [rounds.windows], rounds.origin_ns)
    record["observations"] = [
        {"detect_s": o.detect_s, "reconnect_s": o.reconnect_s} for o in observations
    ]
    return record
