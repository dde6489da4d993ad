"""The sockets of every server: how they listen, and how an accepted connection is tuned.

One helper creates every listening socket, so all transports get the same accept queue and
the same options: a fan-out or restart comparison would otherwise measure each library's
default backlog (2048, 1024, 128 and 100 before this module) rather than its protocol.
Libraries that call ``listen()`` again on a socket handed to them (asyncio, aiohttp,
uvicorn) must be given :data:`BACKLOG` too, or they would shrink the queue to their default.

A bounded send buffer is part of keeping memory bounded: the kernel would otherwise grow each
connection's buffer to ``net.ipv4.tcp_wmem``'s maximum (4 MiB here) for a client that stops
reading, and a slow client would take that long to be noticed by the hub's queue bound.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from transports.settings import Settings

__all__ = ["BACKLOG", "bound_port", "listening_sockets", "tune_accepted", "url_host"]

#: Connections the kernel queues before the server accepts them, for every transport. Enough
#: for a burst of reconnecting clients after a restart; the kernel caps it at somaxconn.
BACKLOG = 1024

# A name that resolves to an address this host cannot bind (an IPv6 entry on a host without
# IPv6): skipped while another address of the same name binds.
_UNBINDABLE = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Non-blocking sockets listening on every address ``host`` resolves to, on one port.

    An IPv4 or IPv6 literal gives one socket of that family; a name such as ``localhost``
    gives one per address it resolves to. Port 0 picks a free port, the same for all of them.
    Raises ``OSError`` (``socket.gaierror`` for a name that does not resolve).
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
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


def _listen(family: int, kind: int, proto: int, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, kind, proto)
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


def bound_port(sockets: list[socket.socket]) -> int:
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
    """TCP_NODELAY (samples are small and latency matters) and the configured send buffer."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if settings.send_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
