"""What every WebSocket transport agrees on, whatever its library (pure: no I/O).

All WebSocket transports serve the same endpoint, so any WebSocket client reads any WebSocket
server (``tests/test_ws_interop.py`` checks every pair):

- the path ``/websocket/``; the resume token in the query, ``?epoch=E&since=SEQ``, read by
  the rule of every HTTP transport (:func:`~transports.resume.query_parameters`: unknown
  parameters ignored, a known one given twice refused);
- one wire-form sample per text message, server to client; the client sends nothing but
  control frames (pings, pongs, its close);
- refusals as close codes after the upgrade, from :mod:`transports.rejections`: 1008 for a
  bad token, a message from the client or a subscriber cut for falling behind, 1013 when the
  server is full, 1001 when it shuts down;
- on the client, a close with a code of its own is the server saying no
  (:class:`~model.errors.ServerRefused`); a plain or abnormal close is a lost connection.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from model.errors import ConnectionLost, FrameTooLarge, ProtocolError, ServerRefused, StreamError
from transports.rejections import rejection, rejection_text, ws_close_reason
from transports.resume import ResumeToken, parse_query, query_parameters
from transports.sockets import url_host

__all__ = [
    "MESSAGE_TOO_BIG",
    "PATH",
    "PLAIN_CLOSES",
    "UNEXPECTED_MESSAGE",
    "close_error",
    "refusal",
    "token_of_query",
    "ws_url",
]

PATH = "/websocket/"
#: RFC 6455 7.4.1: a message too big to process.
MESSAGE_TOO_BIG = 1009
#: What a server answers to a message from its client (the endpoint only sends).
UNEXPECTED_MESSAGE = "unexpected message: this endpoint only sends"
#: Close codes that refuse nothing: none (the TCP connection just ended), normal, going away
#: (a server stopping), no status, abnormal.
PLAIN_CLOSES = frozenset({None, 1000, 1001, 1005, 1006})
#: Codes a client sends when it is the server that broke the protocol (1002 protocol error,
#: 1007 invalid payload): the server's fault, not a lost connection.
_CLIENT_SAW_VIOLATION = frozenset({1002, 1007})


def ws_url(host: str, port: int, token: ResumeToken | None, tls: bool = False) -> str:
    """The endpoint's URL (``wss`` under TLS), carrying ``token`` when there is one."""
    url = f"{'wss' if tls else 'ws'}://{url_host(host)}:{port}{PATH}"
    if token is not None:
        url += f"?epoch={token.epoch}&since={token.since}"
    return url


def token_of_query(query: str) -> ResumeToken | None:
    """The resume token in a request's raw query string (``epoch=E&since=SEQ``).

    Verbatim, as every transport reads it (``" 7"`` is no seq). Raises
    :class:`~model.errors.BadResumeToken` or :class:`~model.errors.ProtocolError`.
    """
    pairs = parse_qsl(query, keep_blank_values=True)
    return parse_query(query_parameters(pairs, ("epoch", "since")))


def refusal(error: StreamError) -> tuple[int, str]:
    """The close code and reason (cut to fit a close frame) a server refuses ``error`` with."""
    return rejection(error).ws_close_code, ws_close_reason(rejection_text(error))


def close_error(received: int | None, reason: str | None, sent: int | None = None) -> StreamError:
    """What a client's connection ending means.

    ``received`` is the code in the server's close frame (None: none came), ``sent`` the one
    the client's own library closed with, if it closed first (a message over the size limit,
    the server breaking the protocol).
    """
    text = f"closed (code {received}, reason {reason or ''!r})"
    if received not in PLAIN_CLOSES:
        return ServerRefused(text)
    if sent == MESSAGE_TOO_BIG:
        return FrameTooLarge(f"a message over the size limit (the client closed with {sent})")
    if sent in _CLIENT_SAW_VIOLATION:
        return ProtocolError(f"the server broke the protocol (the client closed with {sent})")
    return ConnectionLost(text)
