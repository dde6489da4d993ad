"""NDJSON framing for the tcp transport (pure: no sockets, no asyncio).

One JSON object per line, lines end with ``\\n``. What travels:

- client -> server: one hello line, ``{}`` or ``{"epoch":E,"since":SEQ}``, then only
  ``{"heartbeat":NS}`` lines (so the server, too, notices a peer gone silent);
- server -> client: wire-form samples, ``{"heartbeat":NS}`` when idle, and a last
  ``{"error":"..."}`` before the server closes a peer it rejects.

Line ends: ``\\n`` ends a line; one ``\\r`` right before it is dropped, so a hand-typed CRLF
hello (telnet, Windows tools) works. A lone ``\\r`` is an ordinary byte (JSON then rejects it
unless it is whitespace between tokens). The size limit counts every byte before the ``\\n``,
the dropped ``\\r`` included, so the verdict never depends on how the input was split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from model.errors import (
    BadResumeToken,
    FrameTooLarge,
    MalformedSample,
    ProtocolError,
    ServerRefused,
    StreamError,
)
from model.sample import Sample, decode_sample, decode_samples
from transports.resume import ResumeToken

__all__ = [
    "Heartbeat",
    "LineSplitter",
    "ServerError",
    "ServerLine",
    "decode_sample_block",
    "decode_sample_run",
    "decode_server_line",
    "decode_server_lines",
    "encode_error",
    "encode_heartbeat",
    "encode_hello",
    "encode_sample_lines",
    "lines_of",
    "parse_client_line",
    "parse_hello",
    "server_batch",
    "server_block",
]


class LineSplitter:
    """Incremental line splitter with a bound on the line being assembled.

    ``feed`` returns the lines the data completed (without ``\\n`` / ``\\r\\n``) and keeps the
    unfinished tail; it raises :class:`FrameTooLarge` as soon as a line, finished or not,
    holds more than ``max_line_bytes`` bytes, so memory stays bounded by the limit plus one
    chunk. After it raised, the splitter is spent: the caller closes the connection.
    """

    __slots__ = ("_max", "_partial")

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
        self._max = max_line_bytes
        self._partial = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        block = self.feed_block(data)
        return [] if block is None else lines_of(block)

    def feed_block(self, data: bytes) -> bytes | None:
        """The lines ``data`` completed as one block, still joined by their newlines (no
        final one; ``b""`` is one empty line, None no line), with ``feed``'s bound: a caller
        that decodes the block whole never splits it (:func:`server_block`)."""
        end = data.rfind(b"\n")
        if end < 0:
            self._partial += data
            self._check(len(self._partial))
            return None
        if self._partial:
            self._partial += data[:end]
            head = bytes(self._partial)
        else:
            head = data[:end]
        self._partial = bytearray(data[end + 1 :])
        if len(head) > self._max:  # only then can one of its lines be too long
            self._check(max(map(len, head.split(b"\n"))))
        self._check(len(self._partial))
        return head

    def _check(self, size: int) -> None:
        if size > self._max:
            raise FrameTooLarge(f"line longer than {self._max} bytes")


_encoder = msgspec.json.Encoder()


def encode_sample_lines(samples: Sequence[Sample]) -> bytes:
    """Samples as consecutive lines, ready for one write: each line is ``encode_sample``'s,
    the whole made by one msgspec call (a third of the cost of a call per sample)."""
    return _encoder.encode_lines(samples)


def encode_heartbeat(now_ns: int) -> bytes:
    return b'{"heartbeat":%d}\n' % now_ns


def encode_error(message: str) -> bytes:
    return _encoder.encode({"error": message}) + b"\n"


def encode_hello(token: ResumeToken | None) -> bytes:
    if token is None:
        return b"{}\n"
    return _encoder.encode({"epoch": token.epoch, "since": token.since}) + b"\n"


class _HeartbeatLine(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    heartbeat: Annotated[int, msgspec.Meta(ge=0)]


_decode_heartbeat = msgspec.json.Decoder(_HeartbeatLine).decode


class _Hello(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # UNSET rather than None: an explicit null is a malformed hello, not "no token".
    epoch: str | msgspec.UnsetType = msgspec.UNSET
    since: int | msgspec.UnsetType = msgspec.UNSET


_decode_hello = msgspec.json.Decoder(_Hello).decode


def parse_hello(line: bytes) -> ResumeToken | None:
    """The resume token of a hello line; ``None`` for ``{}``.

    Raises :class:`BadResumeToken` for a well-formed hello whose token is unusable, and
    :class:`ProtocolError` for a line that is not a hello at all.
    """
    try:
        hello = _decode_hello(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(
            f'hello must be {{}} or {{"epoch":E,"since":SEQ}}, got {line[:80]!r}: {exc}'
        ) from exc
    if hello.epoch is msgspec.UNSET and hello.since is msgspec.UNSET:
        return None
    if hello.epoch is msgspec.UNSET or hello.since is msgspec.UNSET:
        raise BadResumeToken("give both epoch and since, or neither")
    return ResumeToken(hello.epoch, hello.since)


def parse_client_line(line: bytes) -> int:
    """A line after the hello: only a heartbeat is allowed; its ``NS`` is returned."""
    try:
        return _decode_heartbeat(line).heartbeat
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProtocolError(
            f'after the hello only {{"heartbeat":NS}} lines are allowed, got {line[:80]!r}'
        ) from exc


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The server was idle; ``sent_ns`` is its ``time.monotonic_ns()``."""

    sent_ns: int


