"""WebTransport over HTTP/3 (QUIC, UDP) with aioquic: one unidirectional stream per session.

Server: an aioquic ``QuicServer`` on one UDP socket, an ``H3Connection`` with WebTransport
enabled per QUIC connection. A session opens with an extended CONNECT to
``/webtransport?epoch=E&since=SEQ`` (:mod:`transports.webtransport_wire` judges it); the
server answers 200, opens one unidirectional stream and writes the hub's samples on it as
NDJSON lines, a whole batch per write, and a ``{"heartbeat":NS}`` line whenever it was idle
for ``heartbeat_s`` (the tcp transport's lines, :mod:`transports.ndjson`). One session per
QUIC connection. Backpressure: the client grants its data stream credit as its reader takes
the data (aioquic alone would widen the window as data arrives, read or not), and a session's
pump, past ``send_buffer_bytes`` unacknowledged bytes, waits until half of them are
acknowledged; the hub cuts a subscriber that falls ``queue_size`` behind meanwhile.

TLS is part of QUIC: a certificate is required. Given ``certfile``/``keyfile`` (options) the
server uses them; without, it issues itself a throwaway ECDSA P-256 certificate valid 13 days
from this user's local CA (:mod:`transports.certs`) and prints its SHA-256 (what Chromium's
``serverCertificateHashes`` pins) and the CA's path on stderr. A client trusts ``cafile``
when given, else the local CA (if there is one) besides the usual CAs.

Refusals (the texts of :mod:`transports.rejections`): a CONNECT to another path gets 404,
another method 405, a CONNECT that is not WebTransport or a bad query 400, and one past the
connection limit 503. A session ended for cause (slow consumer, a client that sends on its
session, over ``max_message_bytes`` of inbound stream data on a connection) gets a
``CLOSE_WEBTRANSPORT_SESSION`` capsule and then a QUIC close (H3_REQUEST_REJECTED), both
saying why. A QUIC connection with no session within ``header_timeout_s`` is closed. QUIC
connections are capped at ``max_connections`` plus as many again (at least 64) still to send
their CONNECT: past that a newcomer is closed right after its handshake with
H3_EXCESSIVE_LOAD "server full".

Dead peers: QUIC's idle timeout is ``dead_after_s`` on both sides (aioquic's 60 s when None);
the client sends a QUIC PING every ``heartbeat_s``, the server its heartbeat lines, and the
client's reads have the shared deadline too. aioquic sends no stateless reset, so a client
of a server that died (SIGKILL) learns of it from these timers, not at once as over TCP.
``stop()`` closes every connection (H3_NO_ERROR, "server shutting down").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import certifi
from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, Setting
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    HandshakeCompleted,
    ProtocolNegotiated,
    QuicEvent,
    StreamDataReceived,
)
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from model.errors import (
    CertificateInvalid,
    ConnectionLost,
    FrameTooLarge,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample
from transports.certs import DEFAULT_HOSTS, certificate_sha256, local_authority, local_ca_file
from transports.contract import Features, Transport
from transports.deadline import ReadDeadline
from transports.hub import Hub, Subscription
from transports.ndjson import (
    LineSplitter,
    encode_heartbeat,
    encode_sample_lines,
    server_block,
)
from transports.options import Options
from transports.origins import OriginPolicy
from transports.quic_io import BurstReading
from transports.rejections import SHUTTING_DOWN, rejection, rejection_text
from transports.resume import ResumeToken
from transports.sample_stream import BatchedSampleStream
from transports.settings import Settings
from transports.sockets import url_host
from transports.webtransport_wire import (
    CapsuleReader,
    Refusal,
    accept_headers,
    check_response,
    close_capsule,
    connect_headers,
    judge_connect,
    refusal_headers,
    status_of,
)

__all__ = [
    "WEBTRANSPORT",
    "WebTransportOptions",
    "WebTransportServer",
    "connect",
    "keepalive_params",
]

# aioquic logs every failed handshake (a certificate refused, a garbage Initial) as a warning
# with its own connection id; the client and the bad-input figures say it once, with context.
logging.getLogger("quic").setLevel(logging.ERROR)

#: QUIC's idle timeout when ``dead_after_s`` is None: aioquic's own default.
DEFAULT_IDLE_TIMEOUT_S = 60.0
#: Unacknowledged bytes a session may hold when ``send_buffer_bytes`` is 0 (autotuning).
DEFAULT_UNACKED_BYTES = 1 << 20
#: Largest datagram frame either side accepts (Chromium wants datagrams enabled).
MAX_DATAGRAM_FRAME_BYTES = 65536
#: Flow-control window of the client's data stream: the server may send this much beyond
#: what the reader has taken (aioquic's initial window; see :class:`_ReaderPacedConnection`).
CLIENT_WINDOW_BYTES = 1 << 20
#: Longest wait for a closing connection's CONNECTION_CLOSE to go out (3 PTOs in aioquic).
CLOSE_WAIT_S = 1.0
#: Connections past a full house of sessions a server holds while they send their CONNECT.
PENDING_HEADROOM = 64
#: Kernel buffers of the UDP sockets: QUIC bursts a congestion window at a time.
UDP_BUFFER_BYTES = 4 << 20
#: Most bytes of a refused CONNECT's body the client reads.
REFUSAL_BODY_BYTES = 4096
#: QUIC error codes a server closes with for cause: the client takes them as a refusal.
_REFUSING = frozenset({ErrorCode.H3_REQUEST_REJECTED, ErrorCode.H3_EXCESSIVE_LOAD})
#: TLS alerts (QUIC CRYPTO_ERROR 0x100 + alert) that mean the certificate did not verify.
_CERTIFICATE_ALERTS = frozenset({42, 43, 44, 45, 46, 48})
_NO_APPLICATION_PROTOCOL_ALERT = 120


class WebTransportOptions(Options, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What only the webtransport transport needs: its TLS files."""

    #: The server's certificate (PEM, chain after it) and key; None: a throwaway one.
    certfile: str | None = None
    keyfile: str | None = None
    #: The CA a client verifies the server with; None: the local CA and the usual ones.
    cafile: str | None = None

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("give certfile and keyfile together, or neither")


