"""The one exception tree of the suite.

Every error the suite raises on purpose is a :class:`StreamError`; library exceptions are
converted at the boundary with ``raise ... from``::

    StreamError
    ├── ProtocolError            the peer sent something this suite will not accept
    │   ├── MalformedSample      a payload that is not exactly one wire-form sample
    │   ├── FrameTooLarge        a message or line over the size limit
    │   └── BadResumeToken       a resume token (query, header, hello) that does not parse
    ├── ConnectionLost           an established connection ended (closed, reset, timed out)
    │   └── PeerSilent           nothing arrived for longer than the dead-peer timeout
    ├── ServerUnavailable        no server accepted the connection (refused, unreachable)
    ├── SubscriberOverflow       (server side) a subscriber fell too far behind and was cut
    └── TooManyConnections       (server side) the connection limit is reached
"""

from __future__ import annotations

__all__ = [
    "BadResumeToken",
    "ConnectionLost",
    "FrameTooLarge",
    "MalformedSample",
    "PeerSilent",
    "ProtocolError",
    "ServerUnavailable",
    "StreamError",
    "SubscriberOverflow",
    "TooManyConnections",
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


class ConnectionLost(StreamError):
    """An established connection ended: closed, reset or timed out."""


class PeerSilent(ConnectionLost):
    """Nothing arrived for longer than the dead-peer timeout."""


class ServerUnavailable(StreamError):
    """No server accepted the connection."""


class SubscriberOverflow(StreamError):
    """A subscriber fell further behind than its queue bound and was disconnected."""


class TooManyConnections(StreamError):
    """The server's connection limit is reached."""
