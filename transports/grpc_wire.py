"""The grpc transport's pure side: its messages, its channel arguments, its status codes.

The wire contract is ``transports/proto/transportbench.proto`` (one server-streaming RPC,
``transportbench.Stream/Subscribe(ResumeToken) returns (stream Sample)``); the modules protoc
generated from it sit beside it. This module converts between those messages and the model's
:class:`~model.sample.Sample` and :class:`~transports.resume.ResumeToken`, checking what a peer
sent as strictly as the JSON codec does; builds the grpc channel arguments both sides run with
from the shared settings; and maps errors to gRPC status codes and back:

- a server ends a call with :func:`refusal`: a status code and, as its details,
  :mod:`transports.rejections`' text for the error (``server full: ...``); a request that is
  no valid ``ResumeToken`` is one of those errors, read by :func:`read_request` (the server's
  deserializer, which never raises: grpc would log a traceback for a peer's bytes);
- a client sorts the status it got into the shared errors with :func:`stream_error`: a
  refusal in a server's words is :class:`~model.errors.ServerRefused`, an unanswered
  keepalive ping :class:`~model.errors.PeerSilent`, an inbound message over the limit
  :class:`~model.errors.FrameTooLarge`, a peer that is no gRPC server of this service
  :class:`~model.errors.NotThisProtocol`, nobody there (while connecting)
  :class:`~model.errors.ServerUnavailable`, and a stream that broke
  :class:`~model.errors.ConnectionLost`.

Nothing here does I/O; :mod:`transports.grpc_stream` is the server and the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from model.errors import (
    BadResumeToken,
    CertificateInvalid,
    ConnectionLost,
    FrameTooLarge,
    MalformedSample,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample, is_epoch
from transports.proto import transportbench_pb2 as pb
from transports.rejections import SHUTTING_DOWN, rejection, rejection_text
from transports.resume import ResumeToken
from transports.settings import Settings

__all__ = [
    "METHOD",
    "PATH",
    "SERVICE",
    "SHUTDOWN",
    "ChannelArgs",
    "Refusal",
    "Request",
    "channel_args",
    "read_request",
    "refusal",
    "sample_message",
    "sample_of",
    "server_args",
    "status_of",
    "stream_error",
    "token_message",
    "token_of",
]

_SUBSCRIBE = pb.DESCRIPTOR.services_by_name["Stream"].methods_by_name["Subscribe"]
#: ``transportbench.Stream``: the service's full name, as the .proto declares it.
SERVICE: str = _SUBSCRIBE.containing_service.full_name
#: ``Subscribe``.
METHOD: str = _SUBSCRIBE.name
#: ``/transportbench.Stream/Subscribe``: the HTTP/2 ``:path`` of every call.
PATH = f"/{SERVICE}/{METHOD}"

#: grpc channel arguments (``grpc.aio.server(options=...)``, ``insecure_channel(options=...)``).
ChannelArgs = list[tuple[str, int]]

#: The largest seq a resume token can name (an int64, like the token's ``since``).
_MAX_SEQ = 2**63 - 1


# -- messages ------------------------------------------------------------------------------------


def sample_message(sample: Sample) -> pb.Sample:
    return pb.Sample(epoch=sample.epoch, seq=sample.seq, value=sample.value, sent_ns=sample.sent_ns)


def sample_of(message: pb.Sample) -> Sample:
    """The model's sample for a received message; :class:`MalformedSample` for anything that
    is not one (an empty or non-hex epoch, a value other than 0 or 1, a seq past int64)."""
    epoch, seq, value = message.epoch, message.seq, message.value
    if value > 1 or seq > _MAX_SEQ or not is_epoch(epoch):
        raise MalformedSample(
            f"malformed sample: epoch={epoch[:80]!r} seq={seq} value={value} "
            "(an epoch of 1-64 lowercase hex digits, a value of 0 or 1)"
        )
    return Sample(epoch, seq, value, message.sent_ns)


def token_message(token: ResumeToken | None) -> pb.ResumeToken:
    """The request of a subscription: the empty message asks for live samples only."""
    if token is None:
        return pb.ResumeToken()
    return pb.ResumeToken(epoch=token.epoch, since=token.since)


def token_of(message: pb.ResumeToken) -> ResumeToken | None:
    """The token a request carries (None: live only); :class:`BadResumeToken` otherwise."""
    if not message.epoch:
        if message.since:
            raise BadResumeToken(f"since={message.since} without an epoch")
        return None
    return ResumeToken(message.epoch, message.since)


@dataclass(frozen=True, slots=True)
class Request:
    """A ``Subscribe`` request as the server read it: its token, or why it has none."""

    token: ResumeToken | None
    error: ProtocolError | None = None


def read_request(data: bytes) -> Request:
    """The server's request deserializer: never raises (grpc would log a traceback for a
    peer's bytes and answer UNKNOWN), a malformed request is a :class:`Request` with an error."""
    try:
        return Request(token_of(pb.ResumeToken.FromString(data)))
    except DecodeError as exc:
        return Request(None, ProtocolError(f"not a ResumeToken message: {exc}"))
    except BadResumeToken as exc:
        return Request(None, exc)


