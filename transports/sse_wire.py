"""Server-Sent Events wire pieces (pure): the bytes samples become, and reading them back.

One sample is one event: ``id: EPOCH:SEQ`` (the resume token a browser's EventSource echoes in
``Last-Event-ID``) and ``data:`` the sample's wire JSON. Lines end in ``\\n`` alone: the spec
allows it and it saves a byte per line over ``\\r\\n``. A batch of samples is formatted into one
chunk so the server hands the socket one write per batch, not one per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

from httpx_sse import ServerSentEvent

from model.errors import BadResumeToken
from model.sample import Sample, decode_sample, encode_sample
from transports.resume import ResumeToken, parse_event_id

__all__ = [
    "LINE_END",
    "PING_COMMENT",
    "format_events",
    "format_retry",
    "retry_ms",
    "sample_of",
    "token_from_header",
]

LINE_END = "\n"
#: The keepalive comment line's text (``: ping``); short, since it is pure overhead.
PING_COMMENT = "ping"


def format_events(samples: Sequence[Sample]) -> bytes:
    """One chunk holding an event per sample, oldest first."""
    return b"".join(
        b"id: %s:%d\ndata: %s\n\n" % (s.epoch.encode(), s.seq, encode_sample(s)) for s in samples
    )


def retry_ms(seconds: float) -> int:
    """The ``retry:`` field for a reconnect delay (whole milliseconds, as the spec wants)."""
    if seconds < 0:
        raise ValueError(f"retry delay must be >= 0, got {seconds}")
    return round(seconds * 1000)


def format_retry(seconds: float) -> bytes:
    """A field-only event telling an EventSource how long to wait before reconnecting."""
    return b"retry: %d\n\n" % retry_ms(seconds)


def token_from_header(value: str | None) -> ResumeToken | None:
    """The resume token in a ``Last-Event-ID`` header; None when absent or empty.

    An EventSource sends the header only when its last event id is non-empty, so an empty one
    carries no position. Anything else must be ``EPOCH:SEQ`` (:class:`BadResumeToken`).
    """
    if value is None or value == "":
        return None
    if len(value) > 100:
        raise BadResumeToken(f"Last-Event-ID is {len(value)} characters, expected EPOCH:SEQ")
    return parse_event_id(value)


def sample_of(event: ServerSentEvent) -> Sample | None:
    """The sample an event carries; None for a data-less one (after a ping, or ``retry:``).

    httpx-sse dispatches an event at every blank line once an id has been seen (the last id
    persists, as the spec says), so a comment ping comes out as an event with empty data.
    """
    if not event.data:
        return None
    return decode_sample(event.data)