def _idle_timeout(settings: Settings) -> float:
    return settings.dead_after_s if settings.dead_after_s is not None else DEFAULT_IDLE_TIMEOUT_S


def _unacked_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to a stream and not yet acknowledged.

    aioquic keeps them in the stream's sender buffer and has no public accessor for it
    (``QuicStreamSender._buffer_start`` moves on as ACKs arrive; aioquic 1.x).
    """
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return sender._buffer_stop - sender._buffer_start


def _udp_socket(host: str, port: int) -> socket.socket:
    """A bound UDP socket for ``host`` (its first address) and ``port`` (0: a free one).

    No SO_REUSEADDR: on UDP it would let a second server share the port silently.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# -- server ---------------------------------------------------------------------------------


class WebTransportServer:
    """An aioquic HTTP/3 server publishing the hub's samples to WebTransport sessions."""

    def __init__(
        self, hub: Hub, host: str, port: int, settings: Settings, options: Options
    ) -> None:
        if not isinstance(options, WebTransportOptions):
            raise TypeError(
                f"the webtransport server takes WebTransportOptions, got {type(options).__name__}"
            )
        self.hub, self.host, self._port, self.settings = hub, host, port, settings
        self.options = options
        #: Which pages may open a session (the one policy of every browser transport).
        self.origins = OriginPolicy.from_settings(settings)
        self._quic: _Listener | None = None
        self._connections: set[_ServerConnection] = set()
        #: SHA-256 of the certificate served (lowercase hex), once started.
        self.certificate_sha256: str | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def connection_cap(self) -> int:
        """QUIC connections held at most: a full house of sessions, and as many (at least
        :data:`PENDING_HEADROOM`) still to send their CONNECT."""
        limit = self.settings.max_connections
        return limit + max(limit, PENDING_HEADROOM)

    async def start(self) -> None:
        configuration = self._configuration()
        sock = _udp_socket(self.host, self._port)
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: self._quic_server(configuration), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._port = int(sock.getsockname()[1])

    def _quic_server(self, configuration: QuicConfiguration) -> _Listener:
        # What aioquic.asyncio.serve() builds, on a socket made here: the bound port (port 0)
        # is read back from it, and its buffers are sized for bursts.
        self._quic = _Listener(
            configuration=configuration,
            create_protocol=functools.partial(_ServerConnection, server=self),
        )
        return self._quic

    def _configuration(self) -> QuicConfiguration:
        configuration = QuicConfiguration(
            is_client=False,
            alpn_protocols=H3_ALPN,
            idle_timeout=_idle_timeout(self.settings),
            max_datagram_frame_size=MAX_DATAGRAM_FRAME_BYTES,
        )
        certfile, keyfile = self.options.certfile, self.options.keyfile
        if self.settings.tls is not None:  # --tls --certfile F --keyfile F, as on every server
            certfile, keyfile = self.settings.tls.certfile, self.settings.tls.keyfile
        if certfile is not None and keyfile is not None:
            try:
                configuration.load_cert_chain(certfile, keyfile)
            except OSError as exc:
                raise OSError(exc.errno, f"{exc.filename}: {exc.strerror}") from None
            except ValueError as exc:
                raise OSError(errno.EINVAL, f"cannot load {certfile}: {exc}") from None
            certificate = configuration.certificate
            if certificate is not None:
                self.certificate_sha256 = certificate_sha256(certificate)
            return configuration
        authority = local_authority()
        issued = authority.issue(_certificate_hosts(self.host))
        configuration.certificate = issued.certificate
        configuration.private_key = issued.private_key
        self.certificate_sha256 = issued.sha256
        print(
            f"webtransport: no certfile given, serving a throwaway ECDSA P-256 certificate "
            f"valid until {issued.not_after:%Y-%m-%d %H:%M} UTC, sha-256 {issued.sha256}, "
            f"issued by the local CA {authority.cafile} (clients of this user trust it; "
            f"others: --set cafile={authority.cafile})",
            file=sys.stderr,
            flush=True,
        )
        return configuration

    async def stop(self) -> None:
        quic, self._quic = self._quic, None
        if quic is None:
            return
        for connection in list(self._connections):
            connection.shut(ErrorCode.H3_NO_ERROR, SHUTTING_DOWN.label)
        # Closing sends each CONNECTION_CLOSE at once; the socket goes with the server, a
        # loop iteration later: wait for it, so the port can be bound again at once.
        quic.close()
        self._connections.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await quic.closed

    def _refused_full(self) -> TooManyConnections:
        return TooManyConnections(f"connection limit {self.settings.max_connections} reached")


