"""The ``reset`` scenario: RST both sides of the connection mid-stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from experiments.faults.proxy import FaultProxy
from experiments.faults.rounds import (
    PACE,
    FaultPace,
    FaultScenario,
    fault_outcome,
    keepalive_params,
    now_ns,
    run_rounds,
)
from experiments.faults.udp_relay import require_tcp
from experiments.faults.windows import FaultWindow
from experiments.results import Record
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess

__all__ = ["RESET", "Reset", "ResetKnobs"]


@dataclass(frozen=True, slots=True)
class ResetKnobs:
    pace: FaultPace
    rounds: int


class Reset(FaultScenario):
    """RST both sides of the connection mid-stream, through the fault proxy.

    One client reads through a fault proxy; each round, once samples flow, the proxy resets
    both sockets (SO_LINGER 0 then close: client and server each see "connection reset").
    Per fault: time until the client noticed (its ``disconnected`` event) and time until the
    first sample arrived on a new connection. A transport that resumes should lose and
    duplicate nothing (ledger over the whole run); one that does not loses what was published
    while it reconnected.
    """

    name = "reset"
    knobs: Mapping[str, ResetKnobs] = {
        "quick": ResetKnobs(PACE["quick"], rounds=1),
        "default": ResetKnobs(PACE["default"], rounds=5),
        "full": ResetKnobs(PACE["full"], rounds=5),
    }

    async def run(self, ctx: RunContext) -> list[Record]:
        require_tcp(ctx.transport, "no connection reset: UDP has no RST")
        k = self.knobs[ctx.profile.name]

        async def reset(server: ServerProcess, proxy: FaultProxy) -> FaultWindow:
            at = now_ns()
            proxy.reset_peer()
            return FaultWindow(at, at)

        rounds = await run_rounds(ctx, k.pace, k.rounds, reset)
        out = fault_outcome(ctx, rounds.result, [rounds.windows], k.pace.rate_hz)
        out.metrics["recovered"] = rounds.recovered
        params = {"rate_hz": k.pace.rate_hz, "rounds": k.rounds, **keepalive_params(ctx)}
        return [
            ctx.record(params, out.metrics, observations=out.observations, traces=out.traces)
        ]


RESET = Reset()
