"""The ``--loop asyncio,uvloop`` dimension: every process of a step runs on the same loop.

The transport servers (``serve --loop``, :class:`~experiments.run.processes.ServerProcess`),
the client workers (``ClientJob.loop``), and the throughput scenario's baseline pushers, both
sides (:class:`~experiments.run.processes.Placement` ``loop``), so every comparison within
one loop is like with like. The harness itself, and what runs inside it (browser clients'
page host, the interop scenario's third-party readers), stays on asyncio: it coordinates and
does not carry the measured stream's load.

``bad-input`` starts some servers of its own (the cases that need a server configured
apart) without the step's loop, so under ``uvloop`` it would mix loops in one record: it is
"not applicable" there until it passes the loop on (:func:`loop_not_applicable`).
"""

from __future__ import annotations

from transports.loops import DEFAULT_LOOP, LOOPS, LoopName, UnknownLoop, parse_loops

__all__ = [
    "DEFAULT_LOOP",
    "LOOPS",
    "LOOP_UNAWARE_SCENARIOS",
    "LoopName",
    "UnknownLoop",
    "loop_not_applicable",
    "parse_loops",
]

#: Scenarios that start processes of their own without the step's loop: why, for each.
LOOP_UNAWARE_SCENARIOS: dict[str, str] = {
    "bad-input": "its servers of its own (cases configured apart) start on the default loop",
}


def loop_not_applicable(loop: str, scenario: str) -> str | None:
    """Why ``scenario`` does not run on ``loop`` (None: it does)."""
    if loop == DEFAULT_LOOP:
        return None
    why = LOOP_UNAWARE_SCENARIOS.get(scenario)
    return None if why is None else f"not applicable on {loop}: {why}"
