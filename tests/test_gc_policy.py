"""The ``--gc default,freeze`` dimension: the policy, the processes that apply it, a run."""

from __future__ import annotations

import asyncio
import gc
import re
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from experiments.baselines import ASYNCIO_TCP
from experiments.baselines.process import PusherServer, measure_pusher
from experiments.report.garbage_collector import GC, gc_rows, gc_section
from experiments.results import Record, Results, Scalar, load_results
from experiments.run.context import RunContext
from experiments.run.processes import Placement, settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS, PROFILES
from experiments.worker.schema import ClientGroup
from tests.support import ENVIRONMENT
from transports.announce import parse_announcement
from transports.gc_policy import (
    AS_IT_COMES,
    FREEZE_THRESHOLDS,
    UnknownGc,
    collector_held,
    parse_gcs,
    policy_words,
)
from transports.registry import get

ROOT = Path(__file__).resolve().parent.parent
#: What ``serve`` and a pusher's server say of their collector in their ``serving ...`` line.
STATE = re.compile(r" gc=(\w+) thresholds=(\d+),(\d+),(\d+) frozen=(\d+)(?: off)?(?:\s|$)")


def test_policy_names_and_words() -> None:
    assert parse_gcs(" freeze, default,freeze ") == ("freeze", "default")
    for bad in ("off", "", "default,,Freeze"):
        with pytest.raises(UnknownGc, match="unknown --gc"):
            parse_gcs(bad)
    assert "gc.freeze()" in policy_words("freeze") and "50000,50,100" in policy_words("freeze")
    assert "as it comes" in policy_words("default")


