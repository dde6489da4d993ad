"""Processes of an experiment: servers through the real CLI, clients in worker processes.

:class:`ServerProcess` runs ``python -m transports serve NAME --port P --rate R --seed S
--set k=v ...`` exactly as a user would. It is ready when it has printed its ``serving NAME on
HOST:PORT ...`` line *and* a TCP connect to that port succeeds (never a sleep). It exposes
``pid``, ``port``, ``epoch``, :meth:`cpu_s`, :meth:`rss`, :meth:`io_chars`; :meth:`kill`
(SIGKILL, for the restart fault) and :meth:`start` again on the same port (a new epoch);
:meth:`stop` sends SIGTERM, waits, then SIGKILLs. As an async context manager it is always
torn down, on exceptions and on Ctrl-C/cancellation too.

:class:`ClientProcess` runs ``python -m experiments.client_worker`` with a
:class:`~experiments.jobs.ClientJob` on stdin. ``await wait_ready()`` returns once every client
connected; ``await result()`` waits for the result dict (see :mod:`experiments.client_worker`);
``await stop()`` ends an open-ended job (SIGTERM) and returns its result. Point a job's
``host``/``port`` at a fault proxy to put the proxy between clients and server; mix ``slow``
and ``stopped`` client groups beside ``normal`` ones.

Every process started here is registered in :data:`LIVE` until reaped, so the CLI can kill
stragglers on the way out whatever happened.

Leaving a server's ``async with`` block does not wait for its teardown: the SIGTERM-and-reap
runs in the background (while the next server starts), and :meth:`ClientProcess.start` first
waits for every pending teardown (:func:`settle_teardowns`), so no measurement ever runs beside
a server that is still shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import IO, Any

import psutil

from experiments.jobs import ClientJob
from transports.settings import Settings

__all__ = [
    "LIVE",
    "PRESPAWN",
    "ClientProcess",
    "HarnessError",
    "IoChars",
    "ServerProcess",
    "discard_spare",
    "kill_all",
    "parse_serving_line",
    "settings_args",
    "settle_teardowns",
]

#: Every child process still running, by pid.
LIVE: dict[int, asyncio.subprocess.Process] = {}

_SERVING = re.compile(
    r"^serving (?P<name>\S+) on (?P<host>\S+):(?P<port>\d+) .*?\bepoch=(?P<epoch>[0-9a-f]+)"
)
#: Worker results carry every latency: allow long lines.
_LINE_LIMIT = 1 << 30


class HarnessError(RuntimeError):
    """A server or worker did not start, died, or answered nonsense."""


@dataclass(frozen=True, slots=True)
class ServingLine:
    name: str
    host: str
    port: int
    epoch: str


@dataclass(frozen=True, slots=True)
class IoChars:
    """Bytes a process passed to read()/write() syscalls (sockets included): /proc/PID/io."""

    read_chars: int
    write_chars: int


def parse_serving_line(line: str) -> ServingLine | None:
    """The ``serving NAME on HOST:PORT ... epoch=E ...`` line a server prints when bound."""
    m = _SERVING.match(line.strip())
    if m is None:
        return None
    return ServingLine(m["name"], m["host"], int(m["port"]), m["epoch"])


def settings_args(settings: Settings) -> list[str]:
    """``--set KEY=VALUE`` for every field, so the server runs exactly these settings."""
    out: list[str] = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        text = "none" if value is None else str(value).lower() if isinstance(value, bool) else value
        out += ["--set", f"{f.name}={text}"]
    return out


def kill_all() -> None:
    """SIGKILL every registered child (last-resort cleanup)."""
    for pid, proc in list(LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        LIVE.pop(pid, None)


async def _reap(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; always wait for the exit status."""
    try:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled while waiting: do not leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        LIVE.pop(proc.pid, None)


#: Server teardowns still running in the background.
_TEARDOWNS: set[asyncio.Task[None]] = set()


async def settle_teardowns() -> None:
    """Wait until every server handed to the background teardown has exited."""
    while _TEARDOWNS:
        await asyncio.gather(*list(_TEARDOWNS), return_exceptions=True)


def _tail(log: IO[bytes], limit: int = 2000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:].strip()


