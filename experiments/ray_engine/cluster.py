"""The Ray cluster a run's clients use: one the run starts for itself, or one it joins.

::

    async with RayCluster.local() as cluster:           # a head here, the only node
    async with RayCluster.on_path(path, hosts=4) as c:  # simulated hosts (namespaces)
    async with RayCluster.join("10.0.0.5:6379") as c:   # the user's cluster: nothing started

A cluster the run starts is ``ray start --head --block`` (and on an emulated network path one
``ip netns exec <client ns i> ray start --address <head> --block`` per simulated host, each
with its client namespace's address), every node with its own short temporary directory under
``/tmp`` (Ray's unix sockets live there: a path must stay under 108 bytes), no dashboard, no
usage stats, a small object store (the actors exchange only their result lines). Each ``ray
start`` runs in a session of its own (a terminal's Ctrl-C reaches the harness, which tears
down in order) and gets SIGTERM should the harness die. Leaving the block, on success,
failure or Ctrl-C, stops every node: SIGTERM to ``ray start``, which stops the processes it
started, then after :data:`STOP_TIMEOUT_S` SIGKILL to its process group and every descendant
still alive; then the temporary directories are removed. Teardown is synchronous, SIGINT
held off, so a second Ctrl-C cannot cut it short.

Ray binds a node to this machine's address even when told 127.0.0.1, so a cluster the run
starts requires a token (Ray's token authentication) that only its nodes and the driver hold.

What the harness needs: ``address`` (the GCS, for the driver), ``expect_nodes``, ``ray_pids``
(the ``ray start`` processes: their trees are Ray's cost), ``driver_prefix`` (where the
driver runs: beside the head, which is beside the server) and ``server_host`` (for a joined
cluster, this machine's address towards the head: the server must listen there for clients
on other machines to reach it; None: the run's usual address).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import TracebackType

import psutil

from experiments.network import NetworkPath
from experiments.ray_engine.address import parse_address, route_source
from experiments.sigint import sigint_held

__all__ = ["OBJECT_STORE_BYTES", "RAY_ENV", "STOP_TIMEOUT_S", "RayCluster", "RayClusterError"]

#: The smallest object store Ray accepts is 75 MiB; the actors' results are a few MB at most.
OBJECT_STORE_BYTES = 80_000_000
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
#: What ``ray start --block`` prints once its node is up and its address written.
_STARTED = b"will now block forever"
#: Every Ray process of the run: no usage statistics sent anywhere.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
_PR_SET_PDEATHSIG = 1


class RayClusterError(RuntimeError):
    """A node did not start, or the cluster is not usable (one line)."""


def _die_with_parent() -> None:
    # In the child, before exec: SIGTERM when the harness dies (a SIGKILLed harness cannot
    # tear down), which ``ray start --block`` answers by stopping its node.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class _Node:
    """One ``ray start --block`` process, its output, its temporary directory."""

    def __init__(
        self, name: str, prefix: Sequence[str], args: Sequence[str], env: dict[str, str]
    ) -> None:
        self.name = name
        self.env = env
        self.prefix, self.args = tuple(prefix), tuple(args)
        self.temp_dir: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: collections.deque[bytes] = collections.deque(maxlen=40)
        self._settled = threading.Event()
        self._started = False

    def start(self, extra: Sequence[str] = ()) -> None:
        # Short: /tmp/rayXXXXXXXX/session_<date>_<pid>/sockets/plasma_store stays well
        # under the 107 bytes of a unix socket path.
        self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        argv = [
            *self.prefix,
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
            "--temp-dir", self.temp_dir,
            "--disable-usage-stats",
            "--object-store-memory", str(OBJECT_STORE_BYTES),
            *self.args,
            *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, **RAY_ENV, **self.env},
        )
        threading.Thread(target=self._read, name=f"ray-{self.name}", daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:  # until the process ends
            self.output.append(line)
            if _STARTED in line:
                self._started = True
                self._settled.set()
        self._settled.set()

    async def wait_started(self, timeout_s: float) -> None:
        await asyncio.to_thread(self._settled.wait, timeout_s)
        if not self._started:
            said = b"".join(self.output).decode(errors="replace").strip()[-1500:]
            state = "exited" if self.proc is not None and self.proc.poll() is not None else "hung"
            raise RayClusterError(f"ray {self.name} {state} before it started: {said}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None:
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                family = []
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Anything ``ray start`` left (it stops its own; a node that hung may not have).
            _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT_S)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=5.0)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def head_address(self) -> str:
        """The GCS address the head wrote (``ray_current_cluster`` in its temp dir)."""
        assert self.temp_dir is not None
        path = os.path.join(self.temp_dir, "ray_current_cluster")
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as exc:
            raise RayClusterError(f"the Ray head wrote no address: {exc}") from exc


class RayCluster:
    """A Ray cluster for the run: use :meth:`local`, :meth:`on_path` or :meth:`join`.

    A cluster the run starts requires a token of its own (Ray's token authentication, made
    for the run, in the nodes' environment and the driver's job, never on a command line):
    Ray binds its nodes to the machine's address even when told 127.0.0.1, and without a
    token anyone who reaches that address could run code on the cluster.
    """

    def __init__(
        self,
        *,
        address: str = "",
        server_host: str | None = None,
        driver_prefix: Sequence[str] = (),
        auth_token: str | None = None,
    ) -> None:
        self.address = address
        self.server_host = server_host
        self.driver_prefix = tuple(driver_prefix)
        #: The cluster's token (None: a joined cluster; the user's environment says).
        self.auth_token = auth_token
        self._head: _Node | None = None
        self._workers: list[_Node] = []

    @property
    def expect_nodes(self) -> int:
        """The nodes the driver waits for (a joined cluster: at least one)."""
        return 1 + len(self._workers)

    @property
    def started(self) -> bool:
        """Whether the run starts this cluster (False: it joined the user's)."""
        return self._head is not None

    def _nodes(self) -> list[_Node]:
        return [self._head, *self._workers] if self._head is not None else []

    @property
    def ray_pids(self) -> tuple[int, ...]:
        """The ``ray start`` processes (empty for a joined cluster)."""
        return tuple(n.proc.pid for n in self._nodes() if n.proc is not None)

    @property
    def temp_dirs(self) -> list[str]:
        """The nodes' temporary directories (removed when the cluster stops)."""
        return [n.temp_dir for n in self._nodes() if n.temp_dir is not None]

    @classmethod
    def join(cls, address: str) -> RayCluster:
        """The user's cluster at ``HOST:PORT`` (this machine must be one of its nodes)."""
        host, port = parse_address(address)
        return cls(address=f"{host}:{port}", server_host=route_source(host, port))

    @classmethod
    def _own(cls, driver_prefix: Sequence[str] = ()) -> tuple[RayCluster, dict[str, str]]:
        token = secrets.token_hex(32)
        cluster = cls(driver_prefix=driver_prefix, auth_token=token)
        return cluster, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}

    @classmethod
    def local(cls, num_cpus: int = 1) -> RayCluster:
        """A head node here (actors run on it: it is the only node)."""
        cluster, env = cls._own()
        cluster._head = _Node(
            "head",
            (),
            [
                "--head", "--include-dashboard=false",
                "--node-ip-address", "127.0.0.1", "--port", "0",
                "--num-cpus", str(num_cpus),
                # Ports Ray would otherwise take at fixed numbers (another cluster here may
                # hold them): free ones.
                "--ray-client-server-port", str(_free_port()),
                "--dashboard-port", str(_free_port()),
                "--dashboard-agent-listen-port", str(_free_port()),
            ],
            env,
        )  # fmt: skip
        return cluster

    @classmethod
    def on_path(cls, path: NetworkPath, hosts: int) -> RayCluster:
        """A head in ``path``'s server namespace and ``hosts`` worker nodes, one per client
        namespace, each at its namespace's address: the actors go to the worker nodes, so
        their traffic to the server crosses the emulated path."""
        if not path.namespaced or path.server_ns is None:
            raise RayClusterError(f"network {path.profile.name} has no namespaces to host nodes")
        if not 1 <= hosts <= path.clients:
            raise RayClusterError(
                f"{hosts} Ray hosts need as many client namespaces, the path has {path.clients}"
            )
        server_prefix = path.exec_prefix(path.server_ns)
        cluster, env = cls._own(server_prefix)
        # No CPU on the head: nothing is scheduled beside the server.
        head_args = ["--head", "--include-dashboard=false", "--num-cpus", "0"]
        head_args += ["--node-ip-address", path.server_addr, "--port", "0"]
        cluster._head = _Node("head", server_prefix, head_args, env)
        cluster._workers = [
            _Node(
                f"host {i}",
                path.exec_prefix(path.client_ns[i]),
                ["--node-ip-address", path.client_addr[i], "--num-cpus", "1"],
                env,
            )
            for i in range(hosts)
        ]
        return cluster

    async def __aenter__(self) -> RayCluster:
        if self._head is None:
            return self
        try:
            self._head.start()
            await self._head.wait_started(START_TIMEOUT_S)
            self.address = self._head.head_address()
            for node in self._workers:
                node.start(["--address", self.address])
            for node in self._workers:
                await node.wait_started(START_TIMEOUT_S)
        except BaseException:
            with sigint_held():
                self._teardown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with sigint_held():
            self._teardown()

    def _teardown(self) -> None:
        # Worker nodes first, then the head they report to.
        for node in [*self._workers, *self._nodes()[:1]]:
            node.stop()
