"""The ``restart`` scenario."""

from __future__ import annotations

import asyncio
from typing import Any

from experiments.context import RunContext
from experiments.fault_figures import FaultWindow
from experiments.fault_profiles import fault_profile
from experiments.scenarios.fault_common import (
    Proxies,
    fault_metrics,
    heartbeat_params,
    now_ns,
    proxied_groups,
    timeline,
    wait_flowing,
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
        windows: list[FaultWindow] = []
        epochs_started: list[str] = []
        recovered = 0
        async with ctx.server(fp.rate_hz) as server, Proxies(server.port, 1) as proxies:
            proxy = proxies.items[0]
            assert server.epoch is not None
            epochs_started.append(server.epoch)
            job = ctx.job(
                server.port, proxied_groups(proxies), keep_samples=True, keep_latencies=False
            )
            origin = now_ns()
            async with ctx.clients(job) as worker:
                await worker.wait_ready()
                for round_ in range(fp.restart_rounds):
                    ctx.note(f"restart {round_ + 1}/{fp.restart_rounds}")
                    await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s)
                    await asyncio.sleep(fp.settle_s)  # the stream runs before the fault
                    killed = now_ns()
                    await server.kill()
                    await asyncio.sleep(fp.restart_downtime_s)  # the outage itself
                    await server.start()
                    back = now_ns()
                    assert server.epoch is not None
                    epochs_started.append(server.epoch)
                    windows.append(FaultWindow(killed, back))
                    if await wait_flowing(proxy, proxy.forwarded_bytes, fp.recover_timeout_s):
                        recovered += 1
                await asyncio.sleep(fp.settle_s)
                result = await worker.stop()
        metrics, observations = fault_metrics(ctx, result, [windows])
        moved = sum(
            1
            for w_index, o in enumerate(observations[0])
            if epochs_started[w_index + 1] in o.epochs_after
        )
        metrics["moved_to_new_epoch"] = moved
        metrics["recovered"] = recovered
        params = {
            "rate_hz": fp.rate_hz,
            "rounds": fp.restart_rounds,
            "downtime_s": fp.restart_downtime_s,
            **heartbeat_params(ctx),
        }
        record = ctx.record(params, metrics)
        record["timeline"] = timeline(result, [windows], origin)
        record["observations"] = [
            {"detect_s": o.detect_s, "reconnect_s": o.reconnect_s} for o in observations[0]
        ]
        return [record]


RESTART = Restart()
