"""How far this host's monotonic clock is from the server's, and how sure that is.

Samples carry the server's ``time.monotonic_ns()``; a client on another host reads its own
clock, so a latency across hosts is ``local now + offset - sent_ns``, with ``offset`` the
server's clock minus the local one. :func:`estimate_offset` measures it NTP-style against the
server's clock endpoint (``serve --clock-port``, :mod:`transports.clock_endpoint`): it sends
its clock reading ``t0``, the server stamps the request's arrival ``s`` on its clock, the reply
arrives at ``t3``. The server read its clock at some local instant between ``t0`` and ``t3``,
so the offset lies within ``s - t3 .. s - t0``: the estimate is the middle,
``s - (t0 + t3) / 2``, and the error bound half the round trip (plus one tick of the clock,
which a read may lag the true time by). A real offset outside the bound is impossible whatever
the path's asymmetry; a short round trip makes the bound tight, so of N exchanges, one after
another, the one with the shortest round trip is kept (on one machine the offset must come out
within its bound of zero).

The offset is measured once, when a worker starts: two hosts' clocks drift apart by their rate
difference (typically a few parts per million, a few µs per second), which the bound does not
cover for a long run.

Choosing the exchange and the arithmetic are pure functions (:func:`best_exchange`,
:func:`offset_of`, :func:`bound_of`, :func:`summarise`); :func:`estimate_offset` is the socket
loop around them.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from transports.clock_endpoint import REPLY_SIZE, decode_reply, encode_request

__all__ = [
    "DEFAULT_EXCHANGES",
    "DEFAULT_TIMEOUT_S",
    "ClockOffset",
    "Exchange",
    "NoClockReply",
    "best_exchange",
    "bound_of",
    "clock_granularity_ns",
    "estimate_offset",
    "offset_of",
    "summarise",
]

DEFAULT_EXCHANGES = 32
#: Per exchange: ample for the slowest emulated path (mobile, 120 ms RTT).
DEFAULT_TIMEOUT_S = 1.0


class NoClockReply(RuntimeError):
    """The clock endpoint answered none of the exchanges (or its host does not resolve)."""


class ClockOffset(msgspec.Struct, frozen=True):
    """The server's clock minus this host's, as measured by the best of ``exchanges``."""

    #: Server clock minus local clock (ns): a latency is ``local now + offset_ns - sent_ns``.
    offset_ns: int
    #: The real offset lies within ``offset_ns ± bound_ns``: half the best round trip, plus
    #: one tick of the clock.
    bound_ns: int
    #: The best exchange's round trip (ns).
    rtt_ns: int
    #: Exchanges asked for.
    exchanges: int
    #: Exchanges answered in time.
    replies: int


@dataclass(frozen=True, slots=True)
class Exchange:
    """One probe: sent at local ``sent_ns``, stamped ``server_ns`` by the server on arrival,
    its reply received at local ``received_ns``."""

    sent_ns: int
    server_ns: int
    received_ns: int

    @property
    def rtt_ns(self) -> int:
        return self.received_ns - self.sent_ns


def best_exchange(exchanges: Sequence[Exchange]) -> Exchange:
    """The exchange with the shortest round trip (the earliest of equals); ValueError if none."""
    if not exchanges:
        raise ValueError("no exchange to choose from")
    return min(exchanges, key=lambda e: e.rtt_ns)  # min keeps the first of equal keys


def offset_of(exchange: Exchange) -> int:
    """Server clock minus local clock: the server's stamp less the middle of the round trip."""
    return exchange.server_ns - (exchange.sent_ns + exchange.received_ns) // 2


def bound_of(exchange: Exchange, granularity_ns: int) -> int:
    """How far :func:`offset_of` can be from the real offset: half the round trip, rounded up
    (the middle is rounded down, so the longer side is the ceiling), plus one clock tick."""
    return (exchange.rtt_ns + 1) // 2 + granularity_ns


