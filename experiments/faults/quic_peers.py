"""Hostile peers over UDP and QUIC, for a transport whose bad-input family is ``quic``.

The TCP peers of :mod:`experiments.faults.hostile` open a stream and write bytes; a QUIC
server sees none of that. These peers are real QUIC clients (aioquic) that complete the
handshake, trusting this user's local CA (:mod:`transports.certs`), then send what a normal
client would not, and say what came back in the words :func:`~experiments.faults.hostile.
describe_answer` uses (``HTTP/3 404; not found: ...; closed``, so ``is_refusal`` reads a 503
the same way), or a QUIC close with its code and reason:

- :func:`datagrams`: datagrams as given (:func:`garbage_datagrams`: random ones, small and
  Initial-sized), no handshake at all;
- :func:`h3_exchange`: a handshake, then one request with the given headers (a CONNECT with
  a bad path, token or protocol, a plain GET) and optionally a body;
- :func:`idle_connections`: handshakes that send no request, held open;
- :func:`handshake_ok`: whether a QUIC handshake completes (is the server alive?).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent

from model.errors import FrameTooLarge
from transports.certs import local_ca_file
from transports.webtransport_wire import CapsuleReader

__all__ = [
    "HANDSHAKES_AT_ONCE",
    "Headers",
    "connect_request",
    "datagrams",
    "garbage_datagrams",
    "h3_exchange",
    "handshake_ok",
    "idle_connections",
]

Headers = Sequence[tuple[bytes, bytes]]
#: QUIC handshakes a peer group runs at once.
HANDSHAKES_AT_ONCE = 8
#: Body bytes of an answer kept for its description.
_BODY_BYTES = 512


class _Peer(QuicConnectionProtocol):
    """A QUIC client that records the first answer it gets and how the connection ended."""

    def __init__(self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None):
        super().__init__(quic, stream_handler)
        self.h3 = H3Connection(quic, enable_webtransport=True)
        self.handshake = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.status: bytes | None = None
        self.body = b""
        self.ended: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted) and not self.handshake.done():
            self.handshake.set_result(None)
        if isinstance(event, ConnectionTerminated):
            self.ended = event
            for waiter in (self.handshake, self.done):
                if not waiter.done():
                    waiter.set_result(None)
            return
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and self.status is None:
            self.status = dict(event.headers).get(b":status", b"?")
            if event.stream_ended and not self.done.done():
                self.done.set_result(None)
        elif isinstance(event, DataReceived):
            self.body = (self.body + event.data)[:_BODY_BYTES]
            if event.stream_ended and not self.done.done():
                self.done.set_result(None)


def _configuration() -> QuicConfiguration:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    cafile = local_ca_file()
    if cafile is not None:
        configuration.load_verify_locations(cafile=str(cafile))
    return configuration


@asynccontextmanager
async def _dial(host: str, port: int) -> AsyncIterator[_Peer]:
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[
        0
    ]
    configuration = _configuration()
    configuration.server_name = host
    quic = QuicConnection(configuration=configuration)
    sock = socket.socket(family, kind, proto)
    try:
        transport, protocol = await loop.create_datagram_endpoint(lambda: _Peer(quic), sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        protocol.connect(address)
        yield protocol
    finally:
        protocol.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await protocol.wait_closed()
        transport.close()


def _closed(peer: _Peer) -> str:
    close = peer.ended
    if close is None:
        return ""
    return f"QUIC close 0x{close.error_code:x} {close.reason_phrase[:120]!r}"


def connect_request(host: str, port: int, target: str, protocol: bytes | None) -> Headers:
    """An extended CONNECT to ``target`` (path and query) with ``:protocol`` (None: left out)."""
    headers = [
        (b":method", b"CONNECT"),
        (b":scheme", b"https"),
        (b":authority", f"{host}:{port}".encode()),
        (b":path", target.encode()),
    ]
    if protocol is not None:
        headers.append((b":protocol", protocol))
    return headers


async def h3_exchange(
    host: str, port: int, headers: Headers, timeout_s: float, body: bytes = b""
) -> str:
    """Handshake, send one request (``headers``, then ``body`` if any; no headers: nothing at
    all), describe the answer."""
    async with _dial(host, port) as peer:
        try:
            async with asyncio.timeout(timeout_s):
                await peer.handshake
        except TimeoutError:
            return f"no QUIC handshake within {timeout_s:g} s"
        if peer.ended is not None:
            return f"handshake refused: {_closed(peer)}"
        if headers:  # none: a connection that asks for nothing
            stream_id = peer._quic.get_next_available_stream_id()
            peer.h3.send_headers(stream_id, list(headers))
            if body:
                peer.h3.send_data(stream_id, body, end_stream=False)
            peer.transmit()
        ending = "left open"
        try:
            async with asyncio.timeout(timeout_s):
                await peer.done
                if peer.ended is None:
                    # Answered: does the server also close the connection?
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(0.5, timeout_s)):
                            await peer.wait_closed()
        except TimeoutError:
            ending = f"left open after {timeout_s:g} s"
        if peer.ended is not None:
            ending = _closed(peer)
    if peer.status is None:
        return ending
    return f"HTTP/3 {peer.status.decode(errors='replace')}; {_said(peer.body)}; {ending}"


def _said(body: bytes) -> str:
    """A refusal's first line, or the reason of a session close capsule."""
    with contextlib.suppress(FrameTooLarge):
        for capsule in CapsuleReader(len(body) + 1).feed(body):
            reason = capsule.close_reason()
            if reason is not None:
                return f"session closed {reason[0]} {reason[1][:120]!r}"
    return body.decode(errors="replace").strip().split("\n", 1)[0][:120]


