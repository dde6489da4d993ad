"""The hash a page pins: a WebTransport server's certificate, read off a verified handshake.

Chromium opens a WebTransport session to a server whose certificate no CA it knows signed only
when the page pins that certificate: ``new WebTransport(url, {serverCertificateHashes:
[{algorithm: "sha-256", value}]})``, the certificate ECDSA and valid 14 days at most. A
webtransport server started without a certificate issues itself one from the local CA
(:mod:`transports.certs`), anew at every start, so the harness learns the hash the way a page's
origin would serve it: :func:`server_certificate_sha256` completes a QUIC handshake with the
server, verifying its certificate exactly as the suite's own client does (the ``cafile``
option, ``Settings.tls``'s CA, else the local CA besides the usual ones), and hashes the
certificate it was shown. A certificate the Python client would refuse is refused here too
(:class:`CertificateUnavailable`), so the page never pins what the harness does not trust.

The handshake stops there: no HTTP/3 request, no session, nothing from the hub. Its socket is
connected, so a port nobody listens on (ICMP port unreachable) fails at once rather than at
the timeout.
"""

from __future__ import annotations

import asyncio
import base64
import socket

from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from cryptography import x509

from transports.certs import certificate_sha256
from transports.options import Options
from transports.settings import Settings
from transports.sockets import url_host
from transports.webtransport import WebTransportOptions
from transports.webtransport import _client_configuration as client_configuration

__all__ = ["CertificateUnavailable", "server_certificate_sha256", "sha256_base64"]


class CertificateUnavailable(RuntimeError):
    """No certificate to pin: no server answered, or its certificate does not verify."""


def sha256_base64(hex_digest: str) -> str:
    """A lowercase hex SHA-256 as the base64 a page's ``serverCertificateHashes`` decodes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class _Handshake(QuicConnectionProtocol):
    """A client QUIC connection that only says how its handshake ended."""

    def __init__(self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None):
        super().__init__(quic, stream_handler)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event: QuicEvent) -> None:
        super().quic_event_received(event)
        if self.done.done():
            return
        if isinstance(event, HandshakeCompleted):
            self.done.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            why = event.reason_phrase or f"QUIC error 0x{event.error_code:x}"
            self.done.set_exception(CertificateUnavailable(f"the handshake failed: {why}"))

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(CertificateUnavailable(f"no QUIC server: {exc}"))

    def certificate(self) -> x509.Certificate | None:
        """The certificate the server showed (verified), once the handshake completed.

        aioquic keeps it on its TLS context only (``Context._peer_certificate``, aioquic 1.x).
        """
        return self._quic.tls._peer_certificate


async def server_certificate_sha256(
    host: str, port: int, settings: Settings, options: Options, timeout_s: float
) -> str:
    """SHA-256 (lowercase hex) of the certificate the QUIC server at ``host:port`` shows,
    verified as :func:`transports.webtransport.connect` verifies it; raises
    :class:`CertificateUnavailable` saying why there is none within ``timeout_s``."""
    if not isinstance(options, WebTransportOptions):
        raise TypeError(f"webtransport takes WebTransportOptions, got {type(options).__name__}")
    where = f"{url_host(host)}:{port}"
    loop = asyncio.get_running_loop()
    try:
        configuration = client_configuration(host, settings, options)
        family, kind, proto, _, address = (
            await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        )[0]
    except OSError as exc:
        raise CertificateUnavailable(f"{where}: {exc}") from exc
    quic = QuicConnection(configuration=configuration)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.connect(address)  # connected: an ICMP port unreachable reaches error_received
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Handshake(quic), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    try:
        protocol.connect(address, transmit=True)
        try:
            async with asyncio.timeout(timeout_s):
                await protocol.done
        except TimeoutError:
            raise CertificateUnavailable(
                f"{where}: no QUIC handshake within {timeout_s:g} s"
            ) from None
        except CertificateUnavailable as exc:
            raise CertificateUnavailable(f"{where}: {exc}") from None
        certificate = protocol.certificate()
        if certificate is None:
            raise CertificateUnavailable(f"{where}: the server showed no certificate")
        return certificate_sha256(certificate)
    finally:
        if not protocol.done.done():
            protocol.done.cancel()  # the close's own event must not fail it unread
        protocol.close()  # sends the CONNECTION_CLOSE at once; no need to wait for draining
        transport.close()
