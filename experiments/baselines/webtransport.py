"""Minimal aioquic WebTransport pusher: a uni stream of NDJSON lines, one write per batch.

The server is ``aioquic.asyncio.serve`` with an ``H3Connection`` (WebTransport enabled) per
connection: it accepts any CONNECT, opens one unidirectional stream and writes
:data:`~experiments.baselines.BATCH` samples per write, waiting for acknowledgements once 256 KiB
are unacknowledged (QUIC gives a writer no other backpressure). Its certificate is a throwaway
one from the local CA (:mod:`transports.certs`), which the reader trusts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.asyncio.server import serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent

from experiments.baselines import BATCH
from experiments.baselines.lines import decode_lines, encode_batch
from experiments.baselines.sink import Sink
from model.source import BernoulliSource
from transports.certs import local_authority
from transports.quic_io import BurstReading

__all__ = ["read", "start_server"]

#: Unacknowledged bytes the pusher lets pile up before it waits for ACKs (the transport's
#: default bound, ``Settings.send_buffer_bytes``).
UNACKED_BYTES = 256 * 1024


class _Pusher(QuicConnectionProtocol):
    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: QuicStreamHandler | None = None,
        *,
        source: BernoulliSource,
        epoch: str,
    ) -> None:
        super().__init__(quic, stream_handler)
        self.h3 = H3Connection(quic, enable_webtransport=True)
        self.source, self.epoch = source, epoch
        self.acked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and self.task is None:
                self.h3.send_headers(h3_event.stream_id, [(b":status", b"200")])
                stream_id = self.h3.create_webtransport_stream(h3_event.stream_id, True)
                self.task = asyncio.create_task(self._push(stream_id))

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        self.acked.set()

    def _unacked(self, stream_id: int) -> int:
        sender = self._quic._streams[stream_id].sender
        return sender._buffer_stop - sender._buffer_start

    async def _push(self, stream_id: int) -> None:
        seq = 0
        while True:
            now = time.monotonic_ns()
            self._quic.send_stream_data(
                stream_id, encode_batch(self.source, self.epoch, seq, seq + BATCH, now)
            )
            seq += BATCH
            self.transmit()
            while self._unacked(stream_id) > UNACKED_BYTES:
                self.acked.clear()
                await self.acked.wait()


async def start_server(
    host: str, port: int, source: BernoulliSource, epoch: str
) -> tuple[int, Callable[[], Awaitable[None]]]:
    issued = local_authority().issue()
    configuration = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    configuration.certificate = issued.certificate
    configuration.private_key = issued.private_key

    def pusher(quic: QuicConnection, stream_handler: QuicStreamHandler | None = None) -> _Pusher:
        return _Pusher(quic, stream_handler, source=source, epoch=epoch)

    server = await serve(host, port, configuration=configuration, create_protocol=pusher)
    assert server._transport is not None
    bound = int(server._transport.get_extra_info("sockname")[1])

    async def stop() -> None:
        server.close()

    return bound, stop


class _Reader(BurstReading):
    """Reads a burst of datagrams at a time and decodes what the burst brought together, as
    the transport's client does (:mod:`transports.quic_io`), so the two compare like with
    like."""

    def __init__(self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None):
        super().__init__(quic, stream_handler)
        self.h3 = H3Connection(quic, enable_webtransport=True)
        self.sink: Sink | None = None
        self.buffer = b""
        self.arrived: list[bytes] = []
        self.ended = asyncio.Event()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self.arrived and self.sink is not None:
            *lines, self.buffer = b"".join([self.buffer, *self.arrived]).split(b"\n")
            self.arrived.clear()
            if lines:
                self.sink.take_batch(decode_lines(lines))

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived) and self.sink is not None:
            self.arrived.append(event.data)
            if event.stream_ended:
                self.ended.set()


async def read(host: str, port: int, epoch: str, sink: Sink) -> None:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    configuration.load_verify_locations(cafile=str(local_authority().cafile))
    async with connect(
        host, port, configuration=configuration, create_protocol=_Reader
    ) as protocol:
        reader = cast(_Reader, protocol)
        reader.sink = sink
        stream_id = reader._quic.get_next_available_stream_id()
        reader.h3.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":scheme", b"https"),
                (b":authority", f"{host}:{port}".encode()),
                (b":path", b"/webtransport"),
                (b":protocol", b"webtransport"),
            ],
        )
        reader.transmit()
        ended = asyncio.ensure_future(reader.ended.wait())
        closed = asyncio.ensure_future(reader.wait_closed())
        try:
            await asyncio.wait({ended, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            closed.cancel()
