"""The sample and its one wire encoding.

A sample is encoded identically on every transport as one compact JSON object with exactly the
keys ``epoch``, ``seq``, ``value`` and ``sent_ns``. Decoding rejects anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from model.errors import MalformedSample

__all__ = [
    "EPOCH_PATTERN",
    "Sample",
    "decode_sample",
    "decode_samples",
    "encode_sample",
    "encode_samples",
    "is_epoch",
]

#: Epochs are random hex chosen by a server at start-up. ``\A``/``\Z``, not ``^``/``$``: msgspec
#: runs the pattern with ``re.search``, where ``$`` also matches before a trailing newline.
EPOCH_PATTERN = r"\A[0-9a-f]{1,64}\Z"
_EPOCH = re.compile(EPOCH_PATTERN)


def is_epoch(text: str) -> bool:
    """Whether ``text`` is a well-formed epoch: 1-64 lowercase hex digits, nothing else."""
    return _EPOCH.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Sample:
    """One Bernoulli draw as published by a server.

    ``epoch`` names one server run, ``seq`` counts from 0 within it, ``value`` is 0 or 1 and
    ``sent_ns`` is the ``time.monotonic_ns()`` at which the sample was *due*, so latency measured
    from it includes any lag of the server (no coordinated omission).
    """

    epoch: str
    seq: int
    value: int
    sent_ns: int


class _Wire(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Validation lives in the schema: msgspec rejects missing and extra keys, bools for ints,
    # floats for ints, and values outside the declared ranges.
    epoch: Annotated[str, msgspec.Meta(pattern=EPOCH_PATTERN)]
    seq: Annotated[int, msgspec.Meta(ge=0)]
    value: Literal[0, 1]
    sent_ns: Annotated[int, msgspec.Meta(ge=0)]


_encoder = msgspec.json.Encoder()
_decode_one = msgspec.json.Decoder(_Wire).decode
_decode_many = msgspec.json.Decoder(list[_Wire]).decode


def encode_sample(sample: Sample) -> bytes:
    """The wire form of one sample: compact JSON, keys in a fixed order."""
    return _encoder.encode(sample)


def encode_samples(samples: list[Sample]) -> bytes:
    """A JSON array of wire-form samples (the polling transports' response body)."""
    return _encoder.encode(samples)


def decode_sample(data: bytes | str) -> Sample:
    """Parse one wire-form sample; raise :class:`MalformedSample` for anything else."""
    try:
        w = _decode_one(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedSample(f"malformed sample: {exc}") from exc
    return Sample(w.epoch, w.seq, w.value, w.sent_ns)


def decode_samples(data: bytes | str) -> list[Sample]:
    """Parse a JSON array of wire-form samples; raise :class:`MalformedSample` otherwise."""
    try:
        ws = _decode_many(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedSample(f"malformed sample array: {exc}") from exc
    return [Sample(w.epoch, w.seq, w.value, w.sent_ns) for w in ws]
