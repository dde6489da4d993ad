"""Pure figures of the fault scenarios: detection and reconnection times from a client's record.

A client worker reports, per client, its connection ``events`` (``connected``,
``disconnected``, ``connect_failed``, each with ``at_ns``) and, with ``keep_samples``, every
sample as ``[recv_ns, epoch, seq]``. A scenario knows when it injected each fault
(:class:`FaultWindow`). From these two, per fault and client:

- detect: the first ``disconnected`` event at or after the fault began, and before
  ``detect_until_ns`` (for a black hole: the heal; a "detection" after the network came back
  is the stream breaking on what the hole swallowed, not the client noticing the hole);
- reconnect: from the moment the fault ended (server back, reset done, hole healed) to the
  first sample received after both that moment and the client's first new connection (so a
  sample still buffered from the broken connection does not count as recovery).

Every time is in seconds; ``None`` means it did not happen in its window. Nothing here does
I/O, so it is tested on hand-made event lists.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FaultObservation",
    "FaultWindow",
    "first_event_at_or_after",
    "first_sample_at_or_after",
    "observe",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault as the scenario injected it (``time.monotonic_ns()``)."""

    #: The fault began (kill, reset, black hole on).
    start_ns: int
    #: The fault ended: the server serves again, the reset is done, the hole is healed.
    end_ns: int
    #: Detections count only before this (None: no limit).
    detect_until_ns: int | None = None


@dataclass(frozen=True, slots=True)
class FaultObservation:
    """What one client saw of one fault."""

    detect_s: float | None
    reconnect_s: float | None
    #: Epochs the client received samples of after the fault ended.
    epochs_after: frozenset[str]


def first_event_at_or_after(
    events: Iterable[Mapping[str, Any]], kind: str, at_ns: int, before_ns: int | None = None
) -> int | None:
    """``at_ns`` of the first event of ``kind`` in ``[at_ns, before_ns)``, or None."""
    times = [
        int(e["at_ns"])
        for e in events
        if e["type"] == kind
        and e["at_ns"] >= at_ns
        and (before_ns is None or e["at_ns"] < before_ns)
    ]
    return min(times, default=None)


def first_sample_at_or_after(samples: Sequence[Sequence[Any]], at_ns: int) -> int | None:
    """Receive time of the first sample received at or after ``at_ns`` (samples in order)."""
    for sample in samples:
        if sample[0] >= at_ns:
            return int(sample[0])
    return None


def observe(client: Mapping[str, Any], window: FaultWindow) -> FaultObservation:
    """Detection and reconnection times of one client for one fault."""
    events = client["events"]
    detected = first_event_at_or_after(
        events, "disconnected", window.start_ns, window.detect_until_ns
    )
    reconnected = first_event_at_or_after(events, "connected", window.start_ns)
    recover_from = max(window.end_ns, reconnected or window.end_ns)
    samples = client["samples"]
    first = first_sample_at_or_after(samples, recover_from)
    epochs_after = frozenset(str(s[1]) for s in samples if s[0] >= window.end_ns)
    return FaultObservation(
        detect_s=None if detected is None else (detected - window.start_ns) / 1e9,
        reconnect_s=None if first is None else (first - window.end_ns) / 1e9,
        epochs_after=epochs_after,
    )


def summarize(prefix: str, values: Iterable[float | None]) -> dict[str, float | int | None]:
    """``{prefix}_median``, ``{prefix}_max`` over the values that happened; ``{prefix}_missed``
    counts the ones that did not (None)."""
    values = list(values)
    seen = [v for v in values if v is not None]
    return {
        f"{prefix}_median": statistics.median(seen) if seen else None,
        f"{prefix}_max": max(seen) if seen else None,
        f"{prefix}_missed": len(values) - len(seen),
    }
