"""A client worker as a process: :class:`ClientProcess` runs ``python -m experiments.worker``.

``await wait_ready()`` returns the :class:`~experiments.worker.schema.WorkerReady` line once
every client connected; ``await result()`` waits for the
:class:`~experiments.worker.schema.WorkerResult`; ``await stop()`` ends an open-ended job
(SIGTERM) and returns its result. Point a job's ``host``/``port`` at a fault proxy to put the
proxy between clients and server; mix ``slow`` and ``stopped`` client groups beside ``normal``
ones. A result from a worker that ran on another event loop than its job's ``loop`` is a
:class:`~experiments.run.processes.HarnessError`.

A worker process is spawned ahead of need (:data:`PRESPAWN`): it imports everything, then
blocks reading its job from stdin, so the next ClientProcess skips the interpreter start and
imports (about a second on a loaded 2-core machine). It is spawned only when no ClientProcess
is running, and a measurement starts only once its imports are done (it says ``spare``;
:func:`~experiments.run.processes.settle_teardowns`): a second of CPU beside a worker or a
pusher that is measuring would skew what it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from types import TracebackType
from typing import IO

import msgspec

from experiments.run.processes import (
    LIVE,
    HarnessError,
    reap,
    settle_teardowns,
    starting_up,
    tail,
)
from experiments.worker.schema import (
    ClientJob,
    WorkerReady,
    WorkerResult,
    decode_line,
    encode,
)

__all__ = ["PRESPAWN", "WORKER_MODULE", "ClientProcess", "discard_spare"]

#: Worker results may carry every sample of a fault run: allow long lines.
_LINE_LIMIT = 1 << 30

# The spare worker and the file its stderr goes to (handed over with the job).
_spare: tuple[asyncio.Task[asyncio.subprocess.Process], str] | None = None
#: Off by default (a test's event loop should not be left a spawning task); the CLI turns it
#: on for the run and calls :func:`discard_spare` at the end.
PRESPAWN = {"enabled": False}
#: ClientProcesses started and not yet closed: the spare is prepared when none runs.
_running = 0
#: pid -> (log file of a spare worker, the ClientProcess log it belongs to).
_SPARE_LOGS: dict[int, tuple[str, IO[bytes]]] = {}


#: The module a worker process runs by default.
WORKER_MODULE = "experiments.worker"
#: ``python -m experiments.worker --spare``: print ``spare`` once imported, then read the job.
SPARE_FLAG = "--spare"
SPARE_START_TIMEOUT_S = 30.0


async def _spawn_worker(
    log_path: str, prefix: Sequence[str] = (), module: str = WORKER_MODULE, *args: str
) -> asyncio.subprocess.Process:
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            limit=_LINE_LIMIT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    LIVE[proc.pid] = proc
    return proc


def _new_log_path() -> str:
    fd, path = tempfile.mkstemp(prefix="client-worker-", suffix=".log")
    os.close(fd)
    return path


async def _spawn_spare(log_path: str) -> asyncio.subprocess.Process:
    """A worker that says ``spare`` once it has imported everything, then waits for a job."""
    proc = await _spawn_worker(log_path, (), WORKER_MODULE, SPARE_FLAG)
    assert proc.stdout is not None
    # Its start-up is done when it says so (or dies: whoever takes it then learns why).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SPARE_START_TIMEOUT_S):
            await proc.stdout.readline()
    return proc


def _prepare_spare() -> None:
    global _spare
    if _spare is None and PRESPAWN["enabled"]:
        path = _new_log_path()
        task = asyncio.create_task(_spawn_spare(path))
        starting_up(task)  # no measurement starts before its imports are done
        _spare = (task, path)


async def _take_spare(log: IO[bytes]) -> asyncio.subprocess.Process:
    """The spare worker if one is ready (its log copied into ``log`` later), else a new one."""
    global _spare
    if _spare is None:
        path = _new_log_path()
        proc = await _spawn_worker(path)
    else:
        task, path = _spare
        _spare = None
        proc = await task
    _SPARE_LOGS[proc.pid] = (path, log)
    return proc


def _collect_log(pid: int) -> None:
    entry = _SPARE_LOGS.pop(pid, None)
    if entry is None:
        return
    path, log = entry
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            log.write(f.read())
        os.unlink(path)


async def discard_spare() -> None:
    """End the spare worker (closing its stdin: it exits without a job)."""
    global _spare
    if _spare is None:
        return
    task, path = _spare
    _spare = None
    proc = await task
    if proc.stdin is not None:
        proc.stdin.close()
    await reap(proc, 2.0)
    with contextlib.suppress(OSError):
        os.unlink(path)


class ClientProcess:
    """One ``experiments.worker`` process running a :class:`ClientJob`.

    ``module`` and ``payload`` run another program that speaks the same lines for ``job``
    (``python -m MODULE``, ``payload`` on its stdin instead of the job: the Ray driver,
    :mod:`experiments.ray_engine`); such a process is never the spare.
    """

    def __init__(
        self,
        job: ClientJob,
        *,
        ready_timeout_s: float | None = None,
        exec_prefix: Sequence[str] = (),
        module: str = WORKER_MODULE,
        payload: bytes | None = None,
    ) -> None:
        self.job = job
        #: Runs the worker elsewhere (``ip netns exec NS``); such a worker is never the spare.
        self.exec_prefix = tuple(exec_prefix)
        self.module = module
        #: What the process reads on stdin (the job, by default).
        self.payload = encode(job) if payload is None else payload
        self.ready_timeout_s = (
            job.connect_timeout_s + 20.0 if ready_timeout_s is None else ready_timeout_s
        )
        self.ready: WorkerReady | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._result: WorkerResult | None = None
        #: Whether it counts among the running (:data:`_running`) until closed.
        self._counted = False

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError("client worker is not running")
        return self._proc.pid

    async def start(self) -> None:
        await settle_teardowns()  # nothing shuts down beside a measurement
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
        if self.exec_prefix or self.module != WORKER_MODULE:
            path = _new_log_path()
            proc = await _spawn_worker(path, self.exec_prefix, self.module)
            _SPARE_LOGS[proc.pid] = (path, self._log)
        else:
            proc = await _take_spare(self._log)
        self._proc = proc
        LIVE[proc.pid] = proc
        assert proc.stdin is not None
        proc.stdin.write(self.payload)
        await proc.stdin.drain()
        proc.stdin.close()
        global _running
        _running += 1
        self._counted = True

    async def _line(self) -> WorkerReady | WorkerResult:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            await self._proc.wait()
            assert self._log is not None
            _collect_log(self._proc.pid)
            raise HarnessError(
                f"client worker exited with {self._proc.returncode}: {tail(self._log)}"
            )
        try:
            return decode_line(line)
        except msgspec.DecodeError as exc:
            raise HarnessError(f"client worker printed {line[:200]!r}: {exc}") from exc

    async def wait_ready(self) -> WorkerReady:
        """The ready line: every client connected once (``connected`` < ``clients`` if not)."""
        if self.ready is None:
            try:
                async with asyncio.timeout(self.ready_timeout_s):
                    line = await self._line()
            except TimeoutError:
                raise HarnessError(
                    f"client worker not ready within {self.ready_timeout_s:g} s"
                ) from None
            if not isinstance(line, WorkerReady):
                raise HarnessError("client worker: expected its ready line first")
            self.ready = line
        return self.ready

    async def result(self, timeout_s: float | None = None) -> WorkerResult:
        """Wait for the job to finish on its own and return its result."""
        if self._result is None:
            await self.wait_ready()
            job = self.job
            budget = timeout_s
            if budget is None and job.duration_s is not None:
                budget = job.warmup_s + job.duration_s + 30.0
            try:
                async with asyncio.timeout(budget):
                    line = await self._line()
            except TimeoutError:
                raise HarnessError(f"client worker gave no result within {budget:g} s") from None
            if not isinstance(line, WorkerResult):
                raise HarnessError("client worker: expected its result line")
            if line.loop != job.loop:  # like with like: never a result from another loop
                raise HarnessError(f"client worker ran on {line.loop}, asked for {job.loop}")
            self._result = line
            assert self._proc is not None
            await reap(self._proc, 5.0)
        return self._result

    async def stop(self, timeout_s: float = 30.0) -> WorkerResult:
        """End the job now (SIGTERM: the worker closes its window) and return its result."""
        if self._result is None and self._proc is not None and self._proc.returncode is None:
            await self.wait_ready()
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
        return await self.result(timeout_s)

    async def close(self) -> None:
        if self._proc is not None:
            await reap(self._proc, 2.0)
            _collect_log(self._proc.pid)
        if self._counted:
            global _running
            self._counted = False
            _running -= 1
            if not _running:
                # Only now: a spare starting (an interpreter and every import, about a second
                # of CPU) beside a worker that is measuring would skew what it measures.
                _prepare_spare()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> ClientProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