async def handshake_ok(host: str, port: int, timeout_s: float) -> bool:
    """Whether a QUIC handshake with the server completes within ``timeout_s``."""
    try:
        async with _dial(host, port) as peer, asyncio.timeout(timeout_s):
            await peer.handshake
            return peer.ended is None
    except (OSError, TimeoutError):
        return False


async def datagrams(host: str, port: int, payloads: Sequence[bytes], timeout_s: float) -> str:
    """Send each payload as one datagram, then wait ``timeout_s`` for anything back."""
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class _Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append(data)

    transport, _ = await loop.create_datagram_endpoint(_Sink, remote_addr=(host, port))
    try:
        for payload in payloads:
            transport.sendto(payload)
        await asyncio.sleep(timeout_s)  # the answer window itself: whatever comes back
    finally:
        transport.close()
    sent = sum(map(len, payloads))
    back = f"{len(got)} datagrams back" if got else "nothing back"
    return f"{len(payloads)} datagrams ({sent} bytes) sent: {back}"


def garbage_datagrams(count: int = 50) -> list[bytes]:
    """Random datagrams, half of them Initial-sized with a long-header first byte and QUIC
    version 1 (a server parses those far enough to try to decrypt them)."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        if i % 2:
            out.append(rng.randbytes(rng.choice((1, 40, 600))))
        else:
            data = rng.randbytes(1200 + rng.randrange(200))
            out.append(bytes([0xC0 | data[0] & 0x0F]) + b"\x00\x00\x00\x01" + data[5:])
    return out


async def idle_connections(
    host: str, port: int, count: int, timeout_s: float
) -> tuple[list[contextlib.AsyncExitStack], int]:
    """``count`` QUIC connections that complete the handshake and send no request, left
    open: their exit stacks (the caller closes them) and how many did not get through."""
    stacks: list[contextlib.AsyncExitStack] = []
    failed = 0
    # A few handshakes at a time: each costs both sides milliseconds of CPU, and all at once
    # they would time each other out.
    slots = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def one() -> None:
        nonlocal failed
        stack = contextlib.AsyncExitStack()
        try:
            await slots.acquire()
            peer = await stack.enter_async_context(_dial(host, port))
            async with asyncio.timeout(timeout_s):
                await peer.handshake
            if peer.ended is not None:
                raise ConnectionError(_closed(peer))
        except (OSError, TimeoutError):
            failed += 1
            await stack.aclose()
            return
        finally:
            slots.release()
        stacks.append(stack)

    await asyncio.gather(*(one() for _ in range(count)))
    return stacks, failed
