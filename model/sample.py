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


#: The last epoch found well-formed: a stream's samples share one, so the pattern runs once
#: per epoch, not once per sample.
_last_epoch: str | None = None


def is_epoch(text: str) -> bool:
    """Whether ``text`` is a well-formed epoch: 1-64 lowercase hex digits, nothing else."""
    global _last_epoch
    if text == _last_epoch:
        return True
    if _EPOCH.fullmatch(text) is None:
        return False
    _last_epoch = text
    return True


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


class _Wire(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    # The validation pass: msgspec rejects missing and extra keys, bools for ints, floats for
    # ints, and values outside the declared ranges. The epoch's pattern is checked apart,
    # once per distinct epoch (a regex per sample cost more than the rest of the decoding).
    # gc=False: never tracked, so a batch of them does not set off the collector.
    epoch: str
    seq: Annotated[int, msgspec.Meta(ge=0)]
    value: Literal[0, 1]
    sent_ns: Annotated[int, msgspec.Meta(ge=0)]


_encoder = msgspec.json.Encoder()
_check_one = msgspec.json.Decoder(_Wire).decode
_check_many = msgspec.json.Decoder(list[_Wire]).decode
# The building pass: the same bytes, already checked, decoded straight into samples (msgspec
# fills the dataclass in C; a Python-level ``Sample(...)`` per sample cost twice both passes).
_build_one = msgspec.json.Decoder(Sample).decode
_build_many = msgspec.json.Decoder(list[Sample]).decode


def encode_sample(sample: Sample) -> bytes:
    """The wire form of one sample: compact JSON, keys in a fixed order."""
    return _encoder.encode(sample)


def encode_samples(samples: list[Sample]) -> bytes:
    """A JSON array of wire-form samples (the polling transports' response body)."""
    return _encoder.encode(samples)


def _check_epoch(epoch: str) -> None:
    if not is_epoch(epoch):
        raise MalformedSample(
            f"malformed sample: epoch {epoch[:80]!r} is not 1-64 lowercase hex digits"
        )


def decode_sample(data: bytes | str) -> Sample:
    """Parse one wire-form sample; raise :class:`MalformedSample` for anything else."""
    try:
        _check_one(data)
        sample = _build_one(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedSample(f"malformed sample: {exc}") from exc
    _check_epoch(sample.epoch)
    return sample


def decode_samples(data: bytes | str) -> list[Sample]:
    """Parse a JSON array of wire-form samples; raise :class:`MalformedSample` otherwise.

    Two passes in C over the same bytes (check, then build) and a pattern check per distinct
    epoch: a third of the cost of building each sample from a checked record in Python.
    """
    try:
        _check_many(data)
        samples = _build_many(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MalformedSample(f"malformed sample array: {exc}") from exc
    for epoch in {sample.epoch for sample in samples}:
        _check_epoch(epoch)
    return samples
