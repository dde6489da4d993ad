"""Runs the selected scenarios over the selected transports, ``repeats`` times.

Scenarios run in order. A steady-state scenario runs one transport at a time on an otherwise
idle machine, that transport's repeats back to back: each repeat has its own client worker
(fresh connections, its own window), and the servers it asks for are started once for them
all (:class:`~experiments.run.processes.ServerPool`), which keeps process start-up out of
most of the run's time. Fault scenarios run ``fault_repeats`` times (one run injects many
faults), and a scenario whose figures are bound by timers of seconds (``concurrent = True``:
restart, reset, black hole, bad input) runs every transport at once, each on its own server,
proxies and worker (with browser clients one transport after the other, each still on its
own server: their pages share one Chromium). A scenario may cap its repeats
(``max_repeats``: complexity's figures are counts, the same every time). Every repeat uses
the same source seed, so a server kept for several repeats serves them all.
A scenario that fails for one transport (a server that does not start, a worker that dies)
becomes an error record (``metrics`` empty, ``error`` set) and the run goes on; Ctrl-C and
cancellation go through, tearing every process down on the way.
On an nginx path (``via``), a transport nginx cannot carry (not HTTP) gets one record per
step saying so (``metrics["not_applicable"]``, :func:`experiments.via.not_applicable`); so
does a transport the browser client kind cannot read, and that kind runs only its scenarios
(:mod:`experiments.worker.kinds`), a step a ``--security`` value rules out
(:func:`experiments.run.security.security_not_applicable`: WebTransport's plaintext duplicate,
TLS with browser clients, ...). Every scenario runs on every ``--loop`` and under every
``--gc``: the servers a scenario starts itself (bad-input's) get the step's too. Such a
record's ``security`` is
the one the step asked for (nothing ran under any other). Under ``--engine ray`` the clients
are Ray actors on the run's cluster (``ray``), in the scenarios that spread clients
(:func:`experiments.ray_engine.dimension.engine_not_applicable` says why not the others).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.baselines.process import BaselineResult
from experiments.network import NetworkPath
from experiments.ray_engine.cluster import RayCluster
from experiments.ray_engine.dimension import DEFAULT_ENGINE, engine_not_applicable
from experiments.results import Record
from experiments.run.context import RunContext
from experiments.run.processes import HarnessError, ServerPool
from experiments.run.profiles import Profile
from experiments.run.security import RunCertificate, security_not_applicable
from experiments.scenarios.scenario import Scenario
from experiments.via import not_applicable
from experiments.worker.kinds import kind_not_applicable, runs_in
from model.errors import StreamError
from transports.contract import Transport
from transports.gc_policy import DEFAULT_GC
from transports.loops import DEFAULT_LOOP
from transports.settings import Settings

__all__ = ["Progress", "run_suite", "scenario_repeats"]


@dataclass
class Progress:
    """Callbacks the CLI's progress bar listens to (no-ops by default)."""

    step: Callable[[str], None] = lambda description: None
    note: Callable[[str], None] = lambda text: None
    advance: Callable[[], None] = lambda: None
    record: Callable[[Record], None] = lambda record: None
    #: A scenario finished its last repeat: its records so far.
    scenario_done: Callable[[Scenario, list[Record]], None] = lambda scenario, records: None