def _certificate_hosts(host: str) -> tuple[str, ...]:
    """The names a throwaway certificate covers: this machine's loopback names, and the
    address served on when it is a particular one (an emulated path's, a LAN address)."""
    if host in DEFAULT_HOSTS or host in ("", "0.0.0.0", "::"):
        return DEFAULT_HOSTS
    return (*DEFAULT_HOSTS, host)


class _Listener(QuicServer):
    """aioquic's server protocol, saying when its socket is closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Session:
    """One WebTransport session: its CONNECT stream, its one data stream, its pump."""

    __slots__ = ("connect_stream", "connection", "ended", "pump", "stream_id", "subscription",
                 "writable")  # fmt: skip

    def __init__(
        self, connection: _ServerConnection, connect_stream: int, subscription: Subscription
    ) -> None:
        self.connection = connection
        self.connect_stream = connect_stream
        self.subscription = subscription
        self.ended = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.stream_id = connection.h3.create_webtransport_stream(
            connect_stream, is_unidirectional=True
        )
        self.pump = asyncio.create_task(self._pump())

    def unacked(self) -> int:
        return _unacked_bytes(self.connection.quic, self.stream_id)

    async def _pump(self) -> None:
        """Take a whole batch, write it in one go; wait for ACKs past the high-water mark."""
        connection = self.connection
        settings = connection.server.settings
        heartbeat_s = settings.heartbeat_s or None
        high_water = settings.send_buffer_bytes or DEFAULT_UNACKED_BYTES
        try:
            while not self.ended:
                batch = await self.subscription.next_batch(heartbeat_s)
                data = (
                    encode_sample_lines(batch) if batch else encode_heartbeat(time.monotonic_ns())
                )
                connection.quic.send_stream_data(self.stream_id, data)
                connection.transmit()
                if self.unacked() > high_water:
                    self.writable.clear()
                    await self.writable.wait()
        except SubscriberOverflow:
            pass  # the overflow callback has already ended the session

    def acked(self) -> None:
        """After a datagram came in: wake the pump once half its backlog is acknowledged."""
        if not self.writable.is_set():
            high_water = self.connection.server.settings.send_buffer_bytes or DEFAULT_UNACKED_BYTES
            if self.unacked() <= high_water // 2:
                self.writable.set()

    def end(self) -> None:
        """Leave the hub and stop the pump (idempotent); the connection says the rest."""
        if self.ended:
            return
        self.ended = True
        self.subscription.close()
        if self.pump is not asyncio.current_task():
            self.pump.cancel()


class _ServerConnection(QuicConnectionProtocol):
    """One QUIC connection to the server: its HTTP/3 layer, its one session, its limits."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: QuicStreamHandler | None = None,
        *,
        server: WebTransportServer,
    ) -> None:
        super().__init__(quic, stream_handler)
        self.server = server
        self.quic = quic
        self.h3: H3Connection = H3Connection(quic, enable_webtransport=True)
        self.session: _Session | None = None
        self._inbound = 0
        self._capsules = CapsuleReader(server.settings.max_message_bytes)
        self._closing = False
        server._connections.add(self)
        # Handshake and CONNECT within the header timeout, as every server's request head.
        self._deadline: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            server.settings.header_timeout_s, self._no_session_in_time
        )

    # -- what arrives ---------------------------------------------------------------------

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self.session is not None:
            self.session.acked()

    def quic_event_received(self, event: QuicEvent) -> None:
        # Not the base class's: it would copy every stream into a StreamReader of its own.
        if isinstance(event, ConnectionTerminated):
            self._terminated()
            return
        if isinstance(event, StreamDataReceived | DatagramFrameReceived):
            self._inbound += len(event.data)
            if self._inbound > self.server.settings.max_message_bytes:
                limit = self.server.settings.max_message_bytes
                self.end(FrameTooLarge(f"over {limit} bytes of inbound data on one connection"))
                return
        if isinstance(event, HandshakeCompleted):
            # Past the cap, said once the handshake lets the reason travel (an Initial
            # packet's close carries no reason).
            if len(self.server._connections) > self.server.connection_cap:
                self.shut(ErrorCode.H3_EXCESSIVE_LOAD, rejection_text(self.server._refused_full()))
            return
        if isinstance(event, ProtocolNegotiated):
            return
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        session = self.session
        if isinstance(event, HeadersReceived):
            if session is None or event.stream_id != session.connect_stream:
                self._request(event)
        elif isinstance(event, DataReceived):
            if session is not None and event.stream_id == session.connect_stream:
                self._from_client(event.data, event.stream_ended)
        elif isinstance(event, WebTransportStreamDataReceived | DatagramReceived):
            self.end(ProtocolError("the client sends nothing on its session"))

    def _from_client(self, data: bytes, ended: bool) -> None:
        """Capsules on the CONNECT stream: the client's close, or nothing at all."""
        try:
            for capsule in self._capsules.feed(data):
                if capsule.close_reason() is not None:
                    ended = True
        except FrameTooLarge as exc:
            self.end(exc)
            return
        if ended:  # the client closed its session: nobody to tell anything
            self.shut(ErrorCode.H3_NO_ERROR, "session closed by the client")

    def _request(self, event: HeadersReceived) -> None:
        verdict = judge_connect(event.headers, self.server.origins)
        if self.session is not None and not isinstance(verdict, Refusal):
            verdict = Refusal(400, rejection_text(ProtocolError("one session per connection")))
        if isinstance(verdict, Refusal):
            self._refuse(event.stream_id, verdict)
            return
        try:
            subscription = self.server.hub.subscribe(
                verdict, on_overflow=lambda reason: self.end(SubscriberOverflow(reason))
            )
        except TooManyConnections as exc:
            self._refuse(event.stream_id, Refusal(int(rejection(exc).http_status),
                                                  rejection_text(exc) + "\n"))  # fmt: skip
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.h3.send_headers(event.stream_id, accept_headers())
        self.session = _Session(self, event.stream_id, subscription)
        self.transmit()

    def _refuse(self, stream_id: int, refusal: Refusal) -> None:
        self.h3.send_headers(stream_id, refusal_headers(refusal))
        self.h3.send_data(stream_id, refusal.text.encode(), end_stream=True)
        self.transmit()

    # -- how it ends ----------------------------------------------------------------------

    def end(self, error: StreamError) -> None:
        """End the session for cause: a close capsule, then the QUIC close, both saying why."""
        if self._closing:
            return
        text = rejection_text(error)
        session = self.session
        if session is not None and not session.ended:
            code = int(rejection(error).http_status)
            with contextlib.suppress(Exception):  # a stream the peer already reset
                self.h3.send_data(session.connect_stream, close_capsule(code, text), True)
                self.transmit()
        self.shut(ErrorCode.H3_REQUEST_REJECTED, text)

    def shut(self, code: int, reason: str) -> None:
        """Close the QUIC connection (idempotent); the session ends with it."""
        if self._closing:
            return
        self._closing = True
        if self.session is not None:
            self.session.end()
        self.close(error_code=code, reason_phrase=reason)

    def _no_session_in_time(self) -> None:
        self._deadline = None
        if self.session is None:
            seconds = self.server.settings.header_timeout_s
            silent = PeerSilent(f"no WebTransport CONNECT within {seconds:g} s")
            self.shut(ErrorCode.H3_REQUEST_REJECTED, rejection_text(silent))

    def _terminated(self) -> None:
        self._closing = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.session is not None:
            self.session.end()
        self.server._connections.discard(self)


