"""The Bernoulli source: ``value(seq)`` is a pure function of ``(seed, seq)``.

The source owns no clock and no rate (the server does), so any receiver that knows the seed
can check every value it received.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BernoulliSource"]

_MASK = (1 << 64) - 1


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
        """``[self.value(seq) for seq in range(start, stop)]``, a third faster.

        The publisher's batch: the same arithmetic as :meth:`value`, inlined into one loop
        over local names (a call per sample is most of its cost).
        """
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

    def successes(self, start: int, stop: int) -> int:
        """How many of the samples ``start <= seq < stop`` are 1."""
        return sum(self.value(s) for s in range(start, stop))
