"""A set of sequence numbers stored as sorted, disjoint, half-open intervals.

Memory grows with the number of gaps, not with the number of members, so a long in-order
stream costs one interval.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["SeqSet"]


class SeqSet:
    """Distinct non-negative integers, kept as merged intervals ``[start, stop)``."""

    __slots__ = ("_count", "_starts", "_stops")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect_right(self._starts, seq) - 1
        return i >= 0 and seq < self._stops[i]

    def add(self, seq: int) -> bool:
        """Add ``seq``; return False if it was already present."""
        starts, stops = self._starts, self._stops
        i = bisect_right(starts, seq) - 1
        if i >= 0 and seq < stops[i]:
            return False
        self._count += 1
        joins_left = i >= 0 and stops[i] == seq
        joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if joins_left and joins_right:
            stops[i] = stops[i + 1]
            del starts[i + 1], stops[i + 1]
        elif joins_left:
            stops[i] = seq + 1
        elif joins_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            stops.insert(i + 1, seq + 1)
        return True

    def count_between(self, start: int, stop: int) -> int:
        """How many members lie in ``[start, stop)``."""
        total = 0
        for a, b in zip(self._starts, self._stops, strict=True):
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                total += hi - lo
        return total

    def intervals(self) -> list[tuple[int, int]]:
        """The members as merged half-open intervals, in order."""
        return list(zip(self._starts, self._stops, strict=True))
