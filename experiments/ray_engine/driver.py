"""``python -m experiments.ray_engine``: run one client job over a Ray cluster.

Reads a :class:`~experiments.ray_engine.schema.RayJob` as JSON (argv[1], or stdin), joins the
cluster at ``address`` (the driver runs on one of its nodes: beside the server), waits for
``expect_nodes`` nodes, places the actors (:mod:`.placement`: node affinity, every node but
the driver's when there are others), gives each a share of the job's clients with no server
probe of its own, and speaks ``python -m experiments.worker``'s protocol on stdout: one
merged :class:`~experiments.worker.schema.WorkerReady` once every actor is ready, then one
merged :class:`~experiments.worker.schema.WorkerResult` (:mod:`.merge`) carrying an
:class:`~experiments.worker.schema.EngineRecord`.

Every actor's warm-up and window start together: the driver lets them all go once all are
ready. The driver probes the server (the job's ``server_pid``: CPU and RSS at the window's
edges, socket bytes just inside them) and Ray's own processes on this machine
(:mod:`.overhead`, just inside too), by its own clock: the window opens ``warmup_s`` after the
go (each actor's a few milliseconds later, when its go arrives) and lasts ``duration_s`` (or
until SIGTERM, or the actors' end for a job with a ``count``).

Anything but the protocol's lines goes to stderr (Ray's own messages and the actors' logs
included: fd 1 is pointed at fd 2 at start). SIGTERM ends the job early, as for a worker;
the actors die with the driver whatever happens (Ray ends an owner's actors with it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

import msgspec

from experiments.ray_engine.merge import merge_ready, merge_results
from experiments.ray_engine.overhead import OverheadProbe, overhead
from experiments.ray_engine.placement import actor_count, node_of, split_groups, target_nodes
from experiments.ray_engine.schema import ActorInfo, RayJob, decode_info, decode_ray_job
from experiments.worker.probe import ServerProbe, TcpBytes, tcp_bytes
from experiments.worker.schema import (
    ClientJob,
    EngineRecord,
    ServerUsage,
    WorkerReady,
    WorkerResult,
    decode_line,
    encode,
)

__all__ = ["DriverError", "main"]

PROG = "python -m experiments.ray_engine"
#: How often the driver asks the GCS which nodes are alive while it waits for them.
_NODE_POLL_S = 0.2


class DriverError(RuntimeError):
    """The cluster or an actor did not do what the job needs (one line on stderr)."""


class _Stopped(Exception):
    """SIGTERM before every actor was ready: nothing to report."""


async def _until(
    stop: asyncio.Event, waits: Sequence[asyncio.Future[Any]], timeout_s: float, what: str
) -> list[Any]:
    """Every one of ``waits``, unless ``stop`` is set first (:class:`_Stopped`) or
    ``timeout_s`` passes (:class:`DriverError` naming ``what``)."""
    gathered: asyncio.Future[list[Any]] = asyncio.gather(*waits)
    stopping = asyncio.ensure_future(stop.wait())
    either: set[asyncio.Future[Any]] = {gathered, stopping}
    try:
        done, _ = await asyncio.wait(either, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if gathered in done:
        return gathered.result()
    gathered.cancel()
    if stopping in done:
        raise _Stopped
    raise DriverError(f"{what}: not within {timeout_s:g} s")


def _ref(ref: Any) -> asyncio.Future[Any]:
    """An asyncio future of a Ray ``ObjectRef``."""
    return asyncio.wrap_future(ref.future())


async def _alive_nodes(ray: Any, expect: int, timeout_s: float) -> dict[str, str]:
    """Node id -> address of every alive node, once there are ``expect`` of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        alive = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        if len(alive) >= expect:
            return alive
        if loop.time() > deadline:
            raise DriverError(f"the cluster has {len(alive)} nodes alive, not {expect}")
        await asyncio.sleep(_NODE_POLL_S)  # polling the GCS: it has no wait for nodes


def _write(out: IO[bytes], line: WorkerReady | WorkerResult) -> None:
    out.write(encode(line) + b"\n")
    out.flush()