async def _serving_line(argv: list[str]) -> tuple[str, int]:
    """Start ``argv`` (a server with ``--ready-json``), return its ``serving ...`` line and
    pid once it has announced itself; stop it."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    human = ""
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, (await proc.communicate())[1].decode()[-2000:]
                if line.startswith("serving "):
                    human = line
                elif parse_announcement(line) is not None:
                    return human, proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


def _state(human: str) -> tuple[str, tuple[int, int, int], int]:
    match = STATE.search(human)
    assert match, human
    name, young, middle, full, frozen = match.groups()
    return name, (int(young), int(middle), int(full)), int(frozen)


@pytest.mark.timeout(60)
async def test_a_server_really_runs_under_the_policy_it_was_given() -> None:
    serve = [sys.executable, "-m", "transports", "serve", "tcp", "--port", "0", "--ready-json"]
    # The thresholds and the frozen count are read back from the server's interpreter.
    name, thresholds, frozen = _state((await _serving_line([*serve, "--gc", "freeze"]))[0])
    assert (name, thresholds) == ("freeze", FREEZE_THRESHOLDS) and frozen > 10_000
    name, thresholds, frozen = _state((await _serving_line(serve))[0])
    assert (name, thresholds, frozen) == ("default", AS_IT_COMES, 0)
    # So does a baseline pusher's server.
    pusher = [sys.executable, "-m", "experiments.baselines", "serve", "asyncio-tcp"]
    name, thresholds, frozen = _state((await _serving_line([*pusher, "--gc", "freeze"]))[0])
    assert (name, thresholds) == ("freeze", FREEZE_THRESHOLDS) and frozen > 10_000


def test_an_unknown_policy_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "transports", "serve", "tcp", "--gc", "off"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == "python -m transports: unknown --gc 'off'; known: default, freeze"


@pytest.mark.timeout(60)
async def test_every_process_of_a_step_gets_the_steps_policy(tmp_path: Path) -> None:
    ctx = RunContext(
        transport=get("tcp"),
        scenario="latency",
        profile=PROFILES["quick"],
        settings=EXPERIMENT_SETTINGS,
        repeat=0,
        seed=1,
        out_dir=tmp_path,
        gc="freeze",
    )
    assert ctx.dimensions["gc"] == "freeze" and ctx.place.gc == "freeze"
    job = ctx.job(1, (ClientGroup(1),))
    assert job.gc == "freeze"
    pusher = PusherServer(ASYNCIO_TCP, seed=1, p=0.72, ready_timeout_s=20.0, place=ctx.place)
    assert pusher.argv[pusher.argv.index("--gc") + 1] == "freeze"
    async with ctx.server(200.0, keep=False) as server:
        assert server.argv[server.argv.index("--gc") + 1] == "freeze"
        # The worker applies the job's policy once connected and still reads every sample.
        async with ctx.clients(ctx.job(server.port, (ClientGroup(2),), count=20)) as reader:
            result = await reader.result(timeout_s=30.0)
        assert [c.received for c in result.clients] == [20, 20]
    assert ctx.record({}, {}).params["gc"] == "freeze"
    # Both sides of a pusher, under freeze, measure as they do by default.
    measured = await measure_pusher(
        ASYNCIO_TCP,
        seed=1,
        p=0.72,
        warmup_s=0.2,
        duration_s=0.3,
        ready_timeout_s=20.0,
        place=Placement(gc="freeze"),
    )
    assert measured.error is None and measured.samples_in_window > 0
    await settle_teardowns()


def _record(transport: str, gc: str, scenario: str, clients: int, **metrics: float) -> Record:
    params: dict[str, Scalar] = {"gc": gc, "loop": "asyncio"}
    if scenario == "fanout":
        params.update(clients=clients, rate_hz=10.0)
    else:
        params.update(rate_hz=1000.0)
    return Record(
        transport=transport,
        scenario=scenario,
        repeat=0,
        params=params,
        metrics={"delivery_ok": True, **metrics},
    )


def test_the_section_compares_like_with_like_once() -> None:
    records = [
        _record("tcp", gc, "fanout", n, server_cpu_percent=cpu)
        for gc, n, cpu in (
            ("default", 10, 2.0),
            ("default", 100, 20.0),
            ("default", 1000, 40.0),
            ("freeze", 10, 1.0),
            ("freeze", 100, 15.0),
        )
    ]
    records.append(_record("sse", "default", "fanout", 100, server_cpu_percent=30.0))
    rows = {r.transport: r for r in gc_rows(records)}
    assert set(rows) == {"tcp"}  # sse ran one policy only
    tcp = rows["tcp"]
    assert tcp.clients == 100  # the largest size both policies ran
    cpu = next(c for c in tcp.comparisons if c.measure.metric == "server_cpu_percent")
    assert (cpu.first.value, cpu.second.value) == (20.0, 15.0)
    assert cpu.ratio == pytest.approx(0.75)
    results = Results(
        schema=2, created="", profile="quick", environment=ENVIRONMENT, settings=EXPERIMENT_SETTINGS
    )
    results.records = records
    section = gc_section(results)
    assert section.startswith(f"## {GC.title}") and section.count(f"## {GC.title}") == 1
    assert "| tcp | 100 |" in section and "×0.75" in section
    results.records = [r for r in records if r.params["gc"] == "default"]
    assert gc_section(results) == ""


@pytest.mark.timeout(150)
def test_a_quick_run_under_both_policies(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "--profile",
            "quick",
            "--scenarios",
            "latency",
            "--transports",
            "tcp",
            "--gc",
            "default,freeze",
            "--network",
            "loopback",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=140,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = load_results(out)
    assert {(r.transport, r.params["gc"]) for r in results.records} == {
        ("tcp", "default"),
        ("tcp", "freeze"),
    }
    for r in results.records:
        assert r.error is None and r.metrics["delivery_ok"] is True, r
    conditions = results.environment.conditions
    assert conditions["gc"] == "default,freeze"
    assert "gc.freeze()" in str(conditions["gc_freeze"])
    report = (out / "report.md").read_text()
    assert report.count("## Garbage collector") == 1
    assert "gc_freeze: after start-up gc.collect(), gc.freeze()" in report


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_collector_is_held_off_for_a_start_up_then_collects_and_runs_again() -> None:
    assert gc.isenabled()
    gone: list[bool] = []
    with collector_held():
        assert not gc.isenabled()
        cycle = _Cycle()
        weakref.finalize(cycle, gone.append, True)
        del cycle  # cyclic garbage: only a collection frees it
        assert gone == []
    assert gone == [True]
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off_after_a_start_up() -> None:
    gc.disable()
    try:
        with collector_held():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
