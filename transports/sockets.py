"""Socket options every server applies to an accepted connection.

A bounded send buffer is part of keeping memory bounded: the kernel would otherwise grow each
connection's buffer to ``net.ipv4.tcp_wmem``'s maximum (4 MiB here) for a client that stops
reading, and a slow client would take that long to be noticed by the hub's queue bound.
"""

from __future__ import annotations

import socket

from transports.settings import Settings

__all__ = ["tune_accepted"]


def tune_accepted(sock: socket.socket | None, settings: Settings) -> None:
    """TCP_NODELAY (samples are small and latency matters) and the configured send buffer."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if settings.send_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
