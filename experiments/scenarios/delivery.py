"""The one delivery judgement every scenario makes before it reports a timing.

:func:`judge` turns the clients of a worker result into the ledger totals plus
``delivery_ok`` and ``delivery_problems`` (in words). What counts as a problem:

- always: a corrupted or reordered sample, a posterior that counted a sample twice, a client
  that died or never connected;
- lost or duplicated samples, unless the scenario injects faults into a transport that does
  not resume (the seed design loses samples across a restart by design: reported, not flagged);
- a disconnect, unless the scenario injects faults (then disconnects are the point);
- nothing received in the measurement window, when the scenario has one.

Scenarios put these metrics in every record beside their timings, so the report can flag a
timing taken from a run that lost samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from experiments.results import Scalar
from experiments.worker.schema import ClientOutcome

__all__ = ["DELIVERY_KEYS", "Expect", "judge", "totals"]

DELIVERY_KEYS = ("delivered", "lost", "duplicated", "reordered", "corrupted")


@dataclass(frozen=True, slots=True)
class Expect:
    """What a scenario expects of delivery."""

    #: Faults were injected: disconnects are expected.
    faults: bool = False
    #: The transport resumes (with faults, lost or duplicated samples are then a problem).
    resumes: bool = True
    #: The worker had a measurement window that readers should have received samples in.
    window: bool = True


def totals(clients: Sequence[ClientOutcome]) -> dict[str, int]:
    """Ledger counts summed over clients, plus ``clients_with_loss``."""
    out = dict.fromkeys(DELIVERY_KEYS, 0)
    for c in clients:
        for key in DELIVERY_KEYS:
            out[key] += int(getattr(c.counts, key))
    out["clients_with_loss"] = sum(c.counts.lost > 0 for c in clients)
    return out


def counted_twice(client: ClientOutcome) -> int:
    """Samples the client's posterior counted more than once: alpha + beta above the truth by
    more than the lost samples."""
    e = client.posterior_error
    return max(0, round(e.alpha_error + e.beta_error) + client.counts.lost)


def judge(clients: Sequence[ClientOutcome], expect: Expect = Expect()) -> dict[str, Scalar]:
    """Totals, posterior error, ``delivery_ok`` and ``delivery_problems``."""
    sums = totals(clients)
    problems: list[str] = []
    for key in ("corrupted", "reordered"):
        if sums[key]:
            problems.append(f"{sums[key]} {key}")
    if not expect.faults or expect.resumes:
        for key in ("lost", "duplicated"):
            if sums[key]:
                problems.append(f"{sums[key]} {key}")
    twice = sum(counted_twice(c) for c in clients)
    if twice:
        problems.append(f"posterior counted {twice} samples twice")
    never = sum(not c.connected_once() for c in clients)
    if never:
        problems.append(f"{never} of {len(clients)} clients never connected")
    drops = sum(c.disconnects() for c in clients)
    if drops and not expect.faults:
        problems.append(f"{drops} disconnects")
    died = [c.error for c in clients if c.error]
    if died:
        problems.append(f"{len(died)} client errors (first: {died[0]})")
    readers = [c for c in clients if c.role != "stopped"]
    if expect.window and readers and not any(c.received_in_window for c in readers):
        problems.append("nothing received in the measurement window")
    return {
        **sums,
        "received": sum(c.received for c in clients),
        "received_in_window": sum(c.received_in_window for c in clients),
        "posterior_mean_error": max(
            (c.posterior_error.mean_error for c in clients), default=0.0
        ),
        "posterior_counted_twice": twice,
        "disconnects": drops,
        "delivery_ok": not problems,
        "delivery_problems": "; ".join(problems),
    }
