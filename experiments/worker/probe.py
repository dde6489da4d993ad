"""The one probe of a server process: CPU and RSS (psutil), and its sockets' bytes (``ss``).

:class:`ServerProbe` snapshots the server at the window's edges and gives the
:class:`~experiments.worker.schema.ServerUsage` over the window.

Bytes on a server's TCP connections are read from the kernel with ``ss -tin`` (no proxy).

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

import psutil

from experiments.worker.schema import ServerUsage

__all__ = ["ServerProbe", "Snapshot", "TcpBytes", "cpu_seconds", "parse_ss", "tcp_bytes"]

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


def tcp_bytes(port: int, netns: str | None = None) -> TcpBytes | None:
    """Bytes over the established connections on local ``port`` (in network namespace
    ``netns``, when the server runs in one); None if ``ss`` fails."""
    prefix = [] if netns is None else ["ip", "netns", "exec", netns]
    try:
        done = subprocess.run(
            [*prefix, "ss", "-tinH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_ss(done.stdout)


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds ``proc`` has used so far."""
    t = proc.cpu_times()
    return float(t.user + t.system)


@dataclass(frozen=True, slots=True)
class Snapshot:
    cpu_s: float
    rss: int
    read_chars: int
    write_chars: int
    wire: TcpBytes | None


class ServerProbe:
    """CPU, RSS, character I/O and socket bytes of the server process at the window's edges."""

    def __init__(self, pid: int, port: int | None = None, netns: str | None = None) -> None:
        self.proc = psutil.Process(pid)
        self.port = port
        self.netns = netns
        self.start: Snapshot | None = None
        self.end: Snapshot | None = None

    def snapshot(self) -> Snapshot | None:
        try:
            with self.proc.oneshot():
                io = self.proc.io_counters()
                cpu, rss = cpu_seconds(self.proc), int(self.proc.memory_info().rss)
        except psutil.Error:
            return None  # the server is gone (a fault scenario killed it)
        wire = tcp_bytes(self.port, self.netns) if self.port is not None else None
        return Snapshot(cpu, rss, int(io.read_chars), int(io.write_chars), wire)

    def usage(self) -> ServerUsage | None:
        """What the server used between the two snapshots (None: one is missing)."""
        s, e = self.start, self.end
        if s is None or e is None:
            return None
        both = s.wire is not None and e.wire is not None
        return ServerUsage(
            cpu_s=e.cpu_s - s.cpu_s,
            rss_start=s.rss,
            rss_end=e.rss,
            read_chars=e.read_chars - s.read_chars,
            write_chars=e.write_chars - s.write_chars,
            tcp_sent=e.wire.sent - s.wire.sent if both and e.wire and s.wire else None,
            tcp_received=(
                e.wire.received - s.wire.received if both and e.wire and s.wire else None
            ),
            tcp_connections=e.wire.connections if e.wire is not None else None,
        )