def _stop_if_cancelled() -> None:
    # A library deep in a scenario may swallow the CancelledError of Ctrl-C (asyncio.run
    # cancels the main task); the request stays counted on the task, so honour it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def run_suite(
    profile: Profile,
    transports: Sequence[Transport],
    scenarios: Sequence[Scenario],
    repeats: int,
    settings: Settings,
    out_dir: Path,
    progress: Progress | None = None,
    seed: int = 1,
    fault_repeats: int | None = None,
    network: NetworkPath | None = None,
    via: str = "direct",
    client_kind: str = "python",
    security: str = "plain",
    securities: Sequence[str] = ("plain",),
    certificate: RunCertificate | None = None,
    loop: str = DEFAULT_LOOP,
    gc: str = DEFAULT_GC,
    engine: str = DEFAULT_ENGINE,
    ray: RayCluster | None = None,
) -> list[Record]:
    """Every record of the step, in the order measured. ``securities``: every security of
    the run (which decides whether a plain step of an always-TLS transport is a duplicate);
    ``certificate``: the run's, needed when ``security`` is ``tls``; ``ray``: the run's Ray
    cluster, needed when ``engine`` is ``ray``."""
    progress = progress or Progress()
    baselines: dict[tuple[str, str, int], BaselineResult] = {}
    records: list[Record] = []

    async def one(
        scenario: Scenario, transport: Transport, repeat: int, servers: ServerPool | None
    ) -> list[Record]:
        _stop_if_cancelled()
        ctx = RunContext(
            transport=transport,
            scenario=scenario.name,
            profile=profile,
            settings=settings,
            repeat=repeat,
            seed=seed,
            out_dir=out_dir,
            baselines=baselines,
            note=progress.note,
            servers=servers,
            network=network,
            via=via,
            client_kind=client_kind,
            security=security,
            certificate=certificate,
            loop=loop,
            gc=gc,
            engine=engine,
            ray=ray,
        )
        started = time.monotonic()
        why_not = (
            not_applicable(via, transport)
            or kind_not_applicable(client_kind, transport.name)
            or security_not_applicable(
                security,
                transport,
                scenario=scenario.name,
                client_kind=client_kind,
                securities=securities,
            )
            or engine_not_applicable(
                engine,
                scenario=scenario.name,
                client_kind=client_kind,
                security=security,
                joined=ray is not None and not ray.started,
            )
        )
        try:
            if why_not is not None:
                new = [ctx.record({"security": security}, {"not_applicable": why_not})]
            else:
                new = await scenario.run(ctx)
        except (HarnessError, StreamError, OSError, ValueError) as exc:
            failed = ctx.record({}, {})
            failed.error = traceback.format_exception_only(exc)[-1].strip()
            new = [failed]
        for record in new:
            if record.elapsed_s is None:
                record.elapsed_s = round(time.monotonic() - started, 2)
            progress.record(record)
        progress.advance()
        return new

    for scenario in [s for s in scenarios if runs_in(client_kind, s.name)]:
        n = scenario_repeats(scenario, repeats, fault_repeats)
        if scenario.concurrent and len(transports) > 1:
            for repeat in range(n):
                how = "in turn" if client_kind == "browser" else "at once"
                progress.step(
                    f"{scenario.name} · {len(transports)} transports {how} · "
                    f"repeat {repeat + 1}/{n}"
                )
                if client_kind == "browser":
                    # One transport at a time: every page renders in one Chromium on the
                    # same cores, and 20-odd pages at once (six per transport in the
                    # default black hole) starved the renderers until a page missed its
                    # 20 s deadline to answer the harness.
                    for t in transports:
                        records.extend(await one(scenario, t, repeat, None))
                    continue
                # Records stay in transport order, whichever finished first.
                done = await asyncio.gather(*(one(scenario, t, repeat, None) for t in transports))
                for new in done:
                    records.extend(new)
        else:
            for transport in transports:
                # A transport's repeats run back to back, each with its own client worker,
                # on servers kept for them (started once, stopped after the last repeat).
                async with ServerPool() as servers:
                    for repeat in range(n):
                        progress.step(
                            f"{scenario.name} · {transport.name} · repeat {repeat + 1}/{n}"
                        )
                        records.extend(await one(scenario, transport, repeat, servers))
        progress.scenario_done(scenario, [r for r in records if r.scenario == scenario.name])
        if network is not None:
            network.check()  # a path whose delay line died would make every figure wrong
    _stop_if_cancelled()
    return records


def scenario_repeats(scenario: Scenario, repeats: int, fault_repeats: int | None) -> int:
    """How many of the run's repeats ``scenario`` takes part in."""
    if scenario.kind == "fault" and fault_repeats is not None:
        repeats = min(repeats, fault_repeats)
    if scenario.max_repeats is not None:
        repeats = min(repeats, scenario.max_repeats)
    return repeats
