"""Pure figures of the fault scenarios: what one client saw of one fault.

A client worker reports, per client, its connection events (``Connected``, ``Disconnected``,
``ConnectFailed``, each with ``at_ns``) and, with ``keep_samples``, every sample as
``(recv_ns, epoch, seq, sent_ns)``. A scenario knows when it injected each fault
(:class:`FaultWindow`). From these two, per fault and client:

- detect: the first ``Disconnected`` event at or after the fault began, and before
  ``detect_until_ns`` (for a black hole: the heal; a "detection" after the network came back
  is the stream breaking on what the hole swallowed, not the client noticing the hole);
- reconnect: from the moment the fault ended (server back, reset done, hole healed) to the
  first sample received after both that moment and the client's first new connection (so a
  sample still buffered from the broken connection does not count as recovery);
- the trace: the backlog (samples the server had sent, by their scheduled time, that the
  client had not yet received) over a time axis whose 0 is the fault's start.

Every time is in seconds; ``None`` means it did not happen in its window. Nothing here does
I/O, so it is tested on hand-made clients.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from experiments.results import FaultTrace, Observation, Scalar
from experiments.worker.schema import ClientOutcome, Connected, Disconnected

__all__ = ["TRACE_BIN_S", "FaultWindow", "observe", "summarize", "trace"]

#: Width of one bin of a trace.
TRACE_BIN_S = 0.05
#: A trace starts this long before the fault and ends this long after the recovery.
TRACE_MARGIN_S = 0.5
#: ... and never runs longer than this after the fault's end.
TRACE_MAX_AFTER_S = 6.0


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault as the scenario injected it (``time.monotonic_ns()``)."""

    #: The fault began (kill, reset, black hole on).
    start_ns: int
    #: The fault ended: the server serves again, the reset is done, the hole is healed.
    end_ns: int
    #: Detections count only before this (None: no limit).
    detect_until_ns: int | None = None
    #: When the server dropped the connection, if the scenario could see it.
    server_drop_ns: int | None = None
    #: The epoch the server came back with (restart).
    new_epoch: str | None = None


def _first_event(
    client: ClientOutcome, kind: type[Connected | Disconnected], at_ns: int, before: int | None
) -> int | None:
    times = [
        e.at_ns
        for e in client.events
        if isinstance(e, kind) and e.at_ns >= at_ns and (before is None or e.at_ns < before)
    ]
    return min(times, default=None)


def _recovered_ns(client: ClientOutcome, window: FaultWindow) -> int | None:
    reconnected = _first_event(client, Connected, window.start_ns, None)
    recover_from = max(window.end_ns, reconnected or window.end_ns)
    for sample in client.samples:
        if sample[0] >= recover_from:
            return sample[0]
    return None


def observe(index: int, client: ClientOutcome, window: FaultWindow) -> Observation:
    """Detection and reconnection times of one client for one fault."""
    detected = _first_event(client, Disconnected, window.start_ns, window.detect_until_ns)
    recovered = _recovered_ns(client, window)
    new_epoch = None
    if window.new_epoch is not None:
        new_epoch = any(s[1] == window.new_epoch for s in client.samples if s[0] >= window.end_ns)
    dropped = window.server_drop_ns
    return Observation(
        client=index,
        detect_s=None if detected is None else (detected - window.start_ns) / 1e9,
        reconnect_s=None if recovered is None else (recovered - window.end_ns) / 1e9,
        server_drop_s=None if dropped is None else (dropped - window.start_ns) / 1e9,
        new_epoch=new_epoch,
    )


def trace(index: int, client: ClientOutcome, window: FaultWindow, rate_hz: float) -> FaultTrace:
    """The client's backlog around one fault, on the fault's time axis."""
    o = observe(index, client, window)
    end_s = (window.end_ns - window.start_ns) / 1e9
    recovered_s = None if o.reconnect_s is None else end_s + o.reconnect_s
    stop_s = min(end_s + TRACE_MAX_AFTER_S, (recovered_s or end_s) + TRACE_MARGIN_S + 1.0)
    axis = np.arange(-TRACE_MARGIN_S, stop_s + TRACE_BIN_S, TRACE_BIN_S)
    at_ns = window.start_ns + (axis * 1e9).astype(np.int64)
    first: dict[tuple[str, int], tuple[int, int]] = {}
    for recv_ns, epoch, seq, sent_ns in client.samples:
        first.setdefault((epoch, seq), (recv_ns, sent_ns))
    received = np.sort(np.fromiter((v[0] for v in first.values()), np.int64, len(first)))
    sent = np.sort(np.fromiter((v[1] for v in first.values()), np.int64, len(first)))
    backlog = np.searchsorted(sent, at_ns, "right") - np.searchsorted(received, at_ns, "right")
    return FaultTrace(
        client=index,
        bin_s=TRACE_BIN_S,
        start_s=float(axis[0]),
        backlog=[max(0, int(b)) for b in backlog],
        end_s=end_s,
        detected_s=o.detect_s,
        server_dropped_s=o.server_drop_s,
        recovered_s=recovered_s,
    )


def summarize(prefix: str, values: Iterable[float | None]) -> dict[str, Scalar]:
    """``{prefix}_median``, ``{prefix}_max`` over the values that happened; ``{prefix}_missed``
    counts the ones that did not (None)."""
    values = list(values)
    seen = [v for v in values if v is not None]
    return {
        f"{prefix}_median": statistics.median(seen) if seen else None,
        f"{prefix}_max": max(seen) if seen else None,
        f"{prefix}_missed": len(values) - len(seen),
    }
