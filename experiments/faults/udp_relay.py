"""A UDP relay with the fault proxy's interface, for transports that run over UDP (QUIC).

The TCP :class:`~experiments.faults.proxy.FaultProxy` cannot carry datagrams. A
:class:`UdpFaultProxy` stands where it would (same constructor, same ``port``,
``forwarded_bytes``, ``wait_until``, ``blackhole`` and ``heal``), so the scenarios that only
need a transparent path and a place to watch server data flow (``restart``) run unchanged:

- each client address gets its own upstream socket (a NAT mapping), kept until ``stop()``;
  a new QUIC connection from a new client port is a new mapping, numbered like the proxy's
  connections (``connection_ids``);
- ``blackhole()`` drops every datagram both ways (counted in ``discarded_bytes``) until
  ``heal()``. UDP has no close to hold back or record, so ``peer_closes`` stays empty.

Faults that only mean something for TCP (``reset_peer``: there is no RST; the shaping toxics
and ``down``/``up``, which this relay does not emulate) raise :class:`NotApplicable`, whose
message starts with ``skipped:`` so a scenario that reaches one records why. A relay on an
emulated path (sockets made in the client's namespace) is not supported either.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, NoReturn, cast

from experiments.faults.proxy import FaultProxy
from experiments.run.processes import HarnessError
from transports.contract import Transport

__all__ = ["NotApplicable", "UdpFaultProxy", "require_tcp"]


class NotApplicable(HarnessError):
    """A fault that has no UDP meaning (or that this relay does not emulate)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"skipped: not applicable: UDP ({what})")


def require_tcp(transport: Transport, what: str) -> None:
    """Skip a scenario at its start, saying why, for a transport that is not over TCP."""
    if transport.features.transport_protocol != "tcp":
        raise NotApplicable(what)


class _Downstream(asyncio.DatagramProtocol):
    """The client-facing socket: every datagram goes up through its sender's mapping."""

    def __init__(self, relay: UdpFaultProxy) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.relay._from_client(data, addr)


class _Upstream(asyncio.DatagramProtocol):
    """One mapping's server-facing socket: datagrams go back to its client."""

    def __init__(self, relay: UdpFaultProxy, client: tuple[Any, ...]) -> None:
        self.relay, self.client = relay, client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.relay._from_server(data, self.client)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP from a server that is down (restart): QUIC retransmits by itself


class UdpFaultProxy(FaultProxy):
    """A UDP relay in front of one upstream server: transparent, or a black hole."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sockets: Callable[[], socket.socket] | None = None,
    ) -> None:
        super().__init__(upstream_host, upstream_port, host, port, sockets=sockets)
        if sockets is not None:
            raise NotApplicable("a UDP relay on an emulated path is not supported")
        self._downstream: asyncio.DatagramTransport | None = None
        self._mappings: dict[tuple[Any, ...], _Upstream] = {}
        self._numbers: dict[tuple[Any, ...], int] = {}
        self._holed = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Downstream(self), local_addr=(self.host, self._port)
        )
        self._downstream = transport
        self._port = int(transport.get_extra_info("sockname")[1])

    async def stop(self) -> None:
        for mapping in self._mappings.values():
            if mapping.transport is not None:
                mapping.transport.close()
        self._mappings.clear()
        if self._downstream is not None:
            self._downstream.close()
            self._downstream = None

    @property
    def connection_count(self) -> int:
        return len(self._mappings)

    @property
    def connection_ids(self) -> frozenset[int]:
        return frozenset(self._numbers[client] for client in self._mappings)

    def _from_client(self, data: bytes, client: tuple[Any, ...]) -> None:
        if self._holed:
            self._discard(data)
            return
        mapping = self._mappings.get(client)
        if mapping is None:
            mapping = self._mappings[client] = _Upstream(self, client)
            self._numbers[client] = len(self._numbers) + 1
            asyncio.get_running_loop().create_task(self._open(mapping, data))
            return
        if mapping.transport is not None:
            mapping.transport.sendto(data)

    async def _open(self, mapping: _Upstream, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: mapping, remote_addr=(self.upstream_host, self.upstream_port)
        )
        if mapping.transport is not None:
            mapping.transport.sendto(first)
        self._changed.set()

    def _from_server(self, data: bytes, client: tuple[Any, ...]) -> None:
        if self._holed or self._downstream is None:
            self._discard(data)
            return
        self._downstream.sendto(data, client)
        self._forwarded_bytes += len(data)
        self._changed.set()

    def _discard(self, data: bytes) -> None:
        self._discarded_bytes += len(data)
        self._changed.set()

    # -- faults -----------------------------------------------------------------------------

    def blackhole(self) -> None:
        """Drop every datagram, both ways, until :meth:`heal`."""
        super().blackhole()
        self._holed = True

    def heal(self) -> None:
        super().heal()
        self._holed = False

    def reset_peer(self) -> NoReturn:
        raise NotApplicable("no connection reset: UDP has no RST")

    def latency(self, ms: float, jitter_ms: float = 0.0) -> NoReturn:
        raise NotApplicable("the UDP relay adds no latency")

    def bandwidth(self, bytes_per_s: int) -> NoReturn:
        raise NotApplicable("the UDP relay does not shape bandwidth")

    def slicer(self, average_size: int, size_variation: int = 0, delay_us: int = 0) -> NoReturn:
        raise NotApplicable("datagrams cannot be sliced")

    def limit_data(self, nbytes: int) -> NoReturn:
        raise NotApplicable("the UDP relay does not cut connections")

    def down(self) -> NoReturn:
        raise NotApplicable("the UDP relay cannot refuse a connect")

    async def up(self) -> NoReturn:
        raise NotApplicable("the UDP relay cannot refuse a connect")
