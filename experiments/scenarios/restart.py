"""The ``restart`` scenario: SIGKILL the server mid-stream, start it again."""

from __future__ import annotations

import asyncio
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
from experiments.faults.windows import FaultWindow
from experiments.results import Record
from experiments.run.context import RunContext
from experiments.run.processes import ServerProcess
from experiments.scenarios.scenario import Column

__all__ = ["RESTART", "Restart", "RestartKnobs"]


@dataclass(frozen=True, slots=True)
class RestartKnobs:
    pace: FaultPace
    rounds: int
    #: The server stays dead this long before it is started again.
    downtime_s: float


class Restart(FaultScenario):
    """SIGKILL the server mid-stream, start it again on the same port after a downtime.

    One client reads through a transparent proxy (no toxic: it only lets the scenario see when
    server data flows again instead of sleeping). Each round: samples flow, the server gets
    SIGKILL (it closes nothing itself: the kernel does), stays dead ``downtime_s``, starts
    again (a new epoch) through ``python -m transports serve``. Per fault: time until the
    client noticed (its ``disconnected`` event), time from the server being back to the first
    sample received on a new connection, and whether the client moved to the new epoch. The
    ledger over the whole run gives lost/duplicated/reordered (a resuming client should get the
    new epoch from seq 0) and the posterior error against the ground truth; the posterior must
    never count a sample twice.
    """

    name = "restart"
    knobs: Mapping[str, RestartKnobs] = {
        "quick": RestartKnobs(PACE["quick"], rounds=1, downtime_s=0.3),
        "default": RestartKnobs(PACE["default"], rounds=5, downtime_s=0.5),
        "full": RestartKnobs(PACE["full"], rounds=5, downtime_s=1.0),
    }
    columns = (*FaultScenario.columns, Column("moved_to_new_epoch", "moved to new epoch"))

    async def run(self, ctx: RunContext) -> list[Record]:
        k = self.knobs[ctx.profile.name]

        async def restart(server: ServerProcess, proxy: FaultProxy) -> FaultWindow:
            killed = now_ns()
            await server.kill()
            await asyncio.sleep(k.downtime_s)  # the outage itself
            await server.start()
            return FaultWindow(killed, now_ns(), new_epoch=server.epoch)

        rounds = await run_rounds(ctx, k.pace, k.rounds, restart)
        out = fault_outcome(ctx, rounds.result, [rounds.windows], k.pace.rate_hz)
        out.metrics["moved_to_new_epoch"] = sum(bool(o.new_epoch) for o in out.observations)
        out.metrics["recovered"] = rounds.recovered
        params = {
            "rate_hz": k.pace.rate_hz,
            "rounds": k.rounds,
            "downtime_s": k.downtime_s,
            **keepalive_params(ctx),
        }
        return [
            ctx.record(params, out.metrics, observations=out.observations, traces=out.traces)
        ]


RESTART = Restart()
