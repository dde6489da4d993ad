"""One worker's lines from many actors' (pure): what the driver prints.

:func:`merge_ready` sums the actors' ready lines. :func:`merge_results` makes one
:class:`~experiments.worker.schema.WorkerResult` of the actors' results, in actor order:

- clients concatenated, each ``index`` renumbered to its place in the whole job;
- latency histograms merged per role (:func:`experiments.histogram.merge_encoded`): the
  samples of every actor pooled, as one worker's would be;
- CPU seconds (window and total) summed over actors; the smallest file limit;
- times on the server's clock: each actor's ``ready_ns`` and window shifted by its clock
  offset when it measured one (samples' receipt times already are, see
  :mod:`experiments.clock_offset`); client events stay on their actor's own clock;
- the window from the earliest start to the latest end (every actor's window lasts the job's
  duration, and they open within a few milliseconds of each other: the driver lets them all
  go at once), None edges ignored;
- ``clock``: the actor's offset with the widest error bound (every figure is at least that
  uncertain); each actor's is in the engine record;
- ``server`` and ``engine`` as the driver measured them (the actors have no server probe).

Actors of one job must agree on transport, settings and loop: anything else is a
:class:`ValueError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from experiments.clock_offset import ClockOffset
from experiments.histogram import merge_encoded
from experiments.worker.schema import (
    ClientOutcome,
    EngineRecord,
    ServerUsage,
    Window,
    WorkerReady,
    WorkerResult,
)

__all__ = ["merge_ready", "merge_results", "merge_window", "widest_clock"]


def merge_ready(readies: Sequence[WorkerReady], at_ns: int) -> WorkerReady:
    """The actors' ready lines as one, said at ``at_ns`` (the driver's clock)."""
    return WorkerReady(at_ns, sum(r.connected for r in readies), sum(r.clients for r in readies))


def _shift(ns: int | None, clock: ClockOffset | None) -> int | None:
    return ns if ns is None or clock is None else ns + clock.offset_ns


def merge_window(results: Sequence[WorkerResult]) -> Window:
    """The earliest start to the latest end, each on the server's clock."""
    starts = [_shift(r.window.start_ns, r.clock) for r in results]
    ends = [_shift(r.window.end_ns, r.clock) for r in results]
    known_starts = [s for s in starts if s is not None]
    known_ends = [e for e in ends if e is not None]
    return Window(
        min(known_starts) if known_starts else None, max(known_ends) if known_ends else None
    )


def widest_clock(clocks: Sequence[ClockOffset | None]) -> ClockOffset | None:
    """The offset with the widest error bound (None: nobody measured one)."""
    known = [c for c in clocks if c is not None]
    return max(known, key=lambda c: c.bound_ns) if known else None


def _agree(what: str, values: Sequence[object]) -> None:
    if any(v != values[0] for v in values):
        raise ValueError(f"actors of one job disagree on {what}: {values}")


def merge_results(
    results: Sequence[WorkerResult], *, server: ServerUsage | None, engine: EngineRecord
) -> WorkerResult:
    """The actors' results (in actor order) as one worker's."""
    if not results:
        raise ValueError("no actor results to merge")
    first = results[0]
    _agree("transport", [r.transport for r in results])
    _agree("settings", [r.settings for r in results])
    _agree("loop", [r.loop for r in results])
    clients: list[ClientOutcome] = []
    for r in results:
        base = len(clients)
        clients += [msgspec.structs.replace(c, index=base + c.index) for c in r.clients]
    roles = dict.fromkeys(role for r in results for role in r.latency)
    latency = {
        role: merge_encoded(r.latency[role] for r in results if role in r.latency) for role in roles
    }
    readies = [_shift(r.ready_ns, r.clock) for r in results]
    limits = [r.nofile for r in results if r.nofile is not None]
    return WorkerResult(
        transport=first.transport,
        clients_requested=sum(r.clients_requested for r in results),
        ready_ns=max(n for n in readies if n is not None),
        window=merge_window(results),
        cpu_window_s=sum(r.cpu_window_s for r in results),
        cpu_total_s=sum(r.cpu_total_s for r in results),
        server=server,
        settings=first.settings,
        latency=latency,
        clients=clients,
        nofile=min(limits) if limits else None,
        loop=first.loop,
        clock=widest_clock([r.clock for r in results]),
        engine=engine,
    )
