"""What the kernel-level fault scenarios share (``blackhole-kernel``, ``reset-kernel``,
``link-down``).

A kernel fault acts on the emulated path, not on a proxy: nftables drops or resets a client's
packets in the router namespace, or the router's end of its veth goes down. Nothing in between
acknowledges bytes, so each side's kernel sees what it would see on a real network (data left
unacknowledged, retransmissions backing off, ``TCP_USER_TIMEOUT`` able to fire).

- :func:`kernel_path`: a path of the scenario's own, ``clients`` client namespaces (one per
  faulted client, each with its own address so a fault hits one client only), and a
  :class:`~experiments.run.context.RunContext` placed on it. On a loopback run the path is
  ``lan``; on an emulated run it has the run's profile (a path of its own all the same: the
  run's path has one client namespace, shared by every transport running at once);
- :class:`KernelClients`: one worker process per client namespace, one client each, and the
  merged result (client ``i`` is the one in namespace ``i``);
- :class:`SocketWatch`: the TCP connections the server's and each client's kernel hold,
  read with ``sock_diag`` (what ``ss`` reads) from netlink sockets opened in those
  namespaces, so polling every 100 ms costs no process;
- :class:`Drops`: per fault, when the server's and the client's kernel stopped holding the
  connections they held when the fault began (the server drop is measured, not inferred).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

import msgspec

from experiments.faults.windows import FaultWindow
from experiments.network import NetworkPath, missing_requirements
from experiments.network.namespaces import in_namespace
from experiments.run.context import RunContext
from experiments.run.processes import HarnessError, ServerProcess
from experiments.worker.schema import ClientGroup, WorkerResult

__all__ = [
    "POLL_S",
    "Conn",
    "Drops",
    "KernelClients",
    "KernelRounds",
    "SocketWatch",
    "Strike",
    "kernel_path",
    "kernel_rounds",
    "parse_diag",
]

#: How often the watch reads the kernels' sockets: the resolution of a server drop.
POLL_S = 0.1
#: Server payload acknowledged by a client beyond which data is said to flow again (more
#: than a response head: samples are coming).
FLOWING_BYTES = 512

# sock_diag (linux/sock_diag.h, linux/inet_diag.h, linux/netlink.h).
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_ESTABLISHED = 1
_INET_DIAG_INFO = 2
_NLMSG_HEADER = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (ports, two
# 16-byte addresses, interface, cookie), all zero: a dump of every socket.
_REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg up to inet_diag_sockid's addresses: family, state, timer, retrans, the two
# ports (network order), source and destination address (16 bytes each).
_DIAG_MSG = struct.Struct("=BBBB2H16s16s")
_DIAG_MSG_LEN = 72
_RTA = struct.Struct("=HH")
# struct tcp_info: tcpi_unacked at 24, tcpi_bytes_acked and tcpi_bytes_received (u64) at 120.
_TCPI_UNACKED = struct.Struct("=I")
_TCPI_BYTES = struct.Struct("=QQ")


@dataclass(frozen=True, slots=True)
class Conn:
    """One established TCP connection as a kernel holds it."""

    local: tuple[str, int]
    remote: tuple[str, int]
    #: Payload this end sent that the peer acknowledged; payload it received.
    bytes_acked: int
    bytes_received: int
    #: Segments sent and not yet acknowledged.
    unacked: int


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_diag(data: bytes) -> tuple[list[Conn], bool]:
    """The established IPv4 connections in one ``recv`` of a sock_diag dump, and whether the
    dump ended there. Raises ``OSError`` on a netlink error message."""
    conns: list[Conn] = []
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size:
            break
        body = offset + _NLMSG_HEADER.size
        end = offset + length
        offset += _align(length)
        if kind == _NLMSG_DONE:
            return conns, True
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, body)
            raise OSError(-code, f"sock_diag: {code}")
        if kind != _SOCK_DIAG_BY_FAMILY:
            continue
        family, state, _, _, sport, dport, src, dst = _DIAG_MSG.unpack_from(data, body)
        if family != socket.AF_INET or state != _TCP_ESTABLISHED:
            continue
        acked = received = unacked = 0
        attr = body + _DIAG_MSG_LEN
        while attr + _RTA.size <= end:
            alen, atype = _RTA.unpack_from(data, attr)
            if alen < _RTA.size:
                break
            if atype == _INET_DIAG_INFO and alen - _RTA.size >= 136:
                info = attr + _RTA.size
                (unacked,) = _TCPI_UNACKED.unpack_from(data, info + 24)
                acked, received = _TCPI_BYTES.unpack_from(data, info + 120)
            attr += _align(alen)
        conns.append(
            Conn(
                local=(socket.inet_ntoa(src[:4]), socket.ntohs(sport)),
                remote=(socket.inet_ntoa(dst[:4]), socket.ntohs(dport)),
                bytes_acked=acked,
                bytes_received=received,
                unacked=unacked,
            )
        )
    return conns, False


class _Diag:
    """A sock_diag netlink socket of one network namespace."""

    def __init__(self, ns: str | None) -> None:
        # A netlink socket belongs to the namespace it was made in, whichever thread uses it.
        self.sock = in_namespace(
            ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
        )
        # A dump of a namespace holding a few sockets is answered at once: no reason to wait.
        self.sock.settimeout(1.0)
        self._seq = 0

    def established(self) -> list[Conn]:
        self._seq += 1
        request = _REQUEST.pack(
            socket.AF_INET, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1), 1 << _TCP_ESTABLISHED
        )
        header = _NLMSG_HEADER.pack(
            _NLMSG_HEADER.size + len(request),
            _SOCK_DIAG_BY_FAMILY,
            _NLM_F_REQUEST | _NLM_F_DUMP,
            self._seq,
            0,
        )
        self.sock.send(header + request)
        out: list[Conn] = []
        while True:
            conns, done = parse_diag(self.sock.recv(1 << 16))
            out += conns
            if done:
                return out

    def close(self) -> None:
        self.sock.close()


class SocketWatch:
    """The connections between the server (on ``port``) and each client namespace, as the
    kernels at both ends hold them (established only)."""

    def __init__(self, path: NetworkPath, port: int) -> None:
        self.path, self.port = path, port
        self._server = _Diag(path.server_ns)
        self._clients = [_Diag(ns) for ns in path.client_ns]

    def close(self) -> None:
        for diag in (self._server, *self._clients):
            diag.close()

    def server_side(self, client: int) -> dict[int, Conn]:
        """The server's connections with client ``client``, by the client's port."""
        addr = self.path.client_addr[client]
        return {
            c.remote[1]: c
            for c in self._server.established()
            if c.local[1] == self.port and c.remote[0] == addr
        }

    def client_side(self, client: int) -> dict[int, Conn]:
        """Client ``client``'s connections to the server, by the client's port."""
        return {
            c.local[1]: c
            for c in self._clients[client].established()
            if c.remote == (self.path.server_addr, self.port)
        }

    def acked(self, client: int) -> dict[int, int]:
        """Server payload acknowledged by client ``client``, per connection (client port)."""
        return {port: c.bytes_acked for port, c in self.server_side(client).items()}

    async def wait_flowing(self, client: int, since: dict[int, int], timeout_s: float) -> bool:
        """Until the client acknowledged :data:`FLOWING_BYTES` of server payload beyond
        ``since`` (per connection; a new connection starts from nothing); False on timeout.

        The client's kernel acknowledging the server's data is what the path lets through;
        what the client application received is judged from the worker's samples."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            acked = self.acked(client)
            if any(n - since.get(port, 0) > FLOWING_BYTES for port, n in acked.items()):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_S)


