"""Reconnect delays: exponential backoff with full jitter (pure).

``delay(n) = uniform(0, min(cap, base * 2**n))`` for the n-th consecutive failure, reset after a
healthy connection (the shared client decides what that is: one that streamed for a while, not
merely one whose handshake succeeded). Full jitter spreads a crowd of clients that lost the
same server, so they do not return in a storm.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    base_s: float = 0.1
    cap_s: float = 5.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("backoff base and cap must be >= 0")

    def ceiling(self) -> float:
        """The upper bound of the next delay (the whole delay without jitter)."""
        if not self.jitter:
            return self.base_s
        # Cap the exponent: 2**n overflows floats long after it passes any sane cap.
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 60))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = self.ceiling()
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        """Call after a healthy connection (see :mod:`transports.client`)."""
        self.attempt = 0
