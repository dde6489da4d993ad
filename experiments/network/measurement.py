"""Measure a built path: ``await measure(path) -> PathProperties``.

The probes are sockets of this process created inside the path's namespaces (a socket keeps
the namespace it was born in), so nothing has to be started or stopped for them; only the
delay line's ceiling uses a separate sender process. In order:

- connect time: median of several TCP connects from the first client namespace to a
  listener in the server namespace (one SYN/SYN-ACK round trip each);
- RTT: median of application ping-pongs of 32 bytes over one connection;
- rate: a TCP bulk transfer each way with the random loss suspended (TCP cannot fill a lossy
  long path — 1 % loss at 120 ms allows about 1.2 Mbit/s by Mathis et al.'s formula — which
  says something about TCP, not the link); after a warm-up of a few RTTs (slow start), the
  bytes the router's shaped veth sent during the window give the wire rate and the bytes the
  receiver read the goodput;
- loss: numbered UDP probes both ways at once, paced well under the link's rate and the
  delay line's ceiling so that only the emulated loss drops any;
- the delay line's ceiling: once per process, on a path of its own with a delay line of zero
  delay and no shaping, a UDP flood of minimum-size packets from a separate process; the
  packets the delay line wrote back into the kernel per CPU-second it used, i.e. what it
  forwards when it has a core to itself. (Per CPU-second rather than per wall-second because
  the flood, also Python, cannot saturate it on this machine: a wall-clock rate would measure
  the sender.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]

from experiments.network.errors import PathError
from experiments.network.path import NetworkPath, interface_index
from experiments.network.profiles import Profile
from experiments.network.properties import Measured, PathProperties, judge

__all__ = ["DEFAULT_LOSS_PROBES", "delay_line_ceiling", "measure"]

CONNECTS = 7
PINGS = 20
PING_BYTES = 32
BLOCK = bytes(64 * 1024)
RATE_WINDOW_S = 1.2
#: Enough probes that 0.5 points is a fair bound: at 3 % loss the standard error of the
#: estimate is 0.17 points, so 0.5 points is three of them.
DEFAULT_LOSS_PROBES = 10_000
PROBE_PPS = 5_000
PROBE_BATCH = 50
CEILING_FLOOD_S = 1.5
CEILING_SKIP_S = 0.25
IO_TIMEOUT_S = 30.0

#: Linux's SO_RCVBUFFORCE (root may exceed net.core.rmem_max); Python does not name it.
SO_RCVBUFFORCE = 33

_ceiling_pps: float | None = None


async def measure(
    path: NetworkPath, *, ceiling: bool = True, loss_probes: int = DEFAULT_LOSS_PROBES
) -> PathProperties:
    """Measure ``path`` (built, inside its ``async with``) and judge it against its profile.

    ``ceiling`` False skips the delay line's ceiling (reported as None). Every wait is
    bounded; a broken path raises :class:`PathError`.
    """
    path.check()
    async with _Endpoint.start(path) as endpoint:
        connect_ms = statistics.median([await endpoint.connect_ms() for _ in range(CONNECTS)])
        rtt_ms = await endpoint.rtt_ms()
        async with path.loss_suspended():
            down, goodput_down = await endpoint.rate("down")
            up, goodput_up = await endpoint.rate("up")
    loss_down, loss_up = await _loss(path, loss_probes)
    path.check()
    pps = await delay_line_ceiling() if ceiling and path.profile.has_delay_line else None
    measured = Measured(
        connect_ms=connect_ms,
        rtt_ms=rtt_ms,
        rate_down_mbit=down,
        rate_up_mbit=up,
        goodput_down_mbit=goodput_down,
        goodput_up_mbit=goodput_up,
        loss_down=loss_down,
        loss_up=loss_up,
        loss_probes=loss_probes,
        delay_line_ceiling_pps=pps,
    )
    return judge(path.profile, measured)


class _Endpoint:
    """A TCP listener in the server namespace: echo (``E``), send forever (``D``), or
    swallow and count (``U``), chosen by the first byte a connection sends."""

    def __init__(self, path: NetworkPath, server: asyncio.Server, port: int) -> None:
        self.path = path
        self.server = server
        self.port = port
        self.swallowed = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, path: NetworkPath) -> AsyncIterator[_Endpoint]:
        listener = path.socket(path.server_ns)
        try:
            listener.bind((path.server_addr, 0))
            listener.listen(64)
        except OSError as exc:
            listener.close()
            raise PathError(f"cannot listen in {path.server_ns}: {exc}") from exc
        endpoint: _Endpoint | None = None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert endpoint is not None
            try:
                await endpoint._serve(reader, writer)
            except asyncio.CancelledError:
                # Ending quietly: Python 3.11's start_server callback calls exception() on
                # a cancelled handler task and logs a spurious traceback (fixed in 3.12).
                writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        endpoint = cls(path, server, int(listener.getsockname()[1]))
        try:
            yield endpoint
        finally:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            mode = await reader.read(1)
            if mode == b"E":
                while chunk := await reader.read(4096):
                    writer.write(chunk)
                    await writer.drain()
            elif mode == b"D":
                while True:
                    writer.write(BLOCK)
                    await writer.drain()
            elif mode == b"U":
                while chunk := await reader.read(1 << 16):
                    self.swallowed += len(chunk)
        except OSError:
            pass  # the measuring side hung up: that is how a transfer ends
        finally:
            writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            self.path.open_connection(self.path.client_ns[0], self.path.server_addr, self.port),
            IO_TIMEOUT_S,
        )

    async def connect_ms(self) -> float:
        sock = self.path.socket(self.path.client_ns[0])
        try:
            start = time.perf_counter()
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (self.path.server_addr, self.port)),
                IO_TIMEOUT_S,
            )
            return (time.perf_counter() - start) * 1e3
        finally:
            sock.close()

    async def rtt_ms(self) -> float:
        reader, writer = await self._connect()
        try:
            writer.write(b"E")
            message = bytes(PING_BYTES)
            times: list[float] = []
            for _ in range(PINGS):
                start = time.perf_counter()
                writer.write(message)
                await asyncio.wait_for(reader.readexactly(PING_BYTES), IO_TIMEOUT_S)
                times.append((time.perf_counter() - start) * 1e3)
            return statistics.median(times)
        finally:
            writer.close()

    async def rate(self, direction: str) -> tuple[float, float]:
        """``(wire Mbit/s, goodput Mbit/s)`` of a bulk transfer ``down`` or ``up``."""
        path = self.path
        layout = path.layout
        wire = layout.router_client_if[0] if direction == "down" else layout.router_server_if
        received = [0]
        reader, writer = await self._connect()

        async def download() -> None:
            writer.write(b"D")
            while chunk := await reader.read(1 << 16):
                received[0] += len(chunk)

        async def upload() -> None:
            writer.write(b"U")
            while True:
                writer.write(BLOCK)
                await writer.drain()

        def payload() -> int:
            return received[0] if direction == "down" else self.swallowed

        task = asyncio.create_task(download() if direction == "down" else upload())
        try:
            async with _wire_counter(path.router_ns, wire) as wire_bytes:
                # Slow start doubles the window each RTT: by 4 RTTs (plus margin) a flow has
                # filled the bandwidth-delay product of every profile.
                await asyncio.sleep(0.3 + 4 * (path.profile.rtt_ms or 0.0) / 1e3)
                start, bytes0, wire0 = time.perf_counter(), payload(), await wire_bytes()
                await asyncio.sleep(RATE_WINDOW_S)
                end, bytes1, wire1 = time.perf_counter(), payload(), await wire_bytes()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
            _abort(writer)
        # What was already queued on the way drains in about a round trip plus the shaped
        # queue (itself about one RTT); the next measurement must not see it.
        await asyncio.sleep(0.1 + 2 * (path.profile.rtt_ms or 0.0) / 1e3)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise PathError(f"bulk transfer {direction} failed: {task.exception()}")
        seconds = end - start
        goodput = (bytes1 - bytes0) * 8 / seconds / 1e6
        if wire0 is None or wire1 is None:
            return goodput, goodput
        return (wire1 - wire0) * 8 / seconds / 1e6, goodput


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, throwing away unsent data: a plain close would go on sending the
    megabytes in the socket buffer, filling the shaped queue for seconds after the window."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@contextlib.asynccontextmanager
async def _wire_counter(
    namespace: str | None, ifname: str
) -> AsyncIterator[Callable[[], Awaitable[int | None]]]:
    """A reader of ``ifname``'s sent bytes in ``namespace`` (None on loopback).

    The netlink socket is opened once, before the window, so each reading is one quick
    request and the window's edges are sharp.
    """
    if namespace is None:

        async def nothing() -> int | None:
            return None

        yield nothing
        return
    async with AsyncIPRoute(netns=namespace, flags=0) as rtr:

        async def tx_bytes() -> int | None:
            return (await _link_stats(rtr, ifname))[0]

        yield tx_bytes


async def _link_stats(rtr: AsyncIPRoute, ifname: str) -> tuple[int, int, int, int]:
    """``(tx_bytes, tx_packets, rx_bytes, rx_packets)`` of one interface."""
    for link in await rtr.link("get", index=await interface_index(rtr, ifname)):
        stats = link.get("stats64")
        return (
            int(stats["tx_bytes"]),
            int(stats["tx_packets"]),
            int(stats["rx_bytes"]),
            int(stats["rx_packets"]),
        )
    raise PathError(f"no interface {ifname}")


async def _loss(path: NetworkPath, probes: int) -> tuple[float, float]:
    """``(down, up)`` fractions of ``probes`` numbered datagrams that did not arrive."""
    loop = asyncio.get_running_loop()
    server = path.socket(path.server_ns, socket.AF_INET, socket.SOCK_DGRAM)
    client = path.socket(path.client_ns[0], socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        for sock in (server, client):
            # Room for every probe in flight: a receive buffer that overflows while this
            # process is busy sending would count as loss on the path.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        server.bind((path.server_addr, 0))
        client.bind((path.client_addr[0], 0))
        server_at, client_at = server.getsockname(), client.getsockname()
        got_down, got_up = bytearray(probes), bytearray(probes)

        async def receive(sock: socket.socket, seen: bytearray) -> None:
            while True:
                data = await loop.sock_recv(sock, 64)
                seq = int.from_bytes(data[:4], "big")
                if seq < probes:
                    seen[seq] = 1

        async def send(sock: socket.socket, to: tuple[str, int]) -> None:
            start = time.perf_counter()
            for first in range(0, probes, PROBE_BATCH):
                # An absolute schedule: a late batch does not push every later one back.
                due = start + first / PROBE_PPS
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                for seq in range(first, min(first + PROBE_BATCH, probes)):
                    await loop.sock_sendto(sock, seq.to_bytes(4, "big") + bytes(4), to)

        receivers = [
            asyncio.create_task(receive(client, got_down)),
            asyncio.create_task(receive(server, got_up)),
        ]
        try:
            await asyncio.wait_for(
                asyncio.gather(send(server, client_at), send(client, server_at)),
                IO_TIMEOUT_S,
            )
            # The last probes are still on the way: a one-way delay, a queue, a margin.
            await asyncio.sleep(0.3 + (path.profile.rtt_ms or 0.0) / 1e3)
        finally:
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
    return 1 - sum(got_down) / probes, 1 - sum(got_up) / probes


CEILING_PROFILE = Profile(
    "delay-line-ceiling", "a delay line holding nothing, no shaping, no loss", rtt_ms=0.0
)


async def delay_line_ceiling() -> float:
    """Packets/s the delay line forwards at most; measured once per process, then reused."""
    global _ceiling_pps
    if _ceiling_pps is None:
        _ceiling_pps = await _measure_ceiling()
    return _ceiling_pps


async def _measure_ceiling() -> float:
    async with NetworkPath(CEILING_PROFILE) as path:
        tun = path.layout.tun
        line = path.delay_line_pid
        assert line is not None
        sink = path.socket(path.server_ns, socket.AF_INET, socket.SOCK_DGRAM)
        with sink:
            # A sink that never reads: the server's kernel drops what overflows it quietly
            # (no ICMP replies to compete for the delay line).
            sink.bind((path.server_addr, 0))
            port = int(sink.getsockname()[1])
            command = [
                *path.exec_prefix(path.client_ns[0]), sys.executable, "-m",
                "experiments.network.flood", path.server_addr, str(port), str(CEILING_FLOOD_S),
            ]  # fmt: skip
            flood = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            assert flood.stdout is not None
            try:
                async with AsyncIPRoute(netns=path.router_ns, flags=0) as rtr:
                    await asyncio.wait_for(flood.stdout.readline(), IO_TIMEOUT_S)
                    # Skip the flood's first moments, then count what the delay line wrote
                    # back into the kernel (the TUN device's "received" side) and the CPU
                    # time it spent doing so.
                    await asyncio.sleep(CEILING_SKIP_S)
                    rx0, cpu0 = (await _link_stats(rtr, tun))[3], _cpu_s(line)
                    await asyncio.sleep(CEILING_FLOOD_S - 2 * CEILING_SKIP_S)
                    rx1, cpu1 = (await _link_stats(rtr, tun))[3], _cpu_s(line)
                _, err = await asyncio.wait_for(flood.communicate(), IO_TIMEOUT_S)
            finally:
                if flood.returncode is None:
                    flood.kill()
                    await flood.wait()
            if flood.returncode != 0:
                raise PathError(f"flood failed: {err.decode(errors='replace').strip()}")
    if cpu1 <= cpu0:
        raise PathError("the delay line used no CPU time during the flood")
    return (rx1 - rx0) / (cpu1 - cpu0)


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (fields 14 and 15 of its stat)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise PathError(f"the delay line (pid {pid}) is gone: {exc}") from exc
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