class Drops:
    """When each side's kernel stopped holding the connections it held as the fault began.

    Polls every :data:`POLL_S` until :meth:`stop` (or both sides dropped). A side "drops"
    when none of those connections is established any more: its application closed it (a FIN
    sent, even if the hole swallows it) or its kernel aborted it (``TCP_USER_TIMEOUT``,
    retransmissions exhausted, a RST received).
    """

    def __init__(self, watch: SocketWatch, client: int) -> None:
        self.watch, self.client = watch, client
        self.server_ports = frozenset(watch.server_side(client))
        self.client_ports = frozenset(watch.client_side(client))
        self.server_ns: int | None = None
        self.client_ns: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def both(self) -> bool:
        return self.server_ns is not None and self.client_ns is not None

    def start(self) -> Drops:
        self._task = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        while not self.both:
            await asyncio.sleep(POLL_S)
            at = time.monotonic_ns()
            if self.server_ns is None and not self.server_ports & set(
                self.watch.server_side(self.client)
            ):
                self.server_ns = at
            if self.client_ns is None and not self.client_ports & set(
                self.watch.client_side(self.client)
            ):
                self.client_ns = at

    async def wait_both(self, timeout_s: float) -> None:
        """Until both sides dropped, or ``timeout_s``."""
        assert self._task is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def kernel_path(ctx: RunContext, clients: int) -> AsyncIterator[RunContext]:
    """A path of this scenario's own with ``clients`` client namespaces, and ``ctx`` placed on
    it (``ctx.network`` is the path: records say its profile)."""
    missing = missing_requirements()
    if missing:
        # An error record for this transport, not a failed run: loopback scenarios still run.
        raise HarnessError("skipped: kernel faults need " + "; ".join(missing))
    profile = "lan" if ctx.network is None else ctx.network.profile
    async with NetworkPath(profile, clients=clients) as path:
        # No kept servers: a server of the pool would outlive this path.
        yield dataclasses.replace(ctx, network=path, servers=None)


