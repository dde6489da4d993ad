"""A set of sequence numbers stored as sorted, disjoint, half-open intervals.

Memory grows with the number of gaps, not with the number of members, so a long in-order
stream costs one interval. ``max_intervals`` bounds even that: past it, the lowest gap is
filled (its seqs count as members), so a peer that sends every other seq cannot grow the set
without bound; the price is that a late seq in that oldest gap reads as already present.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["SeqSet"]


class SeqSet:
    """Distinct non-negative integers, kept as merged intervals ``[start, stop)``."""

    __slots__ = ("_count", "_max_intervals", "_starts", "_stops")

    def __init__(self, max_intervals: int | None = None) -> None:
        if max_intervals is not None and max_intervals < 1:
            raise ValueError(f"max_intervals must be >= 1, got {max_intervals}")
        self._starts: list[int] = []
        self._stops: list[int] = []
        self._count = 0
        self._max_intervals = max_intervals

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
            if self._max_intervals is not None and len(starts) > self._max_intervals:
                # Fill the lowest gap: the oldest seqs matter least for de-duplication.
                self._count += starts[1] - stops[0]
                stops[0] = stops[1]
                del starts[1], stops[1]
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