# -- client ---------------------------------------------------------------------------------


class _ClientConnection(BurstReading):
    """The client's QUIC connection: the CONNECT's answer, then the session's data stream
    (read a burst of datagrams at a time, :mod:`transports.quic_io`)."""

    def __init__(self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None):
        super().__init__(quic, stream_handler)
        self.h3 = H3Connection(quic, enable_webtransport=True)
        self.session_id: int | None = None
        self._status: int | None = None
        self._body = bytearray()
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._data_stream: int | None = None
        self._chunks: list[bytes] = []
        self._readable = asyncio.Event()
        self._capsules = CapsuleReader(REFUSAL_BODY_BYTES)
        self.handshake_done = False
        #: Resolved by the handshake or the connection's end, whichever comes first.
        self._settled = asyncio.get_running_loop().create_future()
        #: Why the stream ends (None: it goes on); raised once the buffered data is read.
        self.failure: StreamError | None = None
        self.terminated = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_done = True
            if not self._settled.done():
                self._settled.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            self._terminated(event)
            return
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived):
            if event.session_id == self.session_id:
                self._data(event.stream_id, event.data, event.stream_ended)
        elif isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            if self._status is None:
                self._status = status_of(event.headers)
                if event.stream_ended or self._status == 200:
                    self._answer()
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            if not self.answered.done():
                self._body += event.data[: REFUSAL_BODY_BYTES - len(self._body)]
                if event.stream_ended:
                    self._answer()
            else:
                self._session_data(event.data, event.stream_ended)

    def _answer(self) -> None:
        if not self.answered.done() and self._status is not None:
            self.answered.set_result(self._status)

    def refusal_body(self) -> bytes:
        return bytes(self._body)

    def speaks_webtransport(self) -> bool:
        settings = self.h3.received_settings or {}
        return bool(settings.get(Setting.ENABLE_WEBTRANSPORT))

    def _data(self, stream_id: int, data: bytes, ended: bool) -> None:
        if self._data_stream is None:
            self._data_stream = stream_id
            cast(_ReaderPacedConnection, self._quic).pace(stream_id)
        elif stream_id != self._data_stream:
            self._fail(ProtocolError("the server opened a second stream on the session"))
            return
        if data:
            self._chunks.append(data)
        if ended:
            self._fail(ConnectionLost("the server ended the stream"))
        self._readable.set()

    def _session_data(self, data: bytes, ended: bool) -> None:
        """Capsules from the server: its close says why."""
        try:
            for capsule in self._capsules.feed(data):
                reason = capsule.close_reason()
                if reason is not None:
                    self._fail(ServerRefused(f"server closed the session: {reason[1]}"))
        except FrameTooLarge as exc:
            self._fail(exc)
        if ended:
            self._fail(ConnectionLost("the server ended the session"))

    def _fail(self, error: StreamError) -> None:
        if self.failure is None:
            self.failure = error
        self._readable.set()

    def _terminated(self, event: ConnectionTerminated) -> None:
        self._fail(_termination_error(event, self.handshake_done))
        if not self._settled.done():
            self._settled.set_result(None)
        if not self.terminated.done():
            self.terminated.set_result(None)
        if not self.answered.done():
            self.answered.cancel()

    async def next_chunk(self) -> bytes:
        """What the data stream brought since the last call; raises once it ended."""
        while not self._chunks:
            if self.failure is not None:
                raise self.failure
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        quic = cast(_ReaderPacedConnection, self._quic)
        if self._data_stream is not None and quic.taken(self._data_stream, len(data)):
            self.transmit()  # the credit the reader just made, at once
        return data

    async def open_session(self, authority: str, token: ResumeToken | None) -> None:
        """Handshake, then the CONNECT and its answer; raises the StreamError saying why not."""
        self.transmit()
        # Not aioquic's wait_connected(): its waiter, failed by a close nobody awaits any
        # more, would be logged as an exception never retrieved.
        await asyncio.shield(self._settled)
        if not self.handshake_done:
            raise self.failure or ServerUnavailable("the QUIC handshake failed")
        stream_id = self._quic.get_next_available_stream_id()
        self.session_id = stream_id
        self.h3.send_headers(stream_id, connect_headers(authority, token))
        self.transmit()
        try:
            status = await self.answered
        except asyncio.CancelledError:
            if self.failure is None or not self.terminated.done():
                raise  # ours: the caller's timeout
            raise self.failure from None
        check_response(status, self.refusal_body(), self.speaks_webtransport())

    async def keep_alive(self, interval_s: float) -> None:
        """A QUIC PING every ``interval_s``: the server's idle timer learns we are here."""
        while True:
            await asyncio.sleep(interval_s)
            self._quic.send_ping(0)
            self.transmit()