# -- channel arguments ---------------------------------------------------------------------------


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _keepalive(settings: Settings) -> ChannelArgs:
    """Pings every ``heartbeat_s``, the peer declared dead ``dead_after_s`` after a ping it
    did not answer; pinging also while no call is active and whatever data flows."""
    if not settings.heartbeat_s:
        return []
    args = [
        ("grpc.keepalive_time_ms", _ms(settings.heartbeat_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        # 0: no cap on pings sent while this side sends no data (a client never does).
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if settings.dead_after_s is not None:
        timeout_ms = _ms(settings.dead_after_s)
        # Both: grpc core times a ping it sent with the second (default one minute), and
        # the keepalive timeout alone did not end a connection whose pings went unanswered.
        args += [
            ("grpc.keepalive_timeout_ms", timeout_ms),
            ("grpc.http2.ping_timeout_ms", timeout_ms),
        ]
    return args


def server_args(settings: Settings) -> ChannelArgs:
    """The server's arguments: the shared limits, keepalive and header timeout."""
    args = [
        # One server per port: a second one must fail to bind, not share the port.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # A request's headers count against the same limit as a request head elsewhere.
        ("grpc.max_metadata_size", settings.max_message_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_message_bytes),
        # A connection must send its HTTP/2 preface and SETTINGS within the header timeout.
        ("grpc.server_handshake_timeout_ms", _ms(settings.header_timeout_s)),
        *_keepalive(settings),
    ]
    if settings.heartbeat_s:
        # Clients ping every heartbeat_s; the default (5 minutes) would count each of their
        # pings as abuse and answer GOAWAY "too_many_pings" after two. Half the interval
        # leaves room for timer jitter; a peer pinging faster still gets the GOAWAY.
        min_ping_ms = _ms(settings.heartbeat_s / 2)
        args.append(("grpc.http2.min_ping_interval_without_data_ms", min_ping_ms))
    return args


def channel_args(settings: Settings) -> ChannelArgs:
    """A client channel's arguments: its own connection, the shared limit and keepalive."""
    return [
        # By default channels with equal arguments share one connection (a global subchannel
        # pool): 1,000 clients in a process would be 1,000 streams on one socket.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # A stream that broke is the shared client's to resume, not grpc's to retry.
        ("grpc.enable_retries", 0),
        # Straight to the server, whatever http_proxy says (the other transports' clients
        # do not read it either).
        ("grpc.enable_http_proxy", 0),
        *_keepalive(settings),
    ]


# -- status codes --------------------------------------------------------------------------------

_STATUS: tuple[tuple[type[StreamError], grpc.StatusCode], ...] = (
    # Most specific first, as in transports.rejections.
    (TooManyConnections, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BadResumeToken, grpc.StatusCode.INVALID_ARGUMENT),
    (FrameTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    # Its queue bound, a resource of the server: it may resume.
    (SubscriberOverflow, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PeerSilent, grpc.StatusCode.UNAVAILABLE),
)


#: How a server ends a call: the status code and its details.
Refusal = tuple[grpc.StatusCode, str]
#: Every call's end when the server stops: UNAVAILABLE, as for any server going away.
SHUTDOWN: Refusal = (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN.label)


def status_of(error: StreamError) -> grpc.StatusCode:
    """The status code a server ends a call with for ``error``."""
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def refusal(error: StreamError) -> Refusal:
    """The status code and details (:func:`~transports.rejections.rejection_text`) for ``error``."""
    return status_of(error), rejection_text(error)


#: The start of every text this suite's servers refuse or cut a call with ("server full",
#: "slow consumer", ...), except a shutdown's, which is a lost connection like any other.
_REFUSALS = tuple(
    rejection(error).label + ":"
    for error in (
        TooManyConnections(),
        BadResumeToken(),
        FrameTooLarge(),
        ProtocolError(),
        SubscriberOverflow(),
        PeerSilent(),
        StreamError(),
    )
)
# What grpc core says when ...
#: ... a keepalive ping went unanswered for keepalive_timeout_ms;
_PING_TIMEOUT = ("keepalive watchdog timeout", "ping timeout", "keepalive timeout")
#: ... an inbound message exceeds grpc.max_receive_message_length;
_TOO_LARGE = "larger than max"
#: ... the peer answered the HTTP/2 preface with HTTP/1.x, or with bytes that are no HTTP/2
#: server's opening SETTINGS frame (a tcp server's error line).
_NOT_HTTP2 = ("http1.x server", "expected settings frame as the first frame")
#: How grpc's core words a server certificate it refused (its own TLS, not ``ssl``'s).
_CERTIFICATE = ("certificate_verify_failed", "certificate verify failed")


def stream_error(code: grpc.StatusCode, details: str, *, connecting: bool) -> StreamError:
    """The shared error for a call that ended with ``code`` and ``details``.

    ``connecting``: before the server's first answer (its response headers), when a transport
    failure means nobody is there rather than a lost stream.
    """
    text = f"{code.name}: {details}" if details else code.name
    lowered = details.lower()
    if details.startswith(_REFUSALS):
        return ServerRefused(text)
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return NotThisProtocol(f"a gRPC server without {PATH}: {text}")
    if any(marker in lowered for marker in _NOT_HTTP2):
        return NotThisProtocol(f"not a gRPC server: {text}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE in lowered:
        return FrameTooLarge(text)
    if any(marker in lowered for marker in _PING_TIMEOUT):
        return PeerSilent(text)
    if code is grpc.StatusCode.UNAVAILABLE and any(m in lowered for m in _CERTIFICATE):
        return CertificateInvalid(f"the server's certificate does not verify: {text}")
    if code is grpc.StatusCode.UNAVAILABLE:
        if details.startswith(SHUTTING_DOWN.label):
            return ConnectionLost(text)
        return ServerUnavailable(text) if connecting else ConnectionLost(text)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ConnectionLost(text)
    if code is grpc.StatusCode.INTERNAL:
        # A stream or frame grpc could not make sense of.
        return ProtocolError(text)
    # Any other status is a server's answer: it said no.
    return ServerRefused(text)
