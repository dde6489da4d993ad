"""The server's clock, over UDP: what a client on another host needs to read latencies.

Samples carry the server's ``time.monotonic_ns()`` (``Sample.sent_ns``), which means nothing
on another host. ``serve --clock-port PORT`` answers NTP-style probes so a client can estimate
the offset between its clock and the server's (:mod:`experiments.clock_offset`):

- request: exactly 8 bytes, the client's ``monotonic_ns`` at sending (unsigned 64-bit,
  big-endian; the server only echoes it, so it may be any 8 bytes);
- reply: 16 bytes, the request's 8 bytes followed by the server's ``time.monotonic_ns()`` when
  the request arrived (unsigned 64-bit, big-endian).

A datagram of any other length gets no reply, and a request gets exactly one reply of 16
bytes (44 on the wire with IPv4 and UDP headers, for the request's 36): a spoofed flood gains
next to nothing by bouncing off the endpoint.

The wire form is pure functions (:func:`encode_request`, :func:`reply_to`,
:func:`decode_reply`); :func:`start_clock_endpoint` is the thin asyncio layer around them.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import cast

__all__ = [
    "REPLY_SIZE",
    "REQUEST_SIZE",
    "ClockEndpoint",
    "decode_reply",
    "encode_request",
    "reply_to",
    "start_clock_endpoint",
]

_U64 = struct.Struct(">Q")
_REPLY = struct.Struct(">QQ")
REQUEST_SIZE = _U64.size
REPLY_SIZE = _REPLY.size


def encode_request(sent_ns: int) -> bytes:
    """The request a client sends at its ``monotonic_ns`` ``sent_ns`` (0 .. 2**64 - 1)."""
    return _U64.pack(sent_ns)


def reply_to(request: bytes, server_ns: int) -> bytes | None:
    """The server's answer to ``request`` received at ``server_ns``; None (no answer) to a
    datagram that is not exactly :data:`REQUEST_SIZE` bytes."""
    if len(request) != REQUEST_SIZE:
        return None
    return request + _U64.pack(server_ns)


def decode_reply(reply: bytes) -> tuple[int, int] | None:
    """``(echoed client ns, server ns)`` of a reply; None for anything not :data:`REPLY_SIZE`
    bytes long."""
    if len(reply) != REPLY_SIZE:
        return None
    echoed, server_ns = _REPLY.unpack(reply)
    return echoed, server_ns


class _Protocol(asyncio.DatagramProtocol):
    """Answers each well-formed request at once, stamped with its time of arrival."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not derive from DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        arrived_ns = time.monotonic_ns()  # first: the stamp is the arrival, not the answer
        reply = reply_to(data, arrived_ns)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error about an earlier reply (the prober went away): nothing to do.
        pass


class ClockEndpoint:
    """A running clock endpoint: the UDP ``port`` it answers on; :meth:`close` stops it."""

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self._transport = transport
        self.port: int = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        """Stop answering and release the port."""
        self._transport.close()


async def start_clock_endpoint(host: str, port: int) -> ClockEndpoint:
    """Answer clock probes on UDP ``host``:``port`` (0: an ephemeral port) in this event loop.

    Raises :class:`OSError` when the address cannot be bound (``EADDRINUSE``: in use).
    """
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Protocol, local_addr=(host, port))
    return ClockEndpoint(transport)
