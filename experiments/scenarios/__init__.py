"""The scenario registry: name -> scenario object.

A scenario is an object with

- ``name``: its name on the command line and in results.json;
- ``kind``: ``"steady"`` (latency, throughput, fanout, complexity) or ``"fault"``;
- a docstring saying what it measures and how delivery is checked;
- ``async def run(self, ctx: RunContext) -> list[dict]``: the records for one transport and
  one repeat (build them with ``ctx.record(params, metrics)``). It must check delivery with the
  ledger before it reports timing: records carry ``delivery_ok`` and the ledger counts.

To add one: a module ``experiments/scenarios/<name>.py`` defining the object, and one entry in
the tuple below. The runner, CLI (``--scenarios``), progress bar and report pick it up.
"""

from __future__ import annotations

from typing import Any, Protocol

from experiments.context import RunContext
from experiments.scenarios.bad_input import BAD_INPUT
from experiments.scenarios.blackhole import BLACKHOLE
from experiments.scenarios.complexity import COMPLEXITY
from experiments.scenarios.fanout import FANOUT
from experiments.scenarios.latency import LATENCY
from experiments.scenarios.reset import RESET
from experiments.scenarios.restart import RESTART
from experiments.scenarios.slow_consumer import SLOW_CONSUMER
from experiments.scenarios.throughput import THROUGHPUT

__all__ = ["SCENARIOS", "Scenario", "UnknownScenario", "get"]


class Scenario(Protocol):
    name: str
    kind: str

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]: ...


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (LATENCY, THROUGHPUT, FANOUT, COMPLEXITY)}
SCENARIOS.update({s.name: s for s in (RESTART, RESET, BLACKHOLE, SLOW_CONSUMER, BAD_INPUT)})


class UnknownScenario(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenario(name) from None
