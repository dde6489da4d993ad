"""The bad-input scenario's generic cases for a transport over UDP (QUIC), same shapes.

:mod:`experiments.scenarios.bad_input` runs idle bursts, a dripped request head, peers that
never read, and two cases on servers of their own, all on TCP sockets. A QUIC server has no
socket per peer, so each case here is its QUIC counterpart, returning what its TCP twin
returns (the answer text, and for the own-server cases the same figures):

- idle connections: QUIC handshakes that send no CONNECT, held open;
- a newcomer among them: a real session must still open;
- the dripped head: a request head in HTTP/3 is one frame, not bytes to drip, so the case is
  a handshake followed by nothing: the server must close it at the header timeout;
- peers that never read: sessions of the transport's own client, never iterated (its
  flow-control window then fills and the server must cut them, as a TCP server cuts a
  reader whose socket buffer filled);
- at the limit: idle connections do not count (sessions do), so the newcomer among them is
  served; past the limit of sessions a newcomer gets 503;
- out of descriptors: idle QUIC connections cost the server no descriptor (one UDP socket for
  all), so the server must stay calm and serve a new client at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from experiments.faults.hostile import Target, is_refusal
from experiments.faults.quic_peers import (
    HANDSHAKES_AT_ONCE,
    connect_request,
    h3_exchange,
    idle_connections,
)
from experiments.results import Scalar
from experiments.run.processes import ServerProcess
from model.errors import StreamError
from transports.contract import Transport
from transports.settings import Settings

#: Longest wait for one idle peer's handshake (a loaded host makes them slow).
HANDSHAKE_S = 5.0

__all__ = [
    "at_the_limit",
    "idle_burst",
    "newcomer_among_idle",
    "non_readers",
    "out_of_descriptors",
    "unanswered_connection",
]


@asynccontextmanager
async def _idle(t: Target, count: int, timeout_s: float) -> AsyncIterator[tuple[int, int]]:
    """``count`` idle QUIC connections for the block: (opened, failed)."""
    stacks, failed = await idle_connections(t.host, t.port, count, timeout_s)
    try:
        yield len(stacks), failed
    finally:
        await asyncio.gather(*(stack.aclose() for stack in stacks))


@asynccontextmanager
async def _sessions(
    t: Target, transport: Transport, settings: Settings, count: int
) -> AsyncIterator[int]:
    """``count`` sessions of the transport's own client, opened at once and never read, for
    the block: how many opened."""
    slots = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    patient = settings.with_changes(connect_timeout_s=max(settings.connect_timeout_s, 15.0))
    async with contextlib.AsyncExitStack() as stack:

        async def one() -> bool:
            async with slots:
                try:
                    await stack.enter_async_context(
                        transport.connect(t.host, t.port, None, patient, transport.options)
                    )
                except (StreamError, OSError, TimeoutError):
                    return False
            return True

        opened = await asyncio.gather(*(one() for _ in range(count)))
        yield sum(opened)


async def _session(t: Target, timeout_s: float) -> str:
    """A newcomer's CONNECT (its handshake given the time a loaded host needs)."""
    headers = connect_request(t.host, t.port, t.path, b"webtransport")
    return await h3_exchange(t.host, t.port, headers, max(timeout_s, HANDSHAKE_S))


async def idle_burst(t: Target, count: int, hold_s: float) -> str:
    async with _idle(t, count, max(hold_s, HANDSHAKE_S)) as (opened, failed):
        await asyncio.sleep(hold_s)  # an idle peer must not cost more than its state
    return f"{opened} QUIC connections without a CONNECT ({failed} failed), held {hold_s:g} s"


async def newcomer_among_idle(t: Target, idle: int, timeout_s: float) -> str:
    async with _idle(t, idle, max(timeout_s, HANDSHAKE_S)) as (opened, _):
        got = await _session(t, timeout_s)
    return f"newcomer among {opened} idle QUIC connections: {got}"


async def unanswered_connection(t: Target, header_timeout_s: float) -> str:
    """A handshake, then no request: how long until the server closes it."""
    started = time.monotonic()
    got = await h3_exchange(t.host, t.port, (), header_timeout_s + 3.0)
    return f"{got} after {time.monotonic() - started:.1f} s"


