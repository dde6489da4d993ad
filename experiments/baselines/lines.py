"""NDJSON lines as the line-oriented pushers (asyncio-tcp, starlette-stream, aioquic
WebTransport) write and read them: a batch encoded by one msgspec call, a read's complete
lines decoded by one. The same codec and the same batching as the transports they stand
beside (:func:`transports.ndjson.encode_sample_lines`, :func:`model.sample.decode_samples`).
"""

from __future__ import annotations

from itertools import repeat

from model.sample import Sample, decode_samples
from model.source import BernoulliSource
from transports.ndjson import encode_sample_lines

__all__ = ["decode_lines", "encode_batch"]


def encode_batch(source: BernoulliSource, epoch: str, start: int, stop: int, now: int) -> bytes:
    """Samples ``start <= seq < stop``, all due at ``now``, as NDJSON lines."""
    values = source.values(start, stop)
    return encode_sample_lines(
        list(map(Sample, repeat(epoch), range(start, stop), values, repeat(now)))
    )


def decode_lines(lines: list[bytes]) -> list[Sample]:
    """The samples of complete NDJSON lines (each one sample), decoded at once."""
    return decode_samples(b"[" + b",".join(lines) + b"]") if lines else []
