"""The Ray actor that hosts a share of a job's clients: :class:`ClientActor`.

An async actor: its methods run on the actor's event loop, which Ray owns and also serves
Ray's calls on (and which is uvloop whenever uvloop is installed: Ray's workers install it).
The clients themselves run in a thread of the actor on a loop of the job's own kind
(``job.loop``, as the built-in worker runs them, an asyncio loop really being asyncio's), the
project's :func:`~experiments.worker.main.run_job` unchanged: the control calls stay prompt
however busy the clients are, a result's ``loop`` says what ran them, and Ray's threads are
told apart from the job's when Ray's cost is measured (:mod:`.overhead`).

The driver calls, on every actor: :meth:`ClientActor.start` (the job begins connecting; the
actor says where it runs), :meth:`ClientActor.ready` (every client connected: the job's
ready line), :meth:`ClientActor.go` (once *all* actors are ready: the warm-up and window
begin, alike on every actor), :meth:`ClientActor.result`; :meth:`ClientActor.stop` ends an
open job early (as SIGTERM ends a worker). Lines travel as the worker's JSON.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Awaitable
from typing import Any

import psutil
import ray

from experiments.ray_engine.schema import ActorInfo
from experiments.ray_engine.schema import encode as encode_info
from experiments.worker.main import run_job
from experiments.worker.schema import ClientJob, WorkerReady, WorkerResult, decode_job, encode
from transports.limits import raise_fd_limit
from transports.loops import loop_factory

__all__ = ["ClientActor", "RemoteClientActor", "host_key"]


def host_key() -> str:
    """What tells this machine (and process namespace) from another: the kernel's boot id and
    the pid namespace, so the driver knows which actors' pids it can read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"pid-{os.getpid()}"  # unknown: never equal to another process's


class ClientActor:
    """Runs one share of a job (a :class:`ClientJob` with fewer clients) in a thread."""

    def __init__(self) -> None:
        self._ready_line: WorkerReady | None = None
        self._ready_seen: asyncio.Event | None = None
        #: Resolved by :meth:`go` (or :meth:`stop`): the job's warm-up may begin.
        self._gate: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: The job's result (or why it failed), from its thread.
        self._done: concurrent.futures.Future[WorkerResult] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._job_loop: asyncio.AbstractEventLoop | None = None
        self._job_stop: asyncio.Event | None = None
        self._stop_asked = False

    async def start(self, job_json: bytes) -> bytes:
        """Start the job's clients connecting; :class:`ActorInfo` as JSON."""
        if self._ready_seen is not None:
            raise RuntimeError("an actor runs one job")
        job = decode_job(job_json)
        raise_fd_limit()  # thousands of clients: a descriptor each
        ray_threads = tuple(t.id for t in psutil.Process().threads())
        ray_loop = asyncio.get_running_loop()
        self._ready_seen = asyncio.Event()
        thread = threading.Thread(
            target=self._run, args=(job, ray_loop), name="client-job", daemon=True
        )
        thread.start()
        info = ActorInfo(
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
            host=host_key(),
            ray_threads=ray_threads,
            ray_version=ray.__version__,
        )
        return encode_info(info)

    def _run(self, job: ClientJob, ray_loop: asyncio.AbstractEventLoop) -> None:
        # The job's own loop: uvloop's, or asyncio's own (not the policy's, which Ray's
        # worker set to uvloop).
        factory = loop_factory(job.loop) or asyncio.SelectorEventLoop
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                result = runner.run(self._main(job, ray_loop))
        except BaseException as exc:
            self._done.set_exception(exc)
        else:
            self._done.set_result(result)
        finally:
            seen = self._ready_seen
            if seen is not None:
                with contextlib.suppress(RuntimeError):  # Ray's loop is gone: nobody waits
                    ray_loop.call_soon_threadsafe(seen.set)

    async def _main(self, job: ClientJob, ray_loop: asyncio.AbstractEventLoop) -> WorkerResult:
        stop = asyncio.Event()
        with self._lock:
            self._job_loop, self._job_stop = asyncio.get_running_loop(), stop
            if self._stop_asked:
                stop.set()

        def on_ready(line: WorkerReady) -> Awaitable[None]:
            self._ready_line = line
            seen = self._ready_seen
            assert seen is not None
            ray_loop.call_soon_threadsafe(seen.set)
            return asyncio.wrap_future(self._gate)

        return await run_job(job, stop, on_ready)

    async def ready(self) -> bytes:
        """The job's ready line (JSON), once every client connected; the job's error if it
        failed first."""
        seen = self._ready_seen
        if seen is None:
            raise RuntimeError("ready() before start()")
        await seen.wait()
        if self._ready_line is None:
            await asyncio.wrap_future(self._done)  # raises the job's error
            raise RuntimeError("the job ended without a ready line")
        return encode(self._ready_line)

    def _open_gate(self) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self._gate.set_result(None)

    async def go(self) -> None:
        """Let the job's warm-up and window begin."""
        self._open_gate()

    async def stop(self) -> None:
        """End the job now (its window closes; :meth:`result` follows)."""
        with self._lock:
            self._stop_asked = True
            loop, stop = self._job_loop, self._job_stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the job's loop has already closed
                loop.call_soon_threadsafe(stop.set)
        self._open_gate()

    async def result(self) -> bytes:
        """The job's :class:`WorkerResult` (JSON), once it ends."""
        result: WorkerResult = await asyncio.wrap_future(self._done)
        return encode(result)


#: The actor class as Ray schedules it: it asks for no CPU, so placement alone (node
#: affinity) decides where it runs and the cluster's CPU count never holds one back.
RemoteClientActor: Any = ray.remote(num_cpus=0)(ClientActor)
