"""The one exception tree of the suite.

Every error the suite raises on purpose is a :class:`StreamError`; library exceptions are
converted at the boundary with ``raise ... from``::

    StreamError
    ├── ProtocolError            the peer sent something this suite will not accept
    │   ├── MalformedSample      a payload that is not exactly one wire-form sample
    │   ├── FrameTooLarge        a message or line over the size limit
    │   ├── BadResumeToken       a resume token (query, header, hello) that does not parse
    │   ├── NotThisProtocol      (client) the peer speaks something else: a 200 to a WebSocket
    │   │                        upgrade, another Content-Type, an HTTP answer on the tcp port,
    │   │                        a first line that is none of ours, a compressed body
    │   └── ServerRefused        (client) a server answered and said no: HTTP 4xx/5xx,
    │                            WebSocket close 1008/1013/..., a tcp ``{"error":...}`` line
    ├── ConnectionLost           an established connection ended (closed, reset, timed out)
    │   └── PeerSilent           nothing arrived for longer than the dead-peer timeout
    ├── ServerUnavailable        (client) nobody there: connection refused, unreachable, or no
    │                            answer to the connect or handshake in time
    ├── CertificateInvalid       (client) the server's TLS certificate did not verify
    ├── WaitExpired              (client) no sample within the caller's wait; raised from the
    │                            last failure, which says why
    ├── SubscriberOverflow       (server side) a subscriber fell too far behind and was cut
    └── TooManyConnections       (server side) the connection limit is reached

The shared client (:mod:`transports.client`) sorts every failure of a connection attempt by
these classes into one of a few kinds (nobody there, refused, not this protocol, certificate),
so ``listen`` can say which, once, and give up on the one that no retry can fix.
"""

from __future__ import annotations

__all__ = [
    "BadResumeToken",
    "CertificateInvalid",
    "ConnectionLost",
    "FrameTooLarge",
    "MalformedSample",
    "NotThisProtocol",
    "PeerSilent",
    "ProtocolError",
    "ServerRefused",
    "ServerUnavailable",
    "StreamError",
    "SubscriberOverflow",
    "TooManyConnections",
    "WaitExpired",
]


class StreamError(Exception):
    """Base class of every error the suite raises on purpose."""


class ProtocolError(StreamError):
    """The peer sent something this suite will not accept."""


class MalformedSample(ProtocolError):
    """A payload that is not exactly one wire-form sample."""


class FrameTooLarge(ProtocolError):
    """A message or line exceeds the configured size limit."""


class BadResumeToken(ProtocolError):
    """A resume token that does not parse."""


class NotThisProtocol(ProtocolError):
    """The peer does not speak this transport's protocol: retrying will not change that."""


class ServerRefused(ProtocolError):
    """A server answered the connection and refused it (or cut it), saying why."""


class ConnectionLost(StreamError):
    """An established connection ended: closed, reset or timed out."""


class PeerSilent(ConnectionLost):
    """Nothing arrived for longer than the dead-peer timeout."""


class ServerUnavailable(StreamError):
    """No server accepted the connection, or none answered it in time."""


class CertificateInvalid(StreamError):
    """The server's TLS certificate did not verify."""


class WaitExpired(StreamError):
    """No sample arrived within the caller's wait; ``__cause__`` is the last failure, if any."""


class SubscriberOverflow(StreamError):
    """A subscriber fell further behind than its queue bound and was disconnected."""


class TooManyConnections(StreamError):
    """The server's connection limit is reached."""