@dataclass(frozen=True, slots=True)
class ServerError:
    """The server's last word before it closes the connection."""

    message: str


ServerLine = Sample | Heartbeat | ServerError


class _ErrorLine(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    error: str


_decode_error = msgspec.json.Decoder(_ErrorLine).decode


def decode_server_line(line: bytes) -> ServerLine:
    """Classify one line from the server; :class:`MalformedSample` when it is none of them."""
    try:
        return decode_sample(line)
    except MalformedSample as not_a_sample:
        # Heartbeats and errors are rare (idle or last line): try them only after a miss.
        try:
            return Heartbeat(_decode_heartbeat(line).heartbeat)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        try:
            return ServerError(_decode_error(line).error)
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        raise not_a_sample


def lines_of(block: bytes) -> list[bytes]:
    """The lines of a block of complete lines (:meth:`LineSplitter.feed_block`), without
    their ``\r``."""
    lines = block.split(b"\n")
    if b"\r" in block:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines


def decode_sample_block(block: bytes) -> list[Sample] | None:
    """The samples of a block of lines joined by ``\n`` when every line is a well-formed
    sample; None otherwise.

    One msgspec call for the block instead of one per line, on the block as it came (no
    split, no join). Tried only when every line starts with ``{`` and ends with ``}``: a
    wire-form sample is a flat object whose only string is a hex epoch, so in a valid sample
    braces appear only as its delimiters, and N valid samples spelled with exactly those
    line-edge braces are one sample per line: no line can hold two, no sample can span two.
    """
    newlines = block.count(b"\n")
    if block[:1] == b"{" and block[-1:] == b"}" and block.count(b"}\n{") == newlines:
        try:
            samples = decode_samples(b"[" + block.replace(b"\n", b",") + b"]")
        except MalformedSample:
            return None
        if len(samples) == newlines + 1:
            return samples
    return None


def decode_sample_run(lines: list[bytes]) -> list[Sample] | None:
    """The samples of ``lines`` when every one is a well-formed sample; None otherwise
    (:func:`decode_sample_block` on the lines joined; a line that held a newline itself
    would make the count differ)."""
    if not lines:
        return []
    samples = decode_sample_block(b"\n".join(lines))
    return samples if samples is not None and len(samples) == len(lines) else None


def decode_server_lines(lines: list[bytes]) -> Iterable[ServerLine]:
    """Classify many lines at once, exactly as :func:`decode_server_line` would one by one.

    A run of samples is decoded at once (:func:`decode_sample_run`); anything else
    (heartbeats, errors, garbage) goes line by line, lazily: the lines before a bad one come
    out before it raises.
    """
    samples = decode_sample_run(lines)
    if samples is not None:
        return samples
    return map(decode_server_line, lines)


def server_block(block: bytes, stream: str) -> tuple[list[Sample], StreamError | None]:
    """:func:`server_batch` for a chunk's complete lines as one block
    (:meth:`LineSplitter.feed_block`): a block of samples only is decoded whole, unsplit."""
    samples = decode_sample_block(block)
    if samples is not None:
        return samples, None
    return server_batch(lines_of(block), stream)


def server_batch(lines: list[bytes], stream: str) -> tuple[list[Sample], StreamError | None]:
    """The samples a client received in ``lines`` (a chunk's complete lines), and the error
    that ended them (None: none): a run of samples decoded at once, else line by line, so
    the samples before a malformed line or a server's error line (:class:`ServerRefused`,
    "server closed the ``stream``: ...") still count as received. Heartbeats only reset the
    reader's deadline, which their arrival already did."""
    samples = decode_sample_run(lines)
    if samples is not None:
        return samples, None
    samples = []
    try:
        for line in map(decode_server_line, lines):
            if type(line) is Sample:
                samples.append(line)
            elif isinstance(line, ServerError):
                return samples, ServerRefused(f"server closed the {stream}: {line.message}")
    except StreamError as exc:
        return samples, exc
    return samples, None
