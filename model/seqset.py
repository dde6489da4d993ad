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
        return self.add_range(seq, seq + 1)

    def add_range(self, start: int, stop: int) -> bool:
        """Add every member of ``[start, stop)`` if none is present yet, and return True;
        else add nothing and return False (the caller goes member by member)."""
        if stop <= start:
            return True
        starts, stops = self._starts, self._stops
        i = bisect_right(starts, start) - 1
        if (i >= 0 and start < stops[i]) or (i + 1 < len(starts) and starts[i + 1] < stop):
            return False
        self._count += stop - start
        joins_left = i >= 0 and stops[i] == start
        joins_right = i + 1 < len(starts) and starts[i + 1] == stop
        if joins_left and joins_right:
            stops[i] = stops[i + 1]
            del starts[i + 1], stops[i + 1]
        elif joins_left:
            stops[i] = stop
        elif joins_right:
            starts[i + 1] = start
        else:
            starts.insert(i + 1, start)
            stops.insert(i + 1, stop)
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
