"""What the cleartext start of a TLS connection says about resumption, read off the wire (pure).

A relay between client and server sees each side's first handshake messages in the clear
(RFC 8446 §4.1, RFC 5246 §7.4.1): the client's ClientHello and the server's ServerHello. They
say whether a session was offered and whether the server took it, whatever library made the
connection (Python's ``ssl``, grpc's BoringSSL):

- offered: the ClientHello carries ``pre_shared_key`` (TLS 1.3 resumption) or a non-empty
  ``session_ticket`` extension (a TLS 1.2 ticket, RFC 5077);
- resumed: under TLS 1.3 the ServerHello carries ``pre_shared_key`` (the server accepted a
  PSK: no certificate follows); under TLS 1.2 it echoes the client's non-empty session id
  (an abbreviated handshake).

Only plaintext handshake records are read: parsing stops at the first ChangeCipherSpec,
alert or application-data record (what follows is encrypted). A HelloRetryRequest (a server
asking for another key share; the clients here all offer x25519, which every server takes)
is skipped in favour of the ServerHello after it when that is still in the clear.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ClientHello", "ServerHello", "client_hello", "resumed", "server_hello"]

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_HELLO = 2
_SESSION_TICKET = 35
_PRE_SHARED_KEY = 41
_SUPPORTED_VERSIONS = 43
_TLS13 = 0x0304
#: The ServerHello ``random`` that marks a HelloRetryRequest (RFC 8446 §4.1.3).
_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
_VERSIONS = {0x0304: "TLSv1.3", 0x0303: "TLSv1.2", 0x0302: "TLSv1.1", 0x0301: "TLSv1"}


@dataclass(frozen=True, slots=True)
class ClientHello:
    session_id: bytes
    #: TLS 1.3: a PSK (a resumption ticket) is offered.
    offers_psk: bool
    #: TLS 1.2: a session ticket is offered.
    offers_ticket: bool

    @property
    def offers_session(self) -> bool:
        return self.offers_psk or self.offers_ticket


@dataclass(frozen=True, slots=True)
class ServerHello:
    session_id: bytes
    #: ``TLSv1.3``, ``TLSv1.2``, ...
    version: str
    #: TLS 1.3: the server accepted the client's PSK.
    accepts_psk: bool


def _handshake_messages(stream: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each complete handshake message in the plaintext records at the
    start of ``stream``."""
    data = bytearray()
    offset = 0
    while offset + 5 <= len(stream):
        kind = stream[offset]
        length = int.from_bytes(stream[offset + 3 : offset + 5], "big")
        if kind != _HANDSHAKE or offset + 5 + length > len(stream):
            break
        data += stream[offset + 5 : offset + 5 + length]
        offset += 5 + length
    at = 0
    while at + 4 <= len(data):
        size = int.from_bytes(data[at + 1 : at + 4], "big")
        if at + 4 + size > len(data):
            break
        yield data[at], bytes(data[at + 4 : at + 4 + size])
        at += 4 + size


class _Reader:
    """Big-endian fields of one message body; IndexError (as ValueError) when it is short."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.body):
            raise ValueError("truncated hello")
        out = self.body[self.at : self.at + n]
        self.at += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    def extensions(self) -> dict[int, bytes]:
        if self.at == len(self.body):
            return {}
        block = _Reader(self.vector(2))
        out: dict[int, bytes] = {}
        while block.at < len(block.body):
            kind = block.number(2)
            out[kind] = block.vector(2)
        return out


def _parse_client(body: bytes) -> ClientHello:
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    session_id = r.vector(1)
    r.vector(2)  # cipher suites
    r.vector(1)  # compression methods
    ext = r.extensions()
    return ClientHello(
        session_id=session_id,
        offers_psk=_PRE_SHARED_KEY in ext,
        offers_ticket=bool(ext.get(_SESSION_TICKET)),
    )


def _parse_server(body: bytes) -> tuple[ServerHello, bool]:
    """The ServerHello and whether it is a HelloRetryRequest."""
    r = _Reader(body)
    legacy = r.number(2)
    random = r.take(32)
    session_id = r.vector(1)
    r.take(2 + 1)  # cipher suite, compression method
    ext = r.extensions()
    chosen = ext.get(_SUPPORTED_VERSIONS)
    version = int.from_bytes(chosen, "big") if chosen and len(chosen) == 2 else legacy
    hello = ServerHello(
        session_id=session_id,
        version=_VERSIONS.get(version, hex(version)),
        accepts_psk=version == _TLS13 and _PRE_SHARED_KEY in ext,
    )
    return hello, random == _RETRY_RANDOM


def client_hello(stream: bytes) -> ClientHello | None:
    """The (last) ClientHello at the start of the client's bytes (None: not complete yet, or
    not TLS)."""
    found = None
    for kind, body in _handshake_messages(stream):
        if kind == _CLIENT_HELLO:
            try:
                found = _parse_client(body)
            except ValueError:
                return None
    return found


def server_hello(stream: bytes) -> ServerHello | None:
    """The ServerHello (not a retry request) at the start of the server's bytes (None: not
    complete yet, or not TLS)."""
    for kind, body in _handshake_messages(stream):
        if kind == _SERVER_HELLO:
            try:
                hello, retry = _parse_server(body)
            except ValueError:
                return None
            if not retry:
                return hello
    return None


def resumed(client: ClientHello | None, server: ServerHello | None) -> bool:
    """Whether the handshake these hellos began resumed a session."""
    if server is None:
        return False
    if server.version == "TLSv1.3":
        return server.accepts_psk
    return client is not None and bool(client.session_id) and client.session_id == server.session_id