class _ReaderPacedConnection(QuicConnection):
    """aioquic's connection, granting a paced stream credit as the reader takes its data.

    aioquic doubles a stream's receive window whenever half of it has arrived, whether the
    application read it or not, so a reader that stops reading never slows the sender: its
    buffer grows without bound. For the streams given to :meth:`pace`, the window here is
    what the reader has taken plus :data:`CLIENT_WINDOW_BYTES`, as a TCP receive buffer
    would be. (Overrides aioquic's ``_write_stream_limits``, as of aioquic 1.x.)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._taken: dict[int, int] = {}

    def pace(self, stream_id: int) -> None:
        self._taken.setdefault(stream_id, 0)

    def taken(self, stream_id: int, nbytes: int) -> bool:
        """Count bytes the reader took; True when the credit grew enough to be sent now."""
        self._taken[stream_id] = taken = self._taken.get(stream_id, 0) + nbytes
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        return taken + CLIENT_WINDOW_BYTES - stream.max_stream_data_local_sent >= (
            CLIENT_WINDOW_BYTES // 2
        )

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        stream_id = stream.stream_id
        taken = None if stream_id is None else self._taken.get(stream_id)
        if stream_id is None or taken is None:
            super()._write_stream_limits(builder, space, stream)
            return
        # Raised a quarter window at a time, not in every packet the client sends.
        wanted = taken + CLIENT_WINDOW_BYTES
        if wanted - stream.max_stream_data_local >= CLIENT_WINDOW_BYTES // 4:
            stream.max_stream_data_local = wanted
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


@asynccontextmanager
async def _dial(
    host: str, port: int, configuration: QuicConfiguration
) -> AsyncIterator[_ClientConnection]:
    """A client QUIC connection, not yet started (``open_session`` does the handshake).

    aioquic's own ``connect()``, with a :class:`_ReaderPacedConnection` and a bounded wait
    for the close on the way out.
    """
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[
        0
    ]
    quic = _ReaderPacedConnection(configuration=configuration)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER_BYTES)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _ClientConnection(quic), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    client = protocol
    try:
        client.connect(address, transmit=False)
        yield client
    finally:
        client.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT_S):
                await client.wait_closed()
        transport.close()


def _termination_error(event: ConnectionTerminated, handshake_done: bool) -> StreamError:
    """What a QUIC close means to the shared client."""
    reason = event.reason_phrase or f"code 0x{event.error_code:x}"
    crypto = event.frame_type is not None and 0x100 <= event.error_code <= 0x1FF
    if crypto:
        alert = event.error_code - 0x100
        if alert in _CERTIFICATE_ALERTS:
            return CertificateInvalid(f"the server's certificate does not verify: {reason}")
        if alert == _NO_APPLICATION_PROTOCOL_ALERT:
            return NotThisProtocol(f"the QUIC server speaks no HTTP/3: {reason}")
        return ServerUnavailable(f"the QUIC handshake failed: {reason}")
    if event.frame_type is None and event.error_code in _REFUSING:
        return ServerRefused(f"server closed the connection: {reason}")
    if reason == "Idle timeout":
        return PeerSilent(f"QUIC idle timeout: nothing received for {reason}")
    if not handshake_done:
        return ServerUnavailable(f"the QUIC handshake failed: {reason}")
    return ConnectionLost(f"connection closed: {reason}")


def _client_configuration(host: str, settings: Settings, options: WebTransportOptions) -> Any:
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        idle_timeout=_idle_timeout(settings),
        max_datagram_frame_size=MAX_DATAGRAM_FRAME_BYTES,
        max_stream_data=CLIENT_WINDOW_BYTES,
        server_name=host,
    )
    cafile = options.cafile
    if settings.tls is not None and settings.tls.cafile is not None:  # listen --tls --cafile F
        cafile = settings.tls.cafile
    if cafile is not None:
        configuration.load_verify_locations(cafile=cafile)
    elif (local := local_ca_file()) is not None:
        # The local CA besides the usual ones (aioquic loads certifi's only when given none).
        configuration.load_verify_locations(cafile=certifi.where(), cadata=local.read_bytes())
    return configuration


@asynccontextmanager
async def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings, options: Options
) -> AsyncIterator[AsyncIterator[Sample]]:
    if not isinstance(options, WebTransportOptions):
        raise TypeError(f"webtransport takes WebTransportOptions, got {type(options).__name__}")
    where = f"{url_host(host)}:{port}"
    try:
        configuration = _client_configuration(host, settings, options)
    except OSError as exc:
        raise CertificateInvalid(f"cannot load cafile {options.cafile}: {exc}") from exc
    async with contextlib.AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(_dial(host, port, configuration))
        except OSError as exc:
            raise ServerUnavailable(f"no webtransport server at {where}: {exc}") from exc
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await client.open_session(where, token)
        except TimeoutError:
            step = "CONNECT answered" if client.handshake_done else "QUIC handshake"
            raise ServerUnavailable(
                f"no webtransport server at {where}: no {step} within "
                f"{settings.connect_timeout_s:g} s"
            ) from None
        pings = (
            asyncio.create_task(client.keep_alive(settings.heartbeat_s))
            if settings.heartbeat_s
            else None
        )
        stream = BatchedSampleStream(_batches(client, settings))
        try:
            yield stream
        finally:
            await stream.aclose()
            if pings is not None:
                pings.cancel()


async def _batches(
    client: _ClientConnection, settings: Settings
) -> AsyncGenerator[list[Sample], None]:
    """The samples of each chunk of the session's stream, decoded together, one list per
    chunk that held any (the shared client takes a list per step, as from tcp)."""
    splitter = LineSplitter(settings.max_message_bytes)
    deadline = ReadDeadline(settings.dead_after_s)
    try:
        while True:
            chunk = await deadline.read(client.next_chunk())
            block = splitter.feed_block(chunk)
            if block is None:
                continue
            samples, error = server_block(block, "stream")
            if samples:
                yield samples
            if error is not None:
                raise error
    finally:
        deadline.close()


def keepalive_params(settings: Settings, options: Options) -> Mapping[str, float | None]:
    """Heartbeat lines from the server, QUIC PINGs from the client, QUIC's idle timeout."""
    heartbeat = settings.heartbeat_s or None
    return {
        "heartbeat_interval_s": heartbeat,
        "client_ping_interval_s": heartbeat,
        "quic_idle_timeout_s": _idle_timeout(settings),
        "read_timeout_s": settings.dead_after_s,
    }


WEBTRANSPORT = Transport(
    name="webtransport",
    summary="WebTransport over HTTP/3 (QUIC, UDP) with aioquic: a uni stream of NDJSON lines",
    default_port=8896,
    endpoint="https://{host}:{port}/webtransport",
    features=Features(
        resume=True,
        heartbeat=True,
        browser_native=True,
        bidirectional=True,
        push=True,
        transport_protocol="udp",
    ),
    serve=WebTransportServer,
    connect=connect,
    options=WebTransportOptions(),
    dependencies=("aioquic", "cryptography", "trustme"),
    modules=("transports.webtransport", "transports.webtransport_wire"),
    baseline="aioquic-webtransport",
    bad_input_family="quic",
    resume_token="CONNECT path ?epoch=E&since=SEQ",
    write_path=(
        "a task per session writing a batch into its QUIC stream (aioquic is sans-I/O: one "
        "transmit per batch)"
    ),
    keepalive="QUIC idle timeout = dead-after, client PINGs and server heartbeat lines",
    keepalive_params=keepalive_params,
)
