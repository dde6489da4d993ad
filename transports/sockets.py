"""The sockets of every server: how they listen, and how an accepted connection is tuned.

One helper creates every listening socket, so all transports get the same accept queue and
the same options: a fan-out or restart comparison would otherwise measure each library's
default backlog (2048, 1024, 128 and 100 before this module) rather than its protocol.
Libraries that call ``listen()`` again on a socket handed to them (asyncio, aiohttp,
uvicorn) must be given :data:`BACKLOG` too, or they would shrink the queue to their default.

A bounded send buffer is part of keeping memory bounded: the kernel would otherwise grow each
connection's buffer to ``net.ipv4.tcp_wmem``'s maximum (4 MiB here) for a client that stops
reading, and a slow client would take that long to be noticed by the hub's queue bound.

Out of file descriptors, ``accept()`` fails with EMFILE while the newcomer stays queued, so
the listener stays readable: tornado's accept loop then spins on it at full CPU, and asyncio's
(under tcp, aiohttp and uvicorn) logs a traceback per backlog slot each second. Every
listening socket is a :class:`ListeningSocket`, which instead rests the listener for
:data:`REST_S` (newcomers wait in the backlog) and logs one line per :data:`LOG_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable

from transports.limits import fd_limit
from transports.settings import Settings

__all__ = [
    "BACKLOG",
    "LOG_EVERY_S",
    "REST_S",
    "HeadDeadline",
    "ListeningSocket",
    "bound_port",
    "listening_sockets",
    "tune_accepted",
    "url_host",
]

_log = logging.getLogger(__name__)

#: Connections the kernel queues before the server accepts them, for every transport. Enough
#: for a burst of reconnecting clients after a restart; the kernel caps it at somaxconn.
BACKLOG = 1024

# A name that resolves to an address this host cannot bind (an IPv6 entry on a host without
# IPv6): skipped while another address of the same name binds.
_UNBINDABLE = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


#: accept() errors saying this process or host ran out of something, not that a peer is bad.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long a listener that ran out rests: asyncio's own retry delay (ACCEPT_RETRY_DELAY),
#: which the asyncio-based servers keep, so every transport rests alike.
REST_S = 1.0
#: At most one log line per this long while a listener keeps running out.
LOG_EVERY_S = 10.0
# asyncio's own report of the same condition: a traceback each time. Ours replaces it.
_ASYNCIO_ACCEPT_MESSAGE = "socket.accept() out of system resource"


class ListeningSocket(socket.socket):
    """A listening socket that rests, instead of spinning, when accept() runs out of fds.

    ``rest`` pauses the listener for a number of seconds; a server whose library has no
    back-off of its own (tornado) sets it. Without it the error goes on to asyncio's accept
    loop, which rests the listener by itself for :data:`REST_S`. Either way accept() refuses
    the rest of the current batch at once, and one line is logged per :data:`LOG_EVERY_S`.
    """

    rest: Callable[[float], None] | None = None
    _resting = False
    _logged_at = -LOG_EVERY_S
    _runs_out = 0

    def accept(self) -> tuple[socket.socket, object]:
        if self._resting:
            raise BlockingIOError(errno.EAGAIN, "listener resting after running out")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            self._ran_out(exc)
            if self.rest is None:
                raise  # asyncio removes the reader and retries after REST_S
            raise BlockingIOError(errno.EAGAIN, "listener resting after running out") from exc

    def _ran_out(self, exc: OSError) -> None:
        self._runs_out += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            _log.warning(
                "accept() failed (%s; open-file limit %s): not accepting for %g s at a time, "
                "newcomers wait in the backlog (%d times so far; next line in %g s at the most)",
                exc.strerror or exc,
                fd_limit(),
                REST_S,
                self._runs_out,
                LOG_EVERY_S,
            )
        # The rest of this accept batch is refused without asking the kernel again.
        self._resting = True
        if self.rest is not None:
            self.rest(REST_S)
            asyncio.get_running_loop().call_later(REST_S, self._wake)
        else:
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._resting = False


class _QuietAsyncioAccept(logging.Filter):
    """Drops asyncio's traceback for a listener out of resources (ours said it in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ASYNCIO_ACCEPT_MESSAGE)


logging.getLogger("asyncio").addFilter(_QuietAsyncioAccept())


class HeadDeadline:
    """Closes a connection whose request head has not arrived within ``header_timeout_s``.

    For the HTTP servers whose library has no such timer (uvicorn's h11 has only a keep-alive
    timeout, which the first byte of a request cancels): without it an idle socket, or one
    dripping its request a byte a second (slowloris), is held forever. ``arm`` whenever the
    connection waits for a head (it opened, a response completed), ``met`` once one arrived.
    """

    __slots__ = ("_seconds", "_timer", "_transport")

    def __init__(self, transport: asyncio.Transport, seconds: float) -> None:
        self._transport, self._seconds = transport, seconds
        self._timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.met()
        self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)

    def met(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        # abort, not close: there is no answer to flush, and a half-read request to drop.
        self._transport.abort()


def listening_sockets(host: str, port: int) -> list[ListeningSocket]:
    """Non-blocking sockets listening on every address ``host`` resolves to, on one port.

    An IPv4 or IPv6 literal gives one socket of that family; a name such as ``localhost``
    gives one per address it resolves to. Port 0 picks a free port, the same for all of them.
    Raises ``OSError`` (``socket.gaierror`` for a name that does not resolve).
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    sockets: list[ListeningSocket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, resolved in infos:
            address: tuple[object, ...] = resolved
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            if sockets:  # the port the first socket got, for the other addresses too
                address = (address[0], bound_port(sockets), *address[2:])
            try:
                sockets.append(_listen(family, kind, proto, address))
            except OSError as exc:
                if exc.errno not in _UNBINDABLE or len(infos) == 1:
                    raise
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, f"no address of {host!r} can be bound")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listen(family: int, kind: int, proto: int, address: tuple[object, ...]) -> ListeningSocket:
    sock = ListeningSocket(family, kind, proto)
    try:
        # A restarted server rebinds its port at once, whatever TIME_WAIT its peers left.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # One socket per family, as the addresses came: not a dual-stack catch-all.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_port(sockets: list[ListeningSocket]) -> int:
    """The port the listening sockets share."""
    return int(sockets[0].getsockname()[1])


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 literal in brackets."""
    try:
        is_v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return host
    return f"[{host}]" if is_v6 else host


def tune_accepted(sock: socket.socket | None, settings: Settings) -> None:
    """TCP_NODELAY (samples are small and latency matters), the configured send buffer, and
    the kernel's own dead-peer limits, the same for every transport.

    ``TCP_USER_TIMEOUT`` = ``dead_after_s``: data the server sent that stays unacknowledged
    that long makes the kernel abort the connection (ETIMEDOUT), so a server that only writes
    (SSE) notices a peer that vanished behind a black hole; without it the kernel retries for
    ``tcp_retries2`` (about 15 minutes). Keepalive probes after ``heartbeat_s`` of idle cover
    a connection with nothing in flight (a poll between requests); with ``TCP_USER_TIMEOUT``
    set, Linux ends unanswered probing at that same limit.
    """
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if settings.send_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
    if settings.dead_after_s is not None:
        user_timeout_ms = max(1, round(settings.dead_after_s * 1000))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    if settings.heartbeat_s:
        every_s = max(1, math.ceil(settings.heartbeat_s))  # the kernel counts whole seconds
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, every_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, every_s)
        if settings.dead_after_s is not None:
            probes = max(1, math.ceil(settings.dead_after_s / every_s))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
