"""The ``reset`` scenario."""

from __future__ import annotations

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

__all__ = ["RESET", "Reset"]


class Reset:
    """RST both sides of the connection mid-stream, through the fault proxy.

    One client reads through a fault proxy; each round, once samples flow, the proxy resets
    both sockets (SO_LINGER 0 then close: client and server each see "connection reset").
    Per fault: time until the client noticed (its ``disconnected`` event) and time until the
    first sample arrived on a new connection. A transport that resumes should lose and
    duplicate nothing (ledger over the whole run); one that does not loses what was published
    while it reconnected.
    """

    name = "reset"
    kind = "fault"
    #: Timer-bound figures (seconds): every transport runs it at once, on its own processes.
    concurrent = True

    async def run(self, ctx: RunContext) -> list[dict[str, Any]]:
        fp = fault_profile(ctx.profile.name)

        async def reset(server: ServerProcess, proxy: FaultProxy) -> FaultWindow:
            at = now_ns()
            proxy.reset_peer()
            return FaultWindow(at, at)

        rounds = await run_rounds(ctx, fp.reset_rounds, reset)
        metrics, observations = fault_metrics(ctx, rounds.result, [rounds.windows])
        params = {"rate_hz": fp.rate_hz, "rounds": fp.reset_rounds, **heartbeat_params(ctx)}
        return [rounds_record(ctx, params, metrics, rounds, observations[0])]


RESET = Reset()
