"""The WebSocket framing the tornado server does itself (pure: no I/O).

- :func:`text_frames`: a whole batch of messages as server frames in one ``bytes``, so a batch
  is one write to the connection (:func:`sample_frames`: a batch of samples so, the wire
  form the hub encodes once for every subscriber on its fast path). Through
  ``write_message`` every message is a write and a task of its own, and a reader that stops
  reading held a whole batch of them (1-1.6 MB each).
- :func:`frame_violation`: what RFC 6455 says to answer to a frame tornado accepts as it is
  (invalid UTF-8 in a text message, a close frame with an invalid code or reason), which
  tornado would pass on or echo.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from model.sample import Sample, encode_sample

__all__ = [
    "INVALID_PAYLOAD",
    "PROTOCOL_ERROR",
    "frame_violation",
    "sample_frames",
    "text_frames",
    "valid_close_code",
]

#: RFC 6455 section 7.4.1: the peer broke the protocol / sent data inconsistent with its type.
PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007

_TEXT, _CLOSE = 0x1, 0x8
_FIN_TEXT = 0x80 | _TEXT


def text_frames(messages: Iterable[bytes]) -> bytes:
    """Each message (UTF-8 already) as one unmasked, final text frame, all concatenated."""
    parts: list[bytes] = []
    for message in messages:
        n = len(message)
        if n < 126:
            parts.append(bytes((_FIN_TEXT, n)))
        elif n < 1 << 16:
            parts.append(struct.pack("!BBH", _FIN_TEXT, 126, n))
        else:
            parts.append(struct.pack("!BBQ", _FIN_TEXT, 127, n))
        parts.append(message)
    return b"".join(parts)


def sample_frames(samples: Sequence[Sample]) -> bytes:
    """Samples in their wire form, one text frame each, in one ``bytes``."""
    return text_frames(map(encode_sample, samples))


def valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 7.4, IANA registry).

    1004-1006 and 1015 are reserved: they name situations, never travel on the wire.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def frame_violation(opcode: int, payload: bytes) -> tuple[int, str] | None:
    """The close code and reason a complete message or close frame calls for; None if fine."""
    if opcode == _TEXT:
        return None if _utf8(payload) else (INVALID_PAYLOAD, "invalid UTF-8 in a text message")
    if opcode != _CLOSE or not payload:
        return None
    if len(payload) == 1:
        return PROTOCOL_ERROR, "a close frame body of 1 byte"
    (code,) = struct.unpack("!H", payload[:2])
    if not valid_close_code(code):
        return PROTOCOL_ERROR, f"invalid close code {code}"
    if not _utf8(payload[2:]):
        return INVALID_PAYLOAD, "invalid UTF-8 in a close reason"
    return None


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
