"""How a process tunes its garbage collector: ``default`` or ``freeze``, one policy per run.

``default`` leaves CPython's collector as it comes (on 3.11 thresholds ``(700, 10, 10)``:
a young collection every 700 net container allocations, an older one every 10 of those, a
full one every 10 of *those*, scanning every tracked object of the process: every module,
function and class imported at start-up, and every connection's state).

``freeze``, applied once the process has started up: :func:`gc.collect` (start-up's garbage
goes now, not into the frozen heap), :func:`gc.freeze` (every object that survived moves to
the permanent generation, which no collection scans again: ~120,000 objects in a server
that imported its libraries), then :func:`gc.set_threshold` with
:data:`FREEZE_THRESHOLDS`, ``(50_000, 50, 100)``:

- 50,000 young objects: a young collection then costs ~0.6 ms on this suite's machine
  (measured with 50,000 fresh dicts; 700 cost ~0.01 ms, 100,000 cost ~1.3 ms), runs about 70
  times less often, and most objects of a sample's path die by reference count before it
  comes; well under the 25-60 ms full collections measured on a server with 1,000
  connections, and never near the 20 ms tail the suite aims for;
- 50 and 100: a middle collection every 50 young ones, a full one every 100 middle ones
  (2.5 million and 250 million net allocations, against 7,000 and 70,000 by default), so a
  full collection, whose pause grows with the heap, becomes rare within a window.

Cyclic garbage lives longer under ``freeze`` (its memory comes back later); reference
counting frees everything else at once, as under ``default``.

Every process of a measured step applies the step's policy at the same point, *after
start-up*: a server (``serve --gc``, and a baseline pusher's server) just before it announces
itself ready; a client worker once its clients have connected, just before it says ready;
a pusher's reader just before it starts reading. A client worker connects its clients with the
collector held off (:func:`collector_held`), whatever the policy: a full collection scans
every connection's state, and while thousands of connections are being made at once it
stalls them all (0.57 s a pause with 6,000 aiohttp clients in one worker here) past their
handshake timeouts, and each retry makes more garbage: 2,433 of those 6,000 had connected
after 42 s with the collector on, all 6,000 in 4.8 s with it off. :func:`apply_gc` returns
the collector's state as read back from the interpreter (:class:`GcState`), which ``serve``
prints in its ``serving ...`` line; :func:`parse_gcs` reads ``--gc default,freeze`` for the
experiments.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "AS_IT_COMES",
    "DEFAULT_GC",
    "FREEZE_THRESHOLDS",
    "GCS",
    "GcName",
    "GcState",
    "UnknownGc",
    "apply_gc",
    "collector_held",
    "gc_state",
    "parse_gcs",
    "policy_words",
]

GcName = Literal["default", "freeze"]
#: Every policy, in the order the experiments run them.
GCS: tuple[GcName, ...] = get_args(GcName)
DEFAULT_GC: GcName = "default"
#: The thresholds ``freeze`` sets (young, middle, full): see the module's docstring.
FREEZE_THRESHOLDS: tuple[int, int, int] = (50_000, 50, 100)
#: The interpreter's own thresholds, as this module found them on import.
AS_IT_COMES: tuple[int, int, int] = gc.get_threshold()


class UnknownGc(ValueError):
    """A policy name that is not one of :data:`GCS`, in one line."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown --gc {name!r}; known: {', '.join(GCS)}")


def _checked(name: str) -> GcName:
    for known in GCS:
        if name == known:
            return known
    raise UnknownGc(name)


@dataclass(frozen=True, slots=True)
class GcState:
    """The collector as the interpreter reports it, under the policy applied."""

    policy: GcName
    thresholds: tuple[int, int, int]
    #: Objects in the permanent generation (:func:`gc.get_freeze_count`).
    frozen: int
    enabled: bool

    def describe(self) -> str:
        """``gc=freeze thresholds=50000,50,100 frozen=121956`` (``off`` when disabled)."""
        counts = ",".join(map(str, self.thresholds))
        on = "" if self.enabled else " off"
        return f"gc={self.policy} thresholds={counts} frozen={self.frozen}{on}"


def gc_state(policy: str) -> GcState:
    """This process's collector, read back, labelled with the ``policy`` it runs under."""
    young, middle, full = gc.get_threshold()
    return GcState(_checked(policy), (young, middle, full), gc.get_freeze_count(), gc.isenabled())


def apply_gc(policy: str) -> GcState:
    """Apply ``policy`` to this process (``default``: nothing); its state, read back."""
    if _checked(policy) == "freeze":
        gc.collect()
        gc.freeze()
        gc.set_threshold(*FREEZE_THRESHOLDS)
    return gc_state(policy)


@contextmanager
def collector_held() -> Iterator[None]:
    """The collector off for the block (a start-up that makes many long-lived objects at
    once); after it, one collection for the cyclic garbage it left, and the collector on
    again if it was on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.collect()
            gc.enable()


def policy_words(policy: str) -> str:
    """What ``policy`` does, in words, for the run's conditions."""
    if _checked(policy) == "default":
        counts = ",".join(map(str, AS_IT_COMES))
        return f"the interpreter's collector as it comes (thresholds {counts})"
    counts = ",".join(map(str, FREEZE_THRESHOLDS))
    return f"after start-up gc.collect(), gc.freeze(), gc.set_threshold({counts})"


def parse_gcs(text: str) -> tuple[GcName, ...]:
    """``default,freeze`` -> the names, in order, each once; :class:`UnknownGc` otherwise."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownGc(text)
    return tuple(dict.fromkeys(_checked(n) for n in names))