def path_of(ctx: RunContext) -> NetworkPath:
    """The path :func:`kernel_path` placed ``ctx`` on."""
    if ctx.network is None:
        raise HarnessError("a kernel fault needs an emulated path")
    return ctx.network


class KernelClients:
    """One worker per client namespace of the path, one client each (an async context
    manager): a fault on namespace ``i`` reaches client ``i`` only."""

    def __init__(self, ctx: RunContext, server: ServerProcess) -> None:
        path = path_of(ctx)
        job = ctx.job(server.port, (ClientGroup(1),), keep_samples=True, keep_latencies=False)
        self.workers = [ctx.clients(job, exec_prefix=path.exec_prefix(ns)) for ns in path.client_ns]
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> KernelClients:
        for worker in self.workers:
            await self._stack.enter_async_context(worker)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def wait_ready(self) -> None:
        ready = await asyncio.gather(*(w.wait_ready() for w in self.workers))
        missing = sum(r.clients - r.connected for r in ready)
        if missing:
            raise HarnessError(f"{missing} of {len(ready)} kernel-fault clients never connected")

    async def stop(self) -> WorkerResult:
        """Every worker's result as one: client ``i`` from worker ``i``."""
        results: Sequence[WorkerResult] = await asyncio.gather(*(w.stop() for w in self.workers))
        clients = [
            msgspec.structs.replace(c, index=i)
            for i, c in enumerate(c for r in results for c in r.clients)
        ]
        return msgspec.structs.replace(results[0], clients_requested=len(clients), clients=clients)


#: One fault on the path, from waiting for data to flow until it flows again (or the wait
#: runs out): per client it touched, its window and whether data came back.
Strike = Callable[[], Awaitable[Sequence[tuple[FaultWindow, bool]]]]


@dataclass(slots=True)
class KernelRounds:
    """What a run of kernel faults left: the windows per client, and the clients' ledger."""

    #: ``windows[i]``: client ``i``'s fault windows, in order.
    windows: list[list[FaultWindow]]
    #: Faults after which data flowed again.
    recovered: int
    result: WorkerResult


async def kernel_rounds(
    ctx: RunContext,
    server: ServerProcess,
    rounds: int,
    settle_s: float,
    label: Callable[[int], str],
    strike: Strike,
) -> KernelRounds:
    """``rounds`` strikes against clients of their own (:class:`KernelClients`), one after
    the other, then ``settle_s`` for the last samples and the clients' results."""
    windows: list[list[FaultWindow]] = [[] for _ in path_of(ctx).client_ns]
    recovered = 0
    async with KernelClients(ctx, server) as clients:
        await clients.wait_ready()
        for round_ in range(rounds):
            ctx.note(label(round_))
            for i, (window, flowing) in enumerate(await strike()):
                windows[i].append(window)
                recovered += flowing
        await asyncio.sleep(settle_s)
        result = await clients.stop()
    return KernelRounds(windows, recovered, result)
