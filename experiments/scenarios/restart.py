"""The ``restart`` scenario."""

from __future__ import annotations

import asyncio
from typing import Any

from experiments.context import RunContext
from experiments.fault_figures import FaultWindow
from experiments.fault_profiles import fault_profile
from experiments.harness import ServerProcess
from experiments.proxy import FaultProxy
from experiments.scenarios.fault_common import (
    fault_metrics,
    heartbeat_params,
    now_ns,
    rounds_record,
    run_rounds,
)

__all__ = ["RESTART", "Restart"]


class Restart:
    """SIGKILL the server mid-stream, start it again on the same port after a downtime.

    One client reads through a transparent proxy (no toxic: it only lets the scenario see when
    server data flows again instead of sleeping). Each round: samples flow, the server gets
    SIGKILL (it closes nothing itself: the kernel does), stays dead ``restart_downtime_s``,
    starts again (a new epoch) through ``python -m transports serve``. Per fault: time until the
    client noticed (its ``disconnected`` event), time from the server being back to the first
    sample received on a new connection, and whether the client moved to the new epoch. The
    ledger over the whole run gives lost/duplicated/reordered (a resuming client should get the
    new epoch from seq 0) and the posterior error against the ground truth; the posterior must
    never count a sample twice.
    """

    name = "restart"
    kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = fault_profile(ctx.profile.name)
        epochs_after: list[str | None] = []  # the epoch the server came back with, per fault

        async def restart(server: ServerProcess, proxy: FaultProxy) -> FaultWindow:
            killed = now_ns()
            await server.kill()
            await asyncio.sleep(fp.restart_downtime_s)  # the outage itself
            await server.start()
            back = now_ns()
            epochs_after.append(server.epoch)
            return FaultWindow(killed, back)

        rounds = await run_rounds(ctx, fp.restart_rounds, restart)
        metrics, observations = fault_metrics(ctx, rounds.result, [rounds.windows])
        metrics["moved_to_new_epoch"] = sum(
            1
            for epoch, o in zip(epochs_after, observations[0], strict=True)
            if epoch in o.epochs_after
        )
        params = {
            "rate_hz": fp.rate_hz,
            "rounds": fp.restart_rounds,
            "downtime_s": fp.restart_downtime_s,
            **heartbeat_params(ctx),
        }
        return [rounds_record(ctx, params, metrics, rounds, observations[0])]


RESTART = Restart()