async def non_readers(
    server: ServerProcess,
    t: Target,
    transport: Transport,
    settings: Settings,
    count: int,
    watch_s: float,
) -> tuple[str, float]:
    """Sessions that never read: the server's RSS growth at its peak, per peer."""
    before = peak = server.rss()
    async with _sessions(t, transport, settings, count):
        loop = asyncio.get_running_loop()
        until = loop.time() + watch_s
        while loop.time() < until:
            peak = max(peak, server.rss())
            await asyncio.sleep(0.05)
    per_peer = (peak - before) / count
    text = (
        f"{count} sessions never read: server RSS {before / 1e6:.0f} -> peak {peak / 1e6:.0f} MB "
        f"({per_peer / 1e3:.0f} kB per peer)"
    )
    return text, per_peer


async def at_the_limit(
    transport: Transport,
    settings: Settings,
    limit: int,
    timeout_s: float,
    server: ServerProcess,
    t: Target,
) -> tuple[str, dict[str, Scalar], bool]:
    """Idle connections filling the limit, then a newcomer; sessions filling it, then one
    more, which must get 503."""
    async with _idle(t, limit - 1, max(timeout_s, HANDSHAKE_S)) as (opened, failed):
        among_idle = await _session(t, timeout_s)
    async with _sessions(t, transport, settings, limit - 1) as sessions:
        past = await _session(t, timeout_s)
    idle_refused, refused = is_refusal(among_idle), is_refusal(past)
    text = (
        f"{opened} idle QUIC connections{f' ({failed} failed)' if failed else ''} + the normal "
        f"client: newcomer {'refused' if idle_refused else 'not refused'} ({among_idle}); "
        f"{sessions} sessions + the normal client: newcomer past the limit "
        f"{'refused' if refused else 'NOT refused'} ({past})"
    )
    return (
        text,
        {"limit_idle_newcomer_refused": idle_refused, "limit_newcomer_refused": refused},
        True,
    )


async def out_of_descriptors(
    transport: Transport,
    settings: Settings,
    idle: int,
    watch_s: float,
    within_s: float,
    timeout_s: float,
    server: ServerProcess,
    t: Target,
) -> tuple[str, dict[str, Scalar], bool]:
    """Idle QUIC connections on a server with few descriptors: its CPU and log meanwhile,
    and how soon a new client gets a sample once they are gone."""
    log_from = server.stderr_bytes()
    async with _idle(t, idle, max(timeout_s, HANDSHAKE_S)) as (opened, failed):
        loop = asyncio.get_running_loop()
        cpu_from, watch_from = server.cpu_s(), loop.time()
        await asyncio.sleep(watch_s)
        cpu = 100 * (server.cpu_s() - cpu_from) / (loop.time() - watch_from)
    served_s = await _served_again(transport, t, settings, within_s)
    log = server.stderr_since(log_from)
    lines = log.count(b"\n")
    served = (
        f"served again after {served_s:.1f} s"
        if served_s is not None
        else f"NOT served again within {within_s:g} s"
    )
    text = (
        f"{opened} idle QUIC connections{f' ({failed} failed)' if failed else ''} (one UDP "
        f"socket for all: no descriptor each): cpu {cpu:.0f}% over {watch_s:g} s, {lines} log "
        f"line{'' if lines == 1 else 's'} ({len(log)} bytes), {served}"
    )
    figures: dict[str, Scalar] = {
        "fd_exhaustion_server_cpu_percent": round(cpu, 1),
        "fd_exhaustion_stderr_bytes": len(log),
        "fd_exhaustion_log_lines": lines,
        "fd_exhaustion_server_fds": None,
        "fd_exhaustion_served_again_s": None if served_s is None else round(served_s, 3),
    }
    return text, figures, served_s is not None


async def _served_again(
    transport: Transport, t: Target, settings: Settings, within_s: float
) -> float | None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + within_s
    while loop.time() < deadline:
        try:
            async with (
                asyncio.timeout(deadline - loop.time()),
                transport.connect(t.host, t.port, None, settings, transport.options) as samples,
            ):
                await anext(aiter(samples))
            return loop.time() - started
        except TimeoutError:
            return None
        except (StreamError, OSError):
            await asyncio.sleep(0.05)
    return None