def summarise(exchanges: Sequence[Exchange], asked: int, granularity_ns: int) -> ClockOffset:
    """The estimate from the answered ``exchanges`` of ``asked``; :class:`NoClockReply` if
    none was answered."""
    if not exchanges:
        raise NoClockReply(f"none of {asked} clock exchanges was answered")
    best = best_exchange(exchanges)
    return ClockOffset(
        offset_ns=offset_of(best),
        bound_ns=bound_of(best, granularity_ns),
        rtt_ns=best.rtt_ns,
        exchanges=asked,
        replies=len(exchanges),
    )


def clock_granularity_ns() -> int:
    """One tick of ``time.monotonic_ns()`` here (1 ns on Linux), at least 1."""
    return max(1, math.ceil(time.get_clock_info("monotonic").resolution * 1e9))


async def estimate_offset(
    host: str,
    port: int,
    *,
    exchanges: int = DEFAULT_EXCHANGES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sock: Callable[[], socket.socket] | None = None,
) -> ClockOffset:
    """Estimate the offset of the clock endpoint at UDP ``host``:``port`` from this host.

    ``exchanges`` probes one after another, each waiting up to ``timeout_s`` for its own reply
    (a late reply to an earlier probe, or a malformed datagram, is skipped); the best by round
    trip is kept. ``sock`` makes the UDP socket (e.g. one inside a network namespace,
    :meth:`experiments.network.path.NetworkPath.socket`); by default, one of the family
    ``host`` resolves to. Raises :class:`NoClockReply` when no probe was answered.
    """
    if exchanges < 1:
        raise ValueError(f"exchanges must be >= 1, got {exchanges}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    where = f"udp://{host}:{port}"
    udp = await _connected_socket(host, port, sock, where)
    answered: list[Exchange] = []
    failure = ""
    try:
        loop = asyncio.get_running_loop()
        for _ in range(exchanges):
            try:
                answered.append(await _exchange(loop, udp, timeout_s))
            except TimeoutError:
                failure = f"no reply within {timeout_s:g} s"
            except ConnectionRefusedError:
                failure = "refused: nothing listens on that port"
            except OSError as exc:
                failure = exc.strerror or str(exc)
    finally:
        udp.close()
    if not answered:
        raise NoClockReply(
            f"the clock endpoint {where} answered none of {exchanges} exchanges ({failure})"
        )
    return summarise(answered, exchanges, clock_granularity_ns())


async def _connected_socket(
    host: str, port: int, make: Callable[[], socket.socket] | None, where: str
) -> socket.socket:
    """A non-blocking UDP socket connected to ``host``:``port`` (the kernel then passes only
    that peer's datagrams, and reports an ICMP refusal to the next receive)."""
    loop = asyncio.get_running_loop()
    udp = make() if make is not None else None
    family = udp.family if udp is not None else socket.AF_UNSPEC
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except OSError as exc:
        if udp is not None:
            udp.close()
        raise NoClockReply(f"cannot resolve the clock endpoint {where}: {exc}") from exc
    info_family, _, _, _, address = infos[0]
    if udp is None:
        udp = socket.socket(info_family, socket.SOCK_DGRAM)
    try:
        udp.setblocking(False)
        udp.connect(address)  # UDP: sets the peer, sends nothing, never blocks
    except OSError as exc:  # no route to the host, an address of another family
        udp.close()
        raise NoClockReply(f"cannot reach the clock endpoint {where}: {exc}") from exc
    return udp


async def _exchange(
    loop: asyncio.AbstractEventLoop, udp: socket.socket, timeout_s: float
) -> Exchange:
    """One probe and its own reply, within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        sent_ns = time.monotonic_ns()
        await loop.sock_sendall(udp, encode_request(sent_ns))
        while True:
            # One byte more than a reply: a longer datagram arrives truncated and is refused.
            data = await loop.sock_recv(udp, REPLY_SIZE + 1)
            received_ns = time.monotonic_ns()
            reply = decode_reply(data)
            if reply is not None and reply[0] == sent_ns:
                return Exchange(sent_ns, reply[1], received_ns)
