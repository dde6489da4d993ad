"""The scenario registry: name -> scenario (the contract is in :mod:`.scenario`).

To add one: a module ``experiments/scenarios/<name>.py`` defining the scenario object (its run,
knobs, columns and report sections), and one entry in the tuple below. The runner, the CLI
(``--scenarios``), the progress display and the report pick it up.
"""

from __future__ import annotations

from experiments.scenarios.bad_input import BAD_INPUT
from experiments.scenarios.blackhole import BLACKHOLE
from experiments.scenarios.blackhole_kernel import BLACKHOLE_KERNEL
from experiments.scenarios.complexity import COMPLEXITY
from experiments.scenarios.fanout import FANOUT
from experiments.scenarios.interop import INTEROP
from experiments.scenarios.latency import LATENCY
from experiments.scenarios.link_down import LINK_DOWN
from experiments.scenarios.quiet_stream import QUIET_STREAM
from experiments.scenarios.reconnect_cost import RECONNECT_COST
from experiments.scenarios.reset import RESET
from experiments.scenarios.reset_kernel import RESET_KERNEL
from experiments.scenarios.restart import RESTART
from experiments.scenarios.scenario import Scenario
from experiments.scenarios.slow_consumer import SLOW_CONSUMER
from experiments.scenarios.soak import SOAK
from experiments.scenarios.throughput import THROUGHPUT

__all__ = ["SCENARIOS", "Scenario", "UnknownScenario", "get"]

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        LATENCY,
        THROUGHPUT,
        FANOUT,
        COMPLEXITY,
        RESTART,
        RESET,
        RECONNECT_COST,
        BLACKHOLE,
        BLACKHOLE_KERNEL,
        RESET_KERNEL,
        LINK_DOWN,
        SLOW_CONSUMER,
        BAD_INPUT,
        SOAK,
        QUIET_STREAM,
        INTEROP,
    )
}


class UnknownScenario(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenario(name) from None