class _ServerEdges:
    """The server at the window's edges, as the built-in worker's probe reads it, but with
    its CPU and RSS read at the edges themselves and its sockets' byte counters (``ss``, tens
    of milliseconds) just inside: the actors, not the driver, end the window and drop their
    connections, so every reading must be over before they do."""

    def __init__(self, job: ClientJob) -> None:
        #: CPU, RSS and character I/O (no port: the socket counters are read apart).
        self.probe = ServerProbe(job.server_pid) if job.server_pid else None
        self.port, self.netns = job.server_port, job.server_netns
        self._wire_end: TcpBytes | None = None

    def _wire(self) -> TcpBytes | None:
        return tcp_bytes(self.port, self.netns) if self.port is not None else None

    def open(self) -> None:
        if self.probe is not None and (at := self.probe.snapshot()) is not None:
            self.probe.start = dataclasses.replace(at, wire=self._wire())

    def inner_end(self) -> None:
        if self.probe is not None:
            self._wire_end = self._wire()

    def close(self) -> None:
        if self.probe is not None and (at := self.probe.snapshot()) is not None:
            self.probe.end = dataclasses.replace(at, wire=self._wire_end)

    def usage(self) -> ServerUsage | None:
        return None if self.probe is None else self.probe.usage()


class _Driver:
    """One job over the cluster: the actors, what they said, and the window's probes."""

    def __init__(self, rjob: RayJob, out: IO[bytes], ray: Any) -> None:
        self.rjob, self.job, self.out, self.ray = rjob, rjob.job, out, ray
        self.stop = asyncio.Event()
        self.actors: list[Any] = []
        self.infos: list[ActorInfo] = []
        #: Node id -> address, of every alive node.
        self.nodes: dict[str, str] = {}

    async def run(self) -> None:
        from experiments.ray_engine.actor import RemoteClientActor

        rjob, job, ray = self.rjob, self.job, self.ray
        self.nodes = await _alive_nodes(ray, rjob.expect_nodes, rjob.start_timeout_s)
        targets = target_nodes(sorted(self.nodes), ray.get_runtime_context().get_node_id())
        n = rjob.actors or actor_count(
            job.clients, len(targets), rjob.max_clients_per_actor, rjob.min_actors
        )
        shares = split_groups(job.groups, n)
        strategies = ray.util.scheduling_strategies
        for i in range(len(shares)):
            where = strategies.NodeAffinitySchedulingStrategy(node_of(i, targets), soft=False)
            self.actors.append(RemoteClientActor.options(scheduling_strategy=where).remote())
        # Each actor runs its share; the server is probed here, not by the actors.
        share_jobs = [
            encode(msgspec.structs.replace(job, groups=share, server_pid=None, server_port=None))
            for share in shares
        ]
        started = await _until(
            self.stop,
            [_ref(a.start.remote(j)) for a, j in zip(self.actors, share_jobs, strict=True)],
            rjob.start_timeout_s,
            f"starting {len(self.actors)} actors",
        )
        self.infos = [decode_info(b) for b in started]
        said = await _until(
            self.stop,
            [_ref(a.ready.remote()) for a in self.actors],
            job.connect_timeout_s + rjob.start_timeout_s,
            "the actors' clients connecting",
        )
        readies = [line for b in said if isinstance(line := decode_line(b), WorkerReady)]
        if len(readies) != len(said):
            raise DriverError("an actor answered ready with another line")
        _write(self.out, merge_ready(readies, time.monotonic_ns()))
        result = await self._window()
        self.kill_actors()  # before the result: the harness may SIGTERM the driver after it
        _write(self.out, result)

    def kill_actors(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []

    def _ray_probe(self) -> OverheadProbe:
        from experiments.ray_engine.actor import host_key

        here = host_key()
        return OverheadProbe(
            self.rjob.ray_pids,
            {i.pid: i.ray_threads for i in self.infos if i.host == here},
            (os.getpid(),),
            os.path.dirname(self.ray.__file__),
        )

    async def _window(self) -> WorkerResult:
        """Let every actor go, probe the window's edges (stopping the actors on SIGTERM),
        and merge their results."""
        job, actors = self.job, self.actors
        edges = _ServerEdges(job)
        ray_probe = self._ray_probe()
        loop = asyncio.get_running_loop()
        # Taken before the go: every actor's window opens at or after ``opens``.
        opens = loop.time() + job.warmup_s
        await asyncio.gather(*(_ref(a.go.remote()) for a in actors))
        results = asyncio.gather(*(_ref(a.result.remote()) for a in actors))
        stopping = asyncio.ensure_future(self.stop.wait())

        async def until(at: float | None) -> None:
            # Loop time ``at``, SIGTERM, or the actors' end (a job with a ``count``).
            ended = asyncio.ensure_future(asyncio.wait([results]))
            waits: set[asyncio.Future[Any]] = {stopping, ended}
            if at is not None:
                waits.add(asyncio.ensure_future(asyncio.sleep(max(0.0, at - loop.time()))))
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for f in pending:
                if f is not stopping:
                    f.cancel()

        try:
            await until(opens)
            began = loop.time()
            edges.open()
            ray_start = ray_probe.snapshot()
            slow = loop.time() - began  # what the readings inside the window take
            closes = None if job.duration_s is None else opens + job.duration_s
            # The slow readings end before the actors close their windows (and their
            # clients' connections); the server's CPU and RSS are read at the edge itself.
            await until(None if closes is None else closes - 2 * slow - 0.02)
            ray_end = ray_probe.snapshot()
            edges.inner_end()
            await until(closes)
            edges.close()
            if self.stop.is_set():
                await asyncio.gather(*(_ref(a.stop.remote()) for a in actors))
            budget = 60.0 + (job.duration_s or 0.0)
            try:
                parts = await asyncio.wait_for(asyncio.shield(results), budget)
            except TimeoutError:
                raise DriverError(f"the actors gave no result within {budget:g} s") from None
        finally:
            stopping.cancel()
        lines = [decode_line(b) for b in parts]
        actor_results = [r for r in lines if isinstance(r, WorkerResult)]
        if len(actor_results) != len(lines):
            raise DriverError("an actor's result was not a result line")
        cost = overhead(ray_start, ray_end)
        nodes = list(dict.fromkeys(i.node_id for i in self.infos))
        engine = EngineRecord(
            name="ray",
            version=self.ray.__version__,
            nodes=nodes,
            node_addresses=[self.nodes.get(n, "?") for n in nodes],
            actors=len(actors),
            clients_per_actor=[r.clients_requested for r in actor_results],
            clocks=[r.clock for r in actor_results],
            overhead_cpu_s=cost.cpu_s,
            overhead_rss_bytes=cost.rss_bytes,
            overhead_processes=cost.processes,
        )
        return merge_results(actor_results, server=edges.usage(), engine=engine)


async def _drive(rjob: RayJob, out: IO[bytes]) -> None:
    import ray
    import ray.util.scheduling_strategies  # the driver places actors by node

    driver = _Driver(rjob, out, ray)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, driver.stop.set)
    ray.init(address=rjob.address, logging_level=logging.WARNING, log_to_driver=True)
    try:
        await driver.run()
    except _Stopped:
        return
    finally:
        driver.kill_actors()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    # ``kill -USR1 PID`` prints every thread's stack to stderr: how a hung driver is diagnosed.
    faulthandler.register(signal.SIGUSR1)
    args = sys.argv[1:] if argv is None else argv
    text = args[0] if args else sys.stdin.read()
    if not text.strip():
        return 0
    try:
        rjob = decode_ray_job(text)
    except msgspec.DecodeError as exc:  # ValidationError is one
        print(f"{PROG}: bad job: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if rjob.auth_token is not None:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=rjob.auth_token)
    # The protocol gets its own descriptor; whatever else writes to fd 1 (Ray, the actors'
    # logs it forwards) lands on stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        asyncio.run(_drive(rjob, out))
    except KeyboardInterrupt:
        return 130
    except DriverError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        out.close()
    return 0
