"""HTTP/2 bytes for the grpc family's hostile peers, and what an HTTP/2 server answered (pure).

The peers of :mod:`experiments.faults.hostile` write raw bytes; for gRPC those are HTTP/2
frames (hyperframe) with HPACK header blocks (hpack): the client connection preface, a
SETTINGS frame, a HEADERS frame opening a call and DATA frames carrying length-prefixed gRPC
messages. :func:`describe_http2` reads a server's frames back into words: the gRPC status and
message of each response's trailers, RST_STREAM and GOAWAY with their error codes, how many
DATA frames came (SETTINGS, WINDOW_UPDATE and PING frames are the connection's upkeep, left
out).
"""

from __future__ import annotations

import struct
from urllib.parse import unquote

import grpc
import hpack
from h2.errors import ErrorCodes
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from transports.proto import transportbench_pb2 as pb
from transports.sockets import url_host

__all__ = [
    "PREFACE",
    "call_head",
    "describe_http2",
    "grpc_message",
    "looks_like_http2",
    "request",
    "resume_token",
    "subscribe",
    "unfinished_head",
]

#: The client connection preface (RFC 9113, section 3.4); a SETTINGS frame must follow it.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The stream of the one call each peer makes.
_STREAM = 1
#: The largest frame payload a peer must accept before its SETTINGS say otherwise.
_MAX_FRAME = 16_384
_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _headers(host: str, port: int, path: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"{url_host(host)}:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


def grpc_message(payload: bytes, declared: int | None = None) -> bytes:
    """One length-prefixed gRPC message (uncompressed); ``declared``: the length it claims."""
    length = len(payload) if declared is None else declared
    return b"\0" + struct.pack("!I", length) + payload


def _header_frames(block: bytes, *, ended: bool = True) -> bytes:
    """A header block as HEADERS then CONTINUATION frames of at most 16 KiB (the default
    SETTINGS_MAX_FRAME_SIZE); END_HEADERS on the last unless not ``ended``."""
    chunks = [block[i : i + _MAX_FRAME] for i in range(0, len(block), _MAX_FRAME)] or [b""]
    frames: list[Frame] = [HeadersFrame(_STREAM, chunks[0])]
    frames += [ContinuationFrame(_STREAM, chunk) for chunk in chunks[1:]]
    if ended:
        frames[-1].flags.add("END_HEADERS")
    return b"".join(frame.serialize() for frame in frames)


def _block(headers: list[tuple[str, str]]) -> bytes:
    # No Huffman coding: hpack's encoder takes quadratic time on a long value.
    return hpack.Encoder().encode(headers, huffman=False)


def resume_token(epoch: str, since: int) -> bytes:
    """A serialized ``ResumeToken`` request, whatever its fields say."""
    return pb.ResumeToken(epoch=epoch, since=since).SerializeToString()


def call_head(host: str, port: int, path: str, *extra: tuple[str, str]) -> bytes:
    """The preface, an empty SETTINGS frame and the header block opening a call to ``path``
    (``extra`` headers after the required ones)."""
    block = _block(_headers(host, port, path, *extra))
    return PREFACE + SettingsFrame(0).serialize() + _header_frames(block)


def request(host: str, port: int, path: str, body: bytes, *extra: tuple[str, str]) -> bytes:
    """A whole call: :func:`call_head`, then ``body`` (gRPC messages) ending the stream."""
    data = DataFrame(_STREAM, body, flags=["END_STREAM"])
    return call_head(host, port, path, *extra) + data.serialize()


def subscribe(host: str, port: int, path: str, token: bytes = b"") -> bytes:
    """A client's ``Subscribe`` call to ``path``: one request message, ``token`` (empty: live
    samples only)."""
    return request(host, port, path, grpc_message(token))


def unfinished_head(host: str, port: int, path: str, pad: int) -> bytes:
    """A call whose header block never ends: padded with a ``pad``-byte header, its last
    frame without END_HEADERS, the CONTINUATION that would end it never sent."""
    block = _block([*_headers(host, port, path), ("x-slow", "a" * pad)])
    return PREFACE + SettingsFrame(0).serialize() + _header_frames(block, ended=False)


def looks_like_http2(data: bytes) -> bool:
    """Whether ``data`` opens like an HTTP/2 server's answer: a SETTINGS frame on stream 0."""
    return len(data) >= 9 and data[3] == 0x4 and data[5:9] == b"\0\0\0\0"


def _error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code}"


def _header_words(block: bytes, decoder: hpack.Decoder) -> str:
    fields = {str(name): str(value) for name, value in decoder.decode(block)}
    if "grpc-status" in fields:
        code = fields["grpc-status"]
        name = _STATUS_NAMES.get(int(code), "?") if code.isdigit() else "?"
        message = unquote(fields.get("grpc-message", ""))
        return f"grpc-status {code} {name} {message!r}"
    return f":status {fields.get(':status', '?')}"


def describe_http2(data: bytes) -> str:
    """The frames of an HTTP/2 server's answer, in words (as far as they arrived whole)."""
    decoder = hpack.Decoder()
    words: list[str] = []
    block = b""
    data_frames = 0
    at = 0
    try:
        while at + 9 <= len(data):
            frame, length = Frame.parse_frame_header(memoryview(data[at : at + 9]))
            body = data[at + 9 : at + 9 + length]
            if len(body) < length:
                break  # cut by the read limit
            frame.parse_body(memoryview(body))
            at += 9 + length
            if isinstance(frame, HeadersFrame | ContinuationFrame):
                block += frame.data
                if "END_HEADERS" in frame.flags:
                    words.append(_header_words(block, decoder))
                    block = b""
            elif isinstance(frame, DataFrame):
                data_frames += 1
            elif isinstance(frame, RstStreamFrame):
                words.append(f"RST_STREAM {_error_name(frame.error_code)}")
            elif isinstance(frame, GoAwayFrame):
                debug = frame.additional_data.decode(errors="replace")
                said = f" {debug!r}" if debug else ""
                words.append(f"GOAWAY {_error_name(frame.error_code)}{said}")
    except (HyperframeError, hpack.HPACKError, ValueError) as exc:
        words.append(f"unreadable frames ({type(exc).__name__})")
    if data_frames:
        words.append(f"{data_frames} DATA frame{'' if data_frames == 1 else 's'}")
    return "HTTP/2 " + (", ".join(words) if words else "SETTINGS only")
