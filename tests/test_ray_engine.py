"""Clients as Ray actors (``--engine ray``): placement and merging (pure), then real Ray.

The pure tests need no Ray. The others start a real Ray cluster with the run's own cluster
code (a local head, or a head and worker nodes in network namespaces: ``network``), run a
tcp server and a job of clients spread over actors through the driver process, and check the
lines it speaks, the delivery, the engine record and the clock bound, and that no Ray process
and no temporary directory outlives the cluster.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os

import msgspec
import psutil
import pytest

from experiments.clock_offset import ClockOffset
from experiments.histogram import encode_latencies, merge, summarize
from experiments.network import NetworkPath
from experiments.ray_engine.address import BadAddress, parse_address
from experiments.ray_engine.dimension import engine_not_applicable
from experiments.ray_engine.merge import merge_ready, merge_results, merge_window
from experiments.ray_engine.overhead import (
    OverheadSnapshot,
    ProcessSample,
    is_ray_process,
    overhead,
)
from experiments.ray_engine.placement import actor_count, split_groups, target_nodes
from experiments.ray_engine.report import ray_figures, ray_section
from experiments.results import Record
from experiments.run.cli import main as cli_main
from experiments.run.processes import ServerProcess, settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS
from experiments.scenarios.delivery import judge
from experiments.worker.schema import (
    ClientGroup,
    ClientJob,
    ClientOutcome,
    EngineRecord,
    Window,
    WorkerReady,
    WorkerResult,
)
from model.ledger import DeliveryCounts, PosteriorError
from tests.support import NEEDS_NETWORK_PATHS, clocked_tcp_server_on
from transports.settings import Settings

# Real Ray clusters are CPU-heavy for a while: one at a time under ``pytest -n 2``.
pytestmark = pytest.mark.xdist_group("cpu-heavy")

NEEDS_RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed (the experiments extra)"
)


# -- pure: placement ----------------------------------------------------------------------


def test_actor_count_keeps_every_actor_under_its_limit_and_fills_every_host() -> None:
    assert actor_count(10_000, 4) == 4  # 2,500 each
    assert actor_count(10_001, 4) == 8  # one more would overload: a second actor per host
    assert actor_count(1_000, 1, at_least=2) == 2  # as many as the built-in workers
    assert actor_count(3, 4) == 3  # never an actor without a client
    assert actor_count(200, 2) == 2
    with pytest.raises(ValueError):
        actor_count(0, 1)


def test_split_groups_deals_every_client_out_evenly() -> None:
    groups = (ClientGroup(5), ClientGroup(3, role="slow", read_rate_hz=2.0))
    shares = split_groups(groups, 3)
    assert [sum(g.count for g in s) for s in shares] == [3, 3, 2]
    for role, total in (("normal", 5), ("slow", 3)):
        assert sum(g.count for s in shares for g in s if g.role == role) == total
    assert all(g.read_rate_hz == 2.0 for s in shares for g in s if g.role == "slow")
    # More actors than clients: no empty share.
    assert [s[0].count for s in split_groups((ClientGroup(2),), 4)] == [1, 1]


def test_actors_go_to_every_node_but_the_drivers_unless_it_is_alone() -> None:
    assert target_nodes(["head", "a", "b"], "head") == ["a", "b"]
    assert target_nodes(["head"], "head") == ["head"]


# -- pure: merging ------------------------------------------------------------------------


def _outcome(index: int, delivered: int) -> ClientOutcome:
    return ClientOutcome(
        index=index,
        role="normal",
        received=delivered,
        received_in_window=delivered,
        counts=DeliveryCounts(delivered=delivered),
        posterior_error=PosteriorError(0.0, 0.0, 0.0),
        epochs=["ab"],
        events=[],
    )


def _result(
    clients: int, window: Window, latencies_ns: list[int], clock: ClockOffset | None, cpu: float
) -> WorkerResult:
    return WorkerResult(
        transport="tcp",
        clients_requested=clients,
        ready_ns=(window.start_ns or 0) - 100,
        window=window,
        cpu_window_s=cpu,
        cpu_total_s=2 * cpu,
        server=None,
        settings=Settings(),
        latency={"normal": encode_latencies(latencies_ns)},
        clients=[_outcome(i, 10 + i) for i in range(clients)],
        nofile=4096 * clients,
        clock=clock,
    )


ENGINE = EngineRecord(
    name="ray",
    version="test",
    nodes=["n1", "n2"],
    node_addresses=["10.0.0.1", "10.0.0.2"],
    actors=2,
    clients_per_actor=[2, 3],
    clocks=[None, None],
    overhead_cpu_s=0.5,
    overhead_rss_bytes=1,
    overhead_processes=3,
)


def test_merged_results_pool_clients_latencies_cpu_and_the_window() -> None:
    tight = ClockOffset(offset_ns=0, bound_ns=50_000, rtt_ns=100_000, exchanges=8, replies=8)
    # The second actor's clock runs 1 ms behind the server's: its times move forward.
    wide = ClockOffset(offset_ns=1_000_000, bound_ns=300_000, rtt_ns=600_000, exchanges=8,
                       replies=7)  # fmt: skip
    a = _result(2, Window(10_000_000, 20_000_000), [1_000_000] * 30, tight, 0.25)
    b = _result(3, Window(9_500_000, 19_500_000), [3_000_000] * 10, wide, 0.5)
    merged = merge_results([a, b], server=None, engine=ENGINE)
    assert [c.index for c in merged.clients] == [0, 1, 2, 3, 4]
    assert [c.counts.delivered for c in merged.clients] == [10, 11, 10, 11, 12]
    assert merged.clients_requested == 5
    assert merged.cpu_window_s == pytest.approx(0.75)
    assert merged.cpu_total_s == pytest.approx(1.5)
    assert merged.nofile == 8192
    # Earliest start to latest end, each on the server's clock.
    assert merged.window == Window(10_000_000, 20_500_000)
    assert merged.ready_ns == 10_500_000 - 100
    assert merged.clock == wide  # the widest bound
    assert merged.engine == ENGINE
    pooled = merge([merged.latency["normal"]])
    assert pooled is not None
    summary = summarize(pooled)
    assert summary.count == 40
    assert summary.p50_ms == pytest.approx(1.0, rel=0.01)
    assert summary.value("max") == pytest.approx(3.0, rel=0.01)


def test_merging_refuses_actors_that_ran_differently() -> None:
    a = _result(1, Window(1, 2), [1_000], None, 0.1)
    b = msgspec.structs.replace(_result(1, Window(1, 2), [1_000], None, 0.1), loop="uvloop")
    with pytest.raises(ValueError, match="loop"):
        merge_results([a, b], server=None, engine=ENGINE)
    with pytest.raises(ValueError):
        merge_results([], server=None, engine=ENGINE)


def test_a_window_that_never_opened_leaves_its_edges_out() -> None:
    opened = _result(1, Window(5, 9), [1_000], None, 0.1)
    never = _result(1, Window(None, None), [1_000], None, 0.1)
    assert merge_window([opened, never]) == Window(5, 9)
    assert merge_window([never]) == Window(None, None)


def test_merged_ready_counts_every_actors_clients() -> None:
    ready = merge_ready([WorkerReady(1, 99, 100), WorkerReady(2, 100, 100)], at_ns=7)
    assert ready == WorkerReady(7, 199, 200)


# -- pure: Ray's overhead, the address ------------------------------------------------------


def test_ray_processes_are_told_by_their_command_lines() -> None:
    ray_dir = "/venv/lib/python3.11/site-packages/ray"
    assert is_ray_process(["ray::IDLE"], ray_dir)
    assert is_ray_process([f"{ray_dir}/core/src/ray/raylet/raylet", "--x"], ray_dir)
    assert is_ray_process(["/venv/bin/python", "-m", "ray.util.client.server"], ray_dir)
    assert is_ray_process(["/venv/bin/ray", "start", "--head"], ray_dir)
    assert not is_ray_process(["/venv/bin/python", "-m", "experiments.worker"], ray_dir)
    assert not is_ray_process(["/usr/bin/raytracer"], ray_dir)
    assert not is_ray_process([], ray_dir)


def test_overhead_counts_cpu_between_snapshots_and_rss_at_the_end() -> None:
    start = OverheadSnapshot(
        processes=(ProcessSample(1, 100.0, 2.0, 10), ProcessSample(2, 100.0, 1.0, 20)),
        actor_threads=(ProcessSample(9, 50.0, 0.5, 0),),
    )
    end = OverheadSnapshot(
        processes=(
            ProcessSample(1, 100.0, 2.5, 30),
            ProcessSample(2, 200.0, 0.25, 40),  # pid 2 reused: a new process, all of it
            ProcessSample(3, 300.0, 0.125, 50),  # started in the window
        ),
        actor_threads=(ProcessSample(9, 50.0, 0.75, 0),),
    )
    cost = overhead(start, end)
    assert cost.cpu_s == pytest.approx(0.5 + 0.25 + 0.125 + 0.25)
    assert cost.rss_bytes == 120
    assert cost.processes == 4


def test_a_ray_address_is_host_colon_port() -> None:
    assert parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert parse_address("head.example:10001") == ("head.example", 10001)
    for bad in ("10.0.0.5", ":6379", "10.0.0.5:", "10.0.0.5:70000", "a b:1", "h:x"):
        with pytest.raises(BadAddress):
            parse_address(bad)


# -- pure: the dimension and the report ------------------------------------------------------


def test_only_the_fanout_runs_its_python_clients_over_ray() -> None:
    def why(**kw: object) -> str | None:
        step: dict[str, object] = {
            "scenario": "fanout", "client_kind": "python", "security": "plain", "joined": False
        }  # fmt: skip
        step.update(kw)
        return engine_not_applicable("ray", **step)  # type: ignore[arg-type]

    assert why() is None
    assert why(security="tls") is None  # the CA file is on this machine
    for reason in (why(scenario="latency"), why(client_kind="browser"),
                   why(security="tls", joined=True)):  # fmt: skip
        assert reason is not None and reason.startswith("not applicable")
    assert (
        engine_not_applicable(
            "builtin", scenario="restart", client_kind="browser", security="tls", joined=True
        )
        is None
    )


def _fanout_record(repeat: int, p99: float, bound_ms: float) -> Record:
    result = _result(2, Window(0, 10), [1_000], None, 0.1)
    clock = ClockOffset(offset_ns=0, bound_ns=int(bound_ms * 1e6), rtt_ns=1, exchanges=1,
                        replies=1)  # fmt: skip
    result = msgspec.structs.replace(result, engine=ENGINE, clock=clock)
    params, metrics = ray_figures(result)
    metrics.update(latency_ms_p50=1.0, latency_ms_p99=p99, delivered_fraction=1.0)
    return Record(
        transport="tcp",
        scenario="fanout",
        repeat=repeat,
        params={"engine": "ray", "network": "lan", "clients": 10_000, **params},
        metrics=metrics,
    )


def test_the_report_shows_nodes_actors_and_the_clock_bound_beside_the_latencies() -> None:
    builtin = Record(transport="tcp", scenario="fanout", repeat=0,
                     params={"engine": "builtin"}, metrics={"latency_ms_p99": 1.0})  # fmt: skip
    assert ray_section([builtin]) == ""
    records = [_fanout_record(0, 4.0, 0.25), _fanout_record(1, 6.0, 0.5), builtin]
    assert records[0].params["ray_nodes"] == 2 and records[0].params["ray_actors"] == 2
    assert records[0].metrics["ray_overhead_cpu_s"] == 0.5
    table = ray_section(records)
    row = [line for line in table.splitlines() if line.startswith("| tcp ")]
    # nodes, actors, p50, the p99 median, the widest bound, delivered %, Ray CPU, 2 repeats
    assert row == ["| tcp | 10,000 | lan | 2 | 2 | 1.00 | 5.00 | 0.500 | 100.0 | 0.50 | 0 | 2 |"]


# -- the command line -------------------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_refuses_a_ray_address_without_the_ray_engine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _one_error_line(capsys, ["--scenarios", "fanout", "--ray-address", "10.0.0.5:6379"])
    assert "--engine ray" in err


def test_cli_refuses_a_malformed_ray_address(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_error_line(
        capsys, ["--scenarios", "fanout", "--engine", "ray", "--ray-address", "head-6379"]
    )
    assert "HOST:PORT" in err


def test_cli_refuses_an_unknown_engine(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_error_line(capsys, ["--engine", "spark"])
    assert "builtin" in err


# -- real Ray ---------------------------------------------------------------------------------


def _family(pids: tuple[int, ...]) -> list[psutil.Process]:
    """The ``ray start`` processes and everything they started."""
    out: list[psutil.Process] = []
    for pid in pids:
        root = psutil.Process(pid)
        out += [root, *root.children(recursive=True)]
    return out


def _still_running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(p.cmdline())[:120])
        except psutil.NoSuchProcess:
            continue
    return alive


def _job(server: ServerProcess, host: str, clients: int, **kwargs: object) -> ClientJob:
    assert server.clock_port is not None
    return ClientJob(
        transport="tcp",
        host=host,
        port=server.port,
        groups=(ClientGroup(clients),),
        settings=EXPERIMENT_SETTINGS,
        warmup_s=0.3,
        duration_s=1.0,
        connect_timeout_s=30.0,
        server_pid=server.pid,
        server_port=server.port,
        clock_port=server.clock_port,
        **kwargs,  # type: ignore[arg-type]
    )


def _check_delivery(result: WorkerResult, clients: int) -> None:
    metrics = judge(result.clients)
    assert metrics["delivery_ok"] is True, metrics.get("delivery_problems")
    assert len(result.clients) == clients
    assert metrics["lost"] == 0 and metrics["duplicated"] == 0
    assert all(c.received_in_window > 0 for c in result.clients)


def _within_bound(clock: ClockOffset | None) -> None:
    assert clock is not None
    assert clock.replies > 0
    assert abs(clock.offset_ns) <= clock.bound_ns, clock


@NEEDS_RAY
@pytest.mark.timeout(150)
async def test_a_job_over_two_actors_of_a_local_ray_cluster() -> None:
    from experiments.ray_engine.clients import ray_clients
    from experiments.ray_engine.cluster import RayCluster

    cluster = RayCluster.local()
    async with cluster:
        family = _family(cluster.ray_pids)
        temp_dirs = cluster.temp_dirs
        assert temp_dirs and all(os.path.isdir(d) for d in temp_dirs)
        server = ServerProcess("tcp", rate_hz=20.0, settings=EXPERIMENT_SETTINGS, clock=True)
        async with server:
            job = _job(server, "127.0.0.1", 200)
            async with ray_clients(job, cluster, actors=2) as clients:
                ready = await clients.wait_ready()
                result = await clients.result()
            # The actor runs its clients on the job's own loop, whatever loop Ray runs.
            on_uvloop = _job(server, "127.0.0.1", 10, loop="uvloop")
            async with ray_clients(on_uvloop, cluster) as clients:
                uvloop_result = await clients.result()
        await settle_teardowns()
    assert ready.connected == ready.clients == 200
    _check_delivery(result, 200)
    engine = result.engine
    assert engine is not None and engine.name == "ray"
    assert engine.actors == 2 and engine.clients_per_actor == [100, 100]
    # One node, the head (Ray puts it at this machine's address, not 127.0.0.1).
    assert len(engine.nodes) == 1
    assert engine.node_addresses == [cluster.address.rpartition(":")[0]]
    assert engine.overhead_cpu_s > 0 and engine.overhead_rss_bytes > 0
    assert len(engine.clocks) == 2
    for clock in engine.clocks:
        _within_bound(clock)
    _within_bound(result.clock)
    assert result.server is not None and result.server.cpu_s > 0  # probed by the driver
    assert result.window.seconds == pytest.approx(1.0, abs=0.3)
    assert result.loop == "asyncio"
    assert uvloop_result.loop == "uvloop"
    _check_delivery(uvloop_result, 10)
    # Nothing of the cluster is left: no process, no temporary directory.
    assert _still_running(family) == []
    assert not any(os.path.exists(d) for d in temp_dirs)


@NEEDS_RAY
@pytest.mark.timeout(90)
async def test_a_cancelled_run_leaves_no_ray_process_behind() -> None:
    """Ctrl-C cancels the run's task while its cluster is up: the cluster stops all the same."""
    from experiments.ray_engine.cluster import RayCluster

    cluster = RayCluster.local()
    up = asyncio.Event()

    async def run() -> None:
        async with cluster:
            up.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(run())
    async with asyncio.timeout(60):
        await up.wait()
    family, temp_dirs = _family(cluster.ray_pids), cluster.temp_dirs
    assert len(family) > 3  # ray start, GCS, raylet, ...
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _still_running(family) == []
    assert not any(os.path.exists(d) for d in temp_dirs)


@NEEDS_RAY
@pytest.mark.network
@NEEDS_NETWORK_PATHS
@pytest.mark.timeout(180)
async def test_actors_on_two_simulated_hosts_reach_the_server_across_the_path() -> None:
    from experiments.ray_engine.clients import ray_clients
    from experiments.ray_engine.cluster import RayCluster

    async with NetworkPath("lan", clients=2) as path:
        cluster = RayCluster.on_path(path, hosts=2)
        async with cluster:
            family = _family(cluster.ray_pids)
            server = clocked_tcp_server_on(path, 20.0)
            async with server:
                job = _job(server, path.server_addr, 100, server_netns=path.server_ns)
                async with ray_clients(job, cluster) as clients:
                    await clients.wait_ready()
                    result = await clients.result()
            await settle_teardowns()
        assert _still_running(family) == []
        client_addresses = set(path.client_addr)
    _check_delivery(result, 100)
    # The driver, beside the server, probed it and counted its connections there.
    assert result.server is not None and result.server.tcp_connections == 100
    engine = result.engine
    assert engine is not None
    assert engine.actors == 2 and len(set(engine.nodes)) == 2
    assert set(engine.node_addresses) == client_addresses
    for clock in engine.clocks:
        _within_bound(clock)
