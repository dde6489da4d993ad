"""The soak's nemesis: a seeded random schedule of faults, one per transport (pure: no I/O).

A nemesis in Jepsen's sense: something that keeps breaking the system on a random schedule
while the workload runs, so the checker at the end judges delivery after many faults of
every kind, in orders and phases nobody chose by hand. Here the schedule is data, drawn
before the soak starts:

- :data:`KINDS`: what can break (server kill and restart, proxy reset, proxy black hole,
  kernel black hole, link down, a burst of packet loss, a slow reader);
- :class:`NemesisKnobs`: how long each kind is held, the quiet time between two faults, and
  the levels of the kinds that have one (loss per mille, the slow reader's bytes per second);
- :func:`schedule`: one transport's faults, from ``(seed, transport)`` alone, so a soak is
  replayed fault for fault from its seed, and a transport's schedule does not change with
  which other transports run beside it;
- :func:`fewest_faults`: the fewest faults any seed can give in a duration (a bound, so "at
  least 100 per transport in 30 minutes" holds for every seed, not for the seeds tried);
- :func:`backlog_series`: a client's backlog over the whole soak, for its timeline plot.

Kinds are drawn from shuffled bags (each bag holds every kind once, as Tetris draws its
pieces): every kind comes back at least once per :data:`KINDS`-long stretch, so even a short
soak mixes them, and a long one holds about as many of each. Faults never overlap on one
transport: each is healed before the quiet time that precedes the next begins.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

__all__ = [
    "KINDS",
    "FaultKind",
    "NemesisKnobs",
    "PlannedFault",
    "Span",
    "backlog_series",
    "fewest_faults",
    "schedule",
]

FaultKind = Literal[
    "restart",
    "proxy-reset",
    "proxy-blackhole",
    "kernel-blackhole",
    "link-down",
    "loss-burst",
    "slow-reader",
]

#: Every kind, in the order reports list them.
KINDS: tuple[FaultKind, ...] = (
    "restart",
    "proxy-reset",
    "proxy-blackhole",
    "kernel-blackhole",
    "link-down",
    "loss-burst",
    "slow-reader",
)


@dataclass(frozen=True, slots=True)
class Span:
    """A closed range a value is drawn from, uniformly."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"a span needs 0 <= low <= high, got {self.low}, {self.high}")


@dataclass(frozen=True, slots=True)
class NemesisKnobs:
    """How the nemesis draws a schedule."""

    #: Kind -> how long it is held (seconds): a restart's downtime, a hole's, a burst's...
    #: (a proxy reset is an instant: 0).
    hold_s: Mapping[FaultKind, Span]
    #: Quiet time between one fault's heal and the next fault (seconds): the stream recovers.
    gap_s: Span
    #: The stream runs this long before the first fault.
    lead_s: float
    #: ... and this long after the last one ends, before the soak stops (recovery, then the
    #: ledger is read).
    tail_s: float
    #: Packets a loss burst drops each way, per mille.
    loss_per_mille: tuple[int, int]
    #: Bytes per second the slow reader takes from the server.
    slow_bytes_per_s: tuple[int, int]

    def __post_init__(self) -> None:
        missing = [k for k in KINDS if k not in self.hold_s]
        if missing:
            raise ValueError(f"no hold for {', '.join(missing)}")
        if self.gap_s.low <= 0:
            raise ValueError("faults need a quiet time between them (gap_s.low > 0)")

    @property
    def longest_hold_s(self) -> float:
        return max(self.hold_s[k].high for k in KINDS)


class PlannedFault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault of the schedule: seconds since the transport's soak began."""

    transport: str
    kind: FaultKind
    start_s: float
    end_s: float
    #: loss-burst: per mille dropped each way; slow-reader: bytes per second; else 0.
    level: int = 0

    @property
    def hold_s(self) -> float:
        return self.end_s - self.start_s


def _rng(seed: int, transport: str) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: the same stream on every run and
    # machine (whatever PYTHONHASHSEED), and an independent one per transport.
    return random.Random(f"nemesis/{seed}/{transport}")


def _level(kind: FaultKind, knobs: NemesisKnobs, rng: random.Random) -> int:
    if kind == "loss-burst":
        return rng.randint(*knobs.loss_per_mille)
    if kind == "slow-reader":
        return rng.randint(*knobs.slow_bytes_per_s)
    return 0


def schedule(
    seed: int, transport: str, duration_s: float, knobs: NemesisKnobs
) -> list[PlannedFault]:
    """``transport``'s faults over a soak of ``duration_s``, in order, none overlapping.

    The first starts at ``lead_s``; each next one a quiet ``gap_s`` after the previous ended;
    the last ends by ``duration_s - tail_s``. Times are rounded to the millisecond."""
    rng = _rng(seed, transport)
    faults: list[PlannedFault] = []
    bag: list[FaultKind] = []
    at = knobs.lead_s
    while True:
        if not bag:
            bag = list(KINDS)
            rng.shuffle(bag)
        kind = bag.pop()
        span = knobs.hold_s[kind]
        hold = round(rng.uniform(span.low, span.high), 3)
        level = _level(kind, knobs, rng)
        if at + hold > duration_s - knobs.tail_s:
            return faults
        start = round(at, 3)
        faults.append(
            PlannedFault(
                transport=transport, kind=kind, start_s=start, end_s=round(start + hold, 3),
                level=level,
            )
        )  # fmt: skip
        at = start + hold + rng.uniform(knobs.gap_s.low, knobs.gap_s.high)


def fewest_faults(duration_s: float, knobs: NemesisKnobs) -> int:
    """The fewest faults :func:`schedule` gives any seed over ``duration_s``.

    Fault ``n`` (from 0) starts at most ``n`` longest cycles (longest hold + longest gap)
    after ``lead_s`` and ends a longest hold later; every fault that ends by
    ``duration_s - tail_s`` that way is scheduled."""
    room = duration_s - knobs.tail_s - knobs.lead_s - knobs.longest_hold_s
    if room < 0:
        return 0
    cycle = knobs.longest_hold_s + knobs.gap_s.high
    return int(room // cycle) + 1


def backlog_series(
    samples: Iterable[tuple[int, str, int, int]], start_ns: int, end_ns: int, bin_s: float
) -> list[int]:
    """A client's backlog every ``bin_s`` from ``start_ns`` to ``end_ns``: samples the server
    had sent (by their scheduled time) that the client had not yet received, counting each
    sample's first receipt (as :func:`experiments.faults.windows.trace` does per fault).

    ``samples`` are ``(receive ns, epoch, seq, sent ns)``, duplicates included."""
    first: dict[tuple[str, int], tuple[int, int]] = {}
    for recv_ns, epoch, seq, sent_ns in samples:
        first.setdefault((epoch, seq), (recv_ns, sent_ns))
    count = int((end_ns - start_ns) / 1e9 // bin_s) + 1
    at_ns = start_ns + (np.arange(count) * bin_s * 1e9).astype(np.int64)
    received = np.sort(np.fromiter((v[0] for v in first.values()), np.int64, len(first)))
    sent = np.sort(np.fromiter((v[1] for v in first.values()), np.int64, len(first)))
    backlog = np.searchsorted(sent, at_ns, "right") - np.searchsorted(received, at_ns, "right")
    return [max(0, int(b)) for b in backlog]