class ServerProcess:
    """One transport server started through ``python -m transports serve``."""

    def __init__(
        self,
        transport: str,
        *,
        rate_hz: float,
        settings: Settings,
        seed: int = 0,
        p: float = 0.72,
        host: str = "127.0.0.1",
        port: int = 0,
        ready_timeout_s: float = 20.0,
        # A server with no clients left exits on SIGTERM in well under a second; one that
        # lingers (a graceful shutdown waiting on a dead peer) is not worth waiting 5 s for.
        stop_timeout_s: float = 2.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.transport, self.rate_hz, self.settings = transport, rate_hz, settings
        self.seed, self.p, self.host = seed, p, host
        self.port = port
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.extra_args = tuple(extra_args)
        self.epoch: str | None = None
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._psutil: psutil.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "transports",
            "serve",
            self.transport,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--rate",
            f"{self.rate_hz:g}",
            "--seed",
            str(self.seed),
            "--p",
            str(self.p),
            *settings_args(self.settings),
            *self.extra_args,
        ]

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError(f"{self.transport} server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start (or restart, on the port of the first start) and wait until it serves."""
        if self.running:
            raise HarnessError(f"{self.transport} server already running")
        if self._log is not None:
            self._log.close()
        # Closed in stop(): it outlives this call, so no ``with`` block can own it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
        )
        self._proc = proc
        LIVE[proc.pid] = proc
        self.starts += 1
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                serving = await self._read_serving_line(proc)
                self.port, self.epoch = serving.port, serving.epoch
                await self._probe()
        except TimeoutError:
            await _reap(proc, 1.0)
            raise HarnessError(
                f"{self.transport} server not ready within {self.ready_timeout_s:g} s: "
                f"{_tail(self._log)}"
            ) from None
        except BaseException:
            await _reap(proc, 1.0)
            raise
        self._psutil = psutil.Process(proc.pid)

    async def _read_serving_line(self, proc: asyncio.subprocess.Process) -> ServingLine:
        assert proc.stdout is not None and self._log is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                await proc.wait()
                raise HarnessError(
                    f"{self.transport} server exited with {proc.returncode} before serving: "
                    f"{_tail(self._log)}"
                )
            serving = parse_serving_line(line.decode(errors="replace"))
            if serving is not None:
                return serving

    async def _probe(self) -> None:
        # The line says the socket is bound; a connect proves it accepts. Retry only on refusal.
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except ConnectionRefusedError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        assert self._psutil is not None
        t = self._psutil.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        assert self._psutil is not None
        return int(self._psutil.memory_info().rss)

    def io_chars(self) -> IoChars:
        assert self._psutil is not None
        io = self._psutil.io_counters()
        return IoChars(int(io.read_chars), int(io.write_chars))

    async def kill(self) -> None:
        """SIGKILL: the server dies without closing anything (the restart fault)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
            LIVE.pop(self._proc.pid, None)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout_s``."""
        if self._proc is not None:
            await _reap(self._proc, self.stop_timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> ServerProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.stop()  # on errors and Ctrl-C: gone before anything else happens
            return
        task = asyncio.create_task(self.stop())
        _TEARDOWNS.add(task)
        task.add_done_callback(_TEARDOWNS.discard)


# A worker process spawned ahead of need: it imports everything, then blocks reading its job
# from stdin, so the next ClientProcess skips the interpreter start and imports (about a
# second on a loaded 2-core machine). Its stderr goes to a file handed over with the job.
_spare: tuple[asyncio.Task[asyncio.subprocess.Process], str] | None = None
#: Off by default (a test's event loop should not be left a spawning task); the CLI turns it
#: on for the run and calls :func:`discard_spare` at the end.
PRESPAWN = {"enabled": False}


async def _spawn_worker(log_path: str) -> asyncio.subprocess.Process:
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "experiments.client_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            limit=_LINE_LIMIT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    LIVE[proc.pid] = proc
    return proc


def _prepare_spare() -> None:
    global _spare
    if _spare is None and PRESPAWN["enabled"]:
        fd, path = tempfile.mkstemp(prefix="client-worker-", suffix=".log")
        os.close(fd)
        _spare = (asyncio.create_task(_spawn_worker(path)), path)


async def _take_spare(log: IO[bytes]) -> asyncio.subprocess.Process:
    """The spare worker if one is ready (its log copied into ``log`` later), else a new one."""
    global _spare
    if _spare is None:
        fd, path = tempfile.mkstemp(prefix="client-worker-", suffix=".log")
        os.close(fd)
        proc = await _spawn_worker(path)
        _SPARE_LOGS[proc.pid] = (path, log)
        return proc
    task, path = _spare
    _spare = None
    proc = await task
    _SPARE_LOGS[proc.pid] = (path, log)
    return proc


#: pid -> (log file of a spare worker, the ClientProcess log it belongs to).
_SPARE_LOGS: dict[int, tuple[str, IO[bytes]]] = {}


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
    await _reap(proc, 2.0)
    with contextlib.suppress(OSError):
        os.unlink(path)


class ClientProcess:
    """One ``experiments.client_worker`` process running a :class:`ClientJob`."""

    def __init__(self, job: ClientJob, *, ready_timeout_s: float | None = None) -> None:
        self.job = job
        self.ready_timeout_s = (
            job.connect_timeout_s + 20.0 if ready_timeout_s is None else ready_timeout_s
        )
        self.ready: dict[str, Any] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._result: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError("client worker is not running")
        return self._proc.pid

    async def start(self) -> None:
        await settle_teardowns()  # nothing shuts down beside a measurement
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
        proc = await _take_spare(self._log)
        self._proc = proc
        LIVE[proc.pid] = proc
        assert proc.stdin is not None
        proc.stdin.write(self.job.to_json().encode())
        await proc.stdin.drain()
        proc.stdin.close()
        _prepare_spare()

    async def _line(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            await self._proc.wait()
            assert self._log is not None
            _collect_log(self._proc.pid)
            raise HarnessError(
                f"client worker exited with {self._proc.returncode}: {_tail(self._log)}"
            )
        try:
            obj: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise HarnessError(f"client worker printed non-JSON: {line[:200]!r}") from exc
        return obj

    async def wait_ready(self) -> dict[str, Any]:
        """The ready line: every client connected once (``connected`` < ``clients`` if not)."""
        if self.ready is None:
            try:
                async with asyncio.timeout(self.ready_timeout_s):
                    line = await self._line()
            except TimeoutError:
                raise HarnessError(
                    f"client worker not ready within {self.ready_timeout_s:g} s"
                ) from None
            if line.get("type") != "ready":
                raise HarnessError(f"client worker: expected a ready line, got {line}")
            self.ready = line
        return self.ready

    async def result(self, timeout_s: float | None = None) -> dict[str, Any]:
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
            if line.get("type") != "result":
                raise HarnessError(f"client worker: expected a result line, got {line}")
            self._result = line
            assert self._proc is not None
            await _reap(self._proc, 5.0)
        return self._result

    async def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """End the job now (SIGTERM: the worker closes its window) and return its result."""
        if self._result is None and self._proc is not None and self._proc.returncode is None:
            await self.wait_ready()
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
        return await self.result(timeout_s)

    async def close(self) -> None:
        if self._proc is not None:
            await _reap(self._proc, 2.0)
            _collect_log(self._proc.pid)
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
