"""How a server tells a peer it is refused or cut, in each protocol, from the shared errors.

One table maps every error of :mod:`model.errors` a server raises to its answer: the HTTP
status, the WebSocket close code and the text that goes with them (the HTTP body, the close
reason, the tcp transport's final ``{"error": ...}`` line). Transports look their answers up
here rather than writing their own codes, so the same fault reads the same on every transport
and the bad-input scenario can compare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from model.errors import (
    BadResumeToken,
    FrameTooLarge,
    PeerSilent,
    ProtocolError,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)

__all__ = [
    "HEAD_TOO_LARGE",
    "SHUTTING_DOWN",
    "Rejection",
    "http_refusal",
    "raw_http_answer",
    "rejection",
    "rejection_text",
    "ws_close_reason",
]

#: RFC 6455 caps a close frame's reason at 123 bytes (125 minus the code).
_WS_REASON_BYTES = 123


@dataclass(frozen=True, slots=True)
class Rejection:
    """One kind of refusal, as each protocol says it."""

    http_status: HTTPStatus
    ws_close_code: int
    #: The start of every message about it, e.g. ``server full: connection limit 10 reached``.
    label: str


_TABLE: tuple[tuple[type[StreamError], Rejection], ...] = (
    # Most specific first: the first class the error is an instance of decides.
    (TooManyConnections, Rejection(HTTPStatus.SERVICE_UNAVAILABLE, 1013, "server full")),
    (BadResumeToken, Rejection(HTTPStatus.BAD_REQUEST, 1008, "bad resume token")),
    (FrameTooLarge, Rejection(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, 1009, "too large")),
    (ProtocolError, Rejection(HTTPStatus.BAD_REQUEST, 1008, "protocol error")),
    # The hub cut it: it fell too far behind. It may resume, so "try again later".
    (SubscriberOverflow, Rejection(HTTPStatus.SERVICE_UNAVAILABLE, 1008, "slow consumer")),
    (PeerSilent, Rejection(HTTPStatus.REQUEST_TIMEOUT, 1008, "peer silent")),
)
_OTHER = Rejection(HTTPStatus.INTERNAL_SERVER_ERROR, 1011, "server error")

#: Every connection's end when the server stops (1001: going away).
SHUTTING_DOWN = Rejection(HTTPStatus.SERVICE_UNAVAILABLE, 1001, "server shutting down")
#: A request head over the server's limit, answered before any request exists (no close code:
#: there is no WebSocket yet).
HEAD_TOO_LARGE = Rejection(
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, 1009, "request head too large"
)


def rejection(error: StreamError) -> Rejection:
    """How ``error`` is answered on every protocol."""
    for kind, answer in _TABLE:
        if isinstance(error, kind):
            return answer
    return _OTHER


def rejection_text(error: StreamError) -> str:
    """The message sent with the answer: its label, then the error's own words."""
    detail = str(error)
    label = rejection(error).label
    return f"{label}: {detail}" if detail else label


def http_refusal(error: StreamError) -> tuple[int, str]:
    """The HTTP status and plain-text body (one line) refusing a request for ``error``."""
    return int(rejection(error).http_status), rejection_text(error) + "\n"


def raw_http_answer(answer: Rejection, detail: str = "") -> bytes:
    """A whole ``Connection: close`` HTTP/1.1 response for a server that writes it itself."""
    body = (f"{answer.label}: {detail}" if detail else answer.label).encode() + b"\n"
    status = answer.http_status
    head = (
        f"HTTP/1.1 {int(status)} {status.phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def ws_close_reason(text: str) -> str:
    """``text`` cut to fit a WebSocket close frame, never inside a UTF-8 sequence."""
    return text.encode()[:_WS_REASON_BYTES].decode(errors="ignore")
