"""The webtransport transport's HTTP/3 exchange, as pure functions (no sockets, no asyncio).

A session opens with an extended CONNECT (RFC 9220, draft-ietf-webtrans-http3):
``:method CONNECT``, ``:protocol webtransport``, ``:scheme https``, ``:path
/webtransport?epoch=E&since=SEQ``. The query follows the rule of every HTTP transport
(:func:`transports.resume.query_parameters`): unknown parameters are ignored, a known one
given twice or a malformed token is refused.

The server's verdict on a CONNECT (:func:`judge_connect`) is either the resume token or a
:class:`Refusal`: 404 for another path, 405 for another method, 400 for a CONNECT that is not
a WebTransport one or a bad query, 503 for a full server; the status and the plain-text body
come from :mod:`transports.rejections`, as on every transport. A session the server ends
for cause (a slow consumer, a client that sent what it must not) is closed with a
``CLOSE_WEBTRANSPORT_SESSION`` capsule on the CONNECT stream carrying the HTTP status of the
same rejection as its code and the rejection text as its message (:func:`close_capsule`);
:class:`CapsuleReader` reads capsules back, bounded.

The samples themselves travel on one server-initiated unidirectional stream per session, as
NDJSON lines exactly as on the tcp transport (:mod:`transports.ndjson`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl

from model.errors import FrameTooLarge, NotThisProtocol, ProtocolError, ServerRefused
from transports.origins import OriginPolicy
from transports.rejections import http_refusal
from transports.resume import ResumeToken, parse_query, query_parameters

__all__ = [
    "CLOSE_SESSION",
    "DRAFT_HEADER",
    "MAX_CLOSE_MESSAGE_BYTES",
    "PATH",
    "Capsule",
    "CapsuleReader",
    "Headers",
    "Refusal",
    "accept_headers",
    "check_response",
    "close_capsule",
    "connect_headers",
    "decode_varint",
    "encode_varint",
    "judge_connect",
    "refusal_headers",
    "status_of",
]

PATH = "/webtransport"
#: The draft a Chromium client speaks: the server must say it in its 200.
DRAFT_HEADER = (b"sec-webtransport-http3-draft", b"draft02")
#: Capsule type of CLOSE_WEBTRANSPORT_SESSION (draft-ietf-webtrans-http3, section 5).
CLOSE_SESSION = 0x2843
#: The draft caps a close message at 1024 bytes.
MAX_CLOSE_MESSAGE_BYTES = 1024

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """How the server answers a CONNECT it will not take: a status and a plain-text body."""

    status: int
    text: str


def _refusal(error: ProtocolError) -> Refusal:
    status, body = http_refusal(error)
    return Refusal(status, body)


def _pseudo(headers: Headers) -> dict[bytes, bytes]:
    return {k: v for k, v in headers if k.startswith(b":")}


def judge_connect(
    headers: Headers, origins: OriginPolicy | None = None
) -> ResumeToken | Refusal | None:
    """The resume token a request asks for (None: live samples only), or why it is refused.

    ``origins``: the server's origin policy (:mod:`transports.origins`), the one every
    browser transport applies: a browser's CONNECT carries its page's ``origin`` header, and
    a page the policy refuses gets 403, as on a WebSocket handshake (None: no check)."""
    pseudo = _pseudo(headers)
    target = pseudo.get(b":path", b"").decode(errors="replace")
    path, _, query = target.partition("?")
    if path != PATH:
        return Refusal(int(HTTPStatus.NOT_FOUND), f"not found: {path[:80]!r}; try {PATH}\n")
    method = pseudo.get(b":method", b"")
    if method != b"CONNECT":
        text = f"method not allowed: {method[:20]!r}; a WebTransport session is a CONNECT\n"
        return Refusal(int(HTTPStatus.METHOD_NOT_ALLOWED), text)
    protocol = pseudo.get(b":protocol")
    if protocol != b"webtransport":
        said = "none" if protocol is None else repr(protocol[:40])
        return _refusal(ProtocolError(f":protocol must be webtransport, got {said}"))
    if pseudo.get(b":scheme") != b"https":
        return _refusal(ProtocolError(":scheme must be https"))
    if origins is not None:
        raw = next((v for k, v in headers if k == b"origin"), None)
        origin = None if raw is None else raw.decode(errors="replace")
        own = pseudo.get(b":authority", b"").decode(errors="replace")
        if not origins.allows(origin, own):
            return Refusal(int(HTTPStatus.FORBIDDEN), origins.refusal(origin) + "\n")
    try:
        pairs = parse_qsl(query, keep_blank_values=True)
        return parse_query(query_parameters(pairs, ("epoch", "since")))
    except ProtocolError as exc:  # BadResumeToken included
        return _refusal(exc)


def connect_headers(authority: str, token: ResumeToken | None) -> list[tuple[bytes, bytes]]:
    """The extended CONNECT a client sends (inverse of :func:`judge_connect`)."""
    target = PATH if token is None else f"{PATH}?epoch={token.epoch}&since={token.since}"
    return [
        (b":method", b"CONNECT"),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", target.encode()),
        (b":protocol", b"webtransport"),
        (b"sec-webtransport-http3-draft02", b"1"),
    ]


def accept_headers() -> list[tuple[bytes, bytes]]:
    return [(b":status", b"200"), DRAFT_HEADER]


def refusal_headers(refusal: Refusal) -> list[tuple[bytes, bytes]]:
    return [
        (b":status", str(refusal.status).encode()),
        (b"content-type", b"text/plain; charset=utf-8"),
    ]


def status_of(headers: Headers) -> int:
    """The response's status (aioquic has checked it is three digits)."""
    return int(_pseudo(headers).get(b":status", b"0"))


