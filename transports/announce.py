"""The one JSON line ``serve --ready-json`` prints once it listens, for programs to parse.

People read ``serving NAME on HOST:PORT ...``; programs (the experiments harness) read
``{"ready":{"transport":NAME,"host":H,"port":P,"epoch":E,"pid":PID}}``, printed after the human
line, once the server accepts connections; a server on uvloop adds ``"loop":"uvloop"`` (the
default, ``asyncio``, is left out, so the line of a default server is as it always was), and
a server with a clock endpoint (``serve --clock-port``, :mod:`transports.clock_endpoint`) adds
its UDP port as ``"clock_port":N``.
:func:`parse_announcement` picks it out of any other output.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from model.sample import EPOCH_PATTERN
from transports.loops import LoopName

__all__ = ["Announcement", "Ready", "parse_announcement"]


class Ready(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Where a server listens, which run it is, its process (to measure or signal it), and
    the event loop it runs on (:mod:`transports.loops`), and the UDP port of its clock
    endpoint (None: it has none)."""

    transport: str
    host: str
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    epoch: Annotated[str, msgspec.Meta(pattern=EPOCH_PATTERN)]
    pid: Annotated[int, msgspec.Meta(ge=1)]
    loop: LoopName = "asyncio"
    clock_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None


class Announcement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The readiness line: one object with the single key ``ready``."""

    ready: Ready

    def encode(self) -> str:
        """The line to print (without its newline)."""
        return _encoder.encode(self).decode()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Announcement)


def parse_announcement(line: str) -> Announcement | None:
    """The announcement ``line`` holds; None for any other line (the human one, a log line)."""
    text = line.strip()
    if not text.startswith('{"ready"'):
        return None
    try:
        return _decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
