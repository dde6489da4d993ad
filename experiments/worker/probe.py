"""Bytes on a server's TCP connections, read from the kernel with ``ss -tin`` (no proxy).

``/proc/PID/io`` does not count ``send()``/``recv()`` on sockets, and a forwarding proxy would
add a hop to what is measured, so the wire bytes come from the kernel's own per-socket
counters: ``bytes_acked`` (payload the server sent and the peer acknowledged) and
``bytes_received`` of every established TCP socket whose local port is the server's. Only
connections open at the moment of reading are seen: a figure is the difference of two
readings over a window in which the connections stay up (true of every steady-state
scenario; a polling client keeps its connection alive).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

__all__ = ["TcpBytes", "parse_ss", "tcp_bytes"]

_ACKED = re.compile(r"\bbytes_acked:(\d+)")
_RECEIVED = re.compile(r"\bbytes_received:(\d+)")


@dataclass(frozen=True, slots=True)
class TcpBytes:
    sent: int
    received: int
    connections: int


def parse_ss(text: str) -> TcpBytes:
    """Sum ``bytes_acked`` and ``bytes_received`` over the sockets in ``ss -tin`` output."""
    sent = sum(int(m) for m in _ACKED.findall(text))
    received = sum(int(m) for m in _RECEIVED.findall(text))
    connections = sum(1 for line in text.splitlines() if line[:1] not in (" ", "\t", ""))
    return TcpBytes(sent, received, connections)


def tcp_bytes(port: int) -> TcpBytes | None:
    """Bytes over the established connections on local ``port``; None if ``ss`` fails."""
    try:
        done = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_ss(done.stdout)