def check_response(status: int, body: bytes, speaks_webtransport: bool) -> None:
    """Raise unless a CONNECT's answer opened a session.

    ``speaks_webtransport``: the server's SETTINGS enabled WebTransport. A refusal (4xx, 5xx)
    is :class:`ServerRefused` with the body's first line; a 2xx from a server that does not
    speak WebTransport, or any other status, is :class:`NotThisProtocol`.
    """
    if 200 <= status < 300 and speaks_webtransport:
        return
    said = body.decode(errors="replace").strip().split("\n", 1)[0][:300]
    if 400 <= status < 600:
        raise ServerRefused(f"HTTP {status}" + (f": {said}" if said else ""))
    if 200 <= status < 300:
        raise NotThisProtocol(f"HTTP {status} from an HTTP/3 server without WebTransport")
    raise NotThisProtocol(f"HTTP {status} to a WebTransport CONNECT")


def close_capsule(code: int, message: str) -> bytes:
    """A CLOSE_WEBTRANSPORT_SESSION capsule: a 32-bit code and a message of <= 1024 bytes."""
    text = message.encode()[:MAX_CLOSE_MESSAGE_BYTES].decode(errors="ignore").encode()
    payload = code.to_bytes(4, "big") + text
    return encode_varint(CLOSE_SESSION) + encode_varint(len(payload)) + payload


def encode_varint(value: int) -> bytes:
    """A QUIC variable-length integer (RFC 9000, section 16): 1, 2, 4 or 8 bytes."""
    for size, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * size - 2):
            return (value | prefix << (8 * size - 8)).to_bytes(size, "big")
    raise ValueError(f"{value} does not fit a QUIC varint")


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """The varint at ``offset`` and the offset after it; None if ``data`` ends first."""
    if offset >= len(data):
        return None
    size = 1 << (data[offset] >> 6)
    if offset + size > len(data):
        return None
    value = int.from_bytes(data[offset : offset + size], "big") & ((1 << (8 * size - 2)) - 1)
    return value, offset + size


@dataclass(frozen=True, slots=True)
class Capsule:
    type: int
    payload: bytes

    def close_reason(self) -> tuple[int, str] | None:
        """``(code, message)`` of a CLOSE_WEBTRANSPORT_SESSION capsule, else None."""
        if self.type != CLOSE_SESSION or len(self.payload) < 4:
            return None
        return int.from_bytes(self.payload[:4], "big"), self.payload[4:].decode(errors="replace")


class CapsuleReader:
    """Incremental capsule parser (type, length, value) with a bound on one capsule.

    ``feed`` returns the capsules the data completed; it raises :class:`FrameTooLarge` as
    soon as a capsule announces, or holds, more than ``max_bytes``.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buffer = b""

    def feed(self, data: bytes) -> list[Capsule]:
        self._buffer += data
        capsules: list[Capsule] = []
        while self._buffer:
            kind = decode_varint(self._buffer)
            length = kind and decode_varint(self._buffer, kind[1])
            if kind is None or length is None:
                break
            if length[0] > self._max:
                raise FrameTooLarge(f"capsule of {length[0]} bytes, over {self._max}")
            start, stop = length[1], length[1] + length[0]
            if len(self._buffer) < stop:
                break
            capsules.append(Capsule(kind[0], self._buffer[start:stop]))
            self._buffer = self._buffer[stop:]
        if len(self._buffer) > self._max + 16:
            raise FrameTooLarge(f"capsule over {self._max} bytes")
        return capsules
