"""The Bernoulli source: ``value(seq)`` is a pure function of ``(seed, seq)``.

The source owns no clock and no rate (the server does), so any receiver that knows the seed
can check every value it received.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BernoulliSource"]

_MASK = (1 << 64) - 1
#: From this many seqs on, values are computed by numpy (see ``value_bytes``).
_VECTOR_FROM = 128
#: Seqs per numpy pass: bounds the temporaries (8 bytes a seq, a few arrays).
_CHUNK = 1 << 18


def _splitmix64(x: int) -> int:
    # SplitMix64's finaliser: a fast, well-mixed bijection on 64-bit integers.
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class BernoulliSource:
    """Draws 1 with probability ``p``, deterministically per ``(seed, seq)``."""

    p: float = 0.72
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {self.p}")

    def value(self, seq: int) -> int:
        """The value of sample ``seq``: 0 or 1."""
        u = _splitmix64((self.seed * 0x100000001B3) ^ seq) >> 11  # 53 random bits
        return 1 if u < self.p * (1 << 53) else 0

    def values(self, start: int, stop: int) -> list[int]:
        """``[self.value(seq) for seq in range(start, stop)]``, the publisher's batch."""
        if stop - start >= _VECTOR_FROM:
            return list(self.value_bytes(start, stop))
        return self._values(start, stop)

    def value_bytes(self, start: int, stop: int) -> bytes:
        """The values of ``start <= seq < stop`` as bytes, one 0 or 1 per seq.

        A long range is computed by numpy in one pass (about 15 ns a seq against 540 in the
        loop below; its fixed cost of about 10 µs pays from :data:`_VECTOR_FROM` seqs on),
        a chunk at a time so memory stays bounded; the same arithmetic modulo 2**64.
        """
        if stop - start < _VECTOR_FROM or stop > _MASK + 1:
            return bytes(self._values(start, stop))
        parts = []
        for lo in range(start, stop, _CHUNK):
            parts.append(self._vector(lo, min(stop, lo + _CHUNK)))
        return b"".join(parts)

    def successes(self, start: int, stop: int) -> int:
        """How many of the samples ``start <= seq < stop`` are 1."""
        return self.value_bytes(start, stop).count(1)

    def _vector(self, start: int, stop: int) -> bytes:
        # Imported here: the servers' per-tick batches are short and never need it.
        import numpy as np

        u64 = np.uint64
        x = np.arange(start, stop, dtype=u64) ^ u64((self.seed * 0x100000001B3) & _MASK)
        x = x + u64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> u64(30))) * u64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> u64(27))) * u64(0x94D049BB133111EB)
        x ^= x >> u64(31)
        # 53-bit integers are exact as doubles: the comparison is value()'s.
        below: bytes = ((x >> u64(11)) < self.p * (1 << 53)).astype(np.uint8).tobytes()
        return below

    def _values(self, start: int, stop: int) -> list[int]:
        # value()'s arithmetic inlined into one loop over local names (a call per sample is
        # most of its cost).
        mixed_seed = self.seed * 0x100000001B3
        threshold = self.p * (1 << 53)
        mask = _MASK
        out: list[int] = []
        append = out.append
        for seq in range(start, stop):
            x = ((mixed_seed ^ seq) + 0x9E3779B97F4A7C15) & mask
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
            append(1 if (x ^ (x >> 31)) >> 11 < threshold else 0)
        return out
