"""The ``--loop asyncio,uvloop`` dimension: every process of a step runs on the same loop.

The transport servers (``serve --loop``, :class:`~experiments.run.processes.ServerProcess`),
the client workers (``ClientJob.loop``), and the throughput scenario's baseline pushers, both
sides (:class:`~experiments.run.processes.Placement` ``loop``), so every comparison within
one loop is like with like. The harness itself, and what runs inside it (browser clients'
page host, the interop scenario's third-party readers), stays on asyncio: it coordinates and
does not carry the measured stream's load.
"""

from __future__ import annotations

from transports.loops import DEFAULT_LOOP, LOOPS, LoopName, UnknownLoop, parse_loops

__all__ = [
    "DEFAULT_LOOP",
    "LOOPS",
    "LoopName",
    "UnknownLoop",
    "parse_loops",
]
