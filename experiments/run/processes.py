"""Server processes of an experiment, started through the real CLI, and their teardown.

:class:`ServerProcess` runs ``python -m transports serve NAME --port P --rate R --seed S
--settings-json DOC --ready-json`` as a user would, the settings and the transport's options as
one JSON document. It is ready when it has announced itself (one JSON line: transport, host,
port, epoch, pid; :mod:`transports.announce`) *and* a TCP connect to that port succeeds (never
a sleep). It exposes ``pid``, ``port``, ``epoch``, :meth:`cpu_s`, :meth:`rss` and what it
wrote to stderr (:meth:`stderr_bytes`, :meth:`stderr_since`) and the file limit it runs with
(:meth:`fd_limit`: ``serve`` raises its soft limit to the hard one); ``nofile`` starts it with
that soft and hard ``RLIMIT_NOFILE`` (so ``serve`` cannot raise it); ``loop`` is the event loop
it runs on (``serve --loop``; its announcement must name the same one), ``gc`` the collector's
policy (``serve --gc``, :mod:`transports.gc_policy`), ``tls`` its certificate and key
(``serve --tls --certfile F --keyfile F``); ``clock`` gives it a clock endpoint
(``serve --clock-port``, an ephemeral UDP port, the same one again on a restart) whose port
its announcement names (``clock_port``), for clients on other hosts;
:meth:`kill` (SIGKILL, for the restart fault) and :meth:`start` again on the same port (a new
epoch); :meth:`stop` sends SIGTERM, waits, then SIGKILLs. As an async context manager it is
always torn down, on exceptions and on Ctrl-C/cancellation too.

Every process started by the run (servers here, client workers in
:mod:`experiments.worker.process`) is registered in :data:`LIVE` until reaped, so the CLI can
kill stragglers on the way out whatever happened.

Leaving a server's ``async with`` block does not wait for its teardown: the SIGTERM-and-reap
runs in the background (while the next server starts), and a client worker first waits for
every pending teardown (:func:`settle_teardowns`), so no measurement ever runs beside a server
that is still shutting down, nor beside a spare client worker still starting up
(:func:`starting_up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import msgspec
import psutil

from transports.announce import Announcement, parse_announcement
from transports.gc_policy import DEFAULT_GC
from transports.loops import DEFAULT_LOOP
from transports.options import Options
from transports.settings import Settings
from transports.tls import TlsSettings

__all__ = [
    "LIVE",
    "LOOPBACK",
    "Connector",
    "HarnessError",
    "Placement",
    "ServerPool",
    "ServerProcess",
    "kill_all",
    "reap",
    "settings_document",
    "settle_teardowns",
    "starting_up",
    "tail",
    "udp_port_bound",
]

#: Opens a TCP connection to (host, port): ``asyncio.open_connection`` or one from inside a
#: network namespace.
Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

#: Every child process still running, by pid.
LIVE: dict[int, asyncio.subprocess.Process] = {}


class HarnessError(RuntimeError):
    """A server or worker did not start, died, or answered nonsense."""


def settings_document(settings: Settings, options: Options | None = None) -> str:
    """The ``--settings-json`` document: the shared settings and the transport's options."""
    doc: dict[str, object] = {"settings": settings}
    if options is not None:
        doc["options"] = options
    return msgspec.json.encode(doc).decode()


def kill_all() -> None:
    """SIGKILL every registered child (last-resort cleanup)."""
    for pid, proc in list(LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        LIVE.pop(pid, None)


async def reap(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
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


#: Start-ups running in the background (a spare client worker importing everything).
_STARTUPS: set[asyncio.Task[Any]] = set()


def starting_up(task: asyncio.Task[Any]) -> None:
    """Count ``task`` as a background start-up until it is done (see :func:`settle_teardowns`)."""
    _STARTUPS.add(task)
    task.add_done_callback(_STARTUPS.discard)


async def settle_teardowns() -> None:
    """Wait until every server handed to the background teardown has exited and every
    background start-up has finished: neither runs beside a measurement."""
    while _TEARDOWNS or _STARTUPS:
        await asyncio.gather(*list(_TEARDOWNS), *list(_STARTUPS), return_exceptions=True)


def tail(log: IO[bytes], limit: int = 2000) -> str:
    """The end of a process's captured stderr, for an error message."""
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:].strip()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a run's processes go: on loopback, here; on an emulated network path, the
    server in the server's namespace and clients in a client's namespace. And the event loop
    they all run on (``--loop``), so a process started from a placement (a baseline pusher's
    two sides) runs on the step's loop too, under the step's collector policy (``--gc``)."""

    #: The address clients reach the server at.
    host: str = "127.0.0.1"
    server_prefix: tuple[str, ...] = ()
    client_prefix: tuple[str, ...] = ()
    #: How a readiness probe connects (from the clients' side of the path).
    connect: Connector | None = None
    #: The server's namespace (None: this one), where its sockets' counters are read.
    server_netns: str | None = None
    #: The event loop every process runs on (:mod:`transports.loops`).
    loop: str = DEFAULT_LOOP
    #: The garbage collector's policy every process applies (:mod:`transports.gc_policy`).
    gc: str = DEFAULT_GC


LOOPBACK = Placement()


def udp_port_bound(pid: int, port: int) -> bool:
    """Whether a UDP socket is bound to ``port`` in the network namespace of process ``pid``:
    ``/proc/PID/net/udp`` and ``udp6`` are that namespace's tables (``/proc/net`` is this
    process's own, and so are psutil's connection lists)."""
    suffix = f":{port:04X}"
    for table in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as rows:
                next(rows, None)  # the header
                if any(row.split()[1].endswith(suffix) for row in rows if row.strip()):
                    return True
        except OSError:  # no such process, or no IPv6
            continue
    return False


class ServerProcess:
    """One transport server started through ``python -m transports serve``."""

    def __init__(
        self,
        transport: str,
        *,
        rate_hz: float,
        settings: Settings,
        options: Options | None = None,
        seed: int = 0,
        p: float = 0.72,
        host: str = "127.0.0.1",
        port: int = 0,
        ready_timeout_s: float = 20.0,
        # A server with no clients left exits on SIGTERM in well under a second; one that
        # lingers (a graceful shutdown waiting on a dead peer) is not worth waiting 5 s for.
        stop_timeout_s: float = 2.0,
        extra_args: Sequence[str] = (),
        exec_prefix: Sequence[str] = (),
        connect: Connector | None = None,
        nofile: int | None = None,
        loop: str = DEFAULT_LOOP,
        tls: TlsSettings | None = None,
        gc: str = DEFAULT_GC,
        clock: bool = False,
    ) -> None:
        self.transport, self.rate_hz, self.settings = transport, rate_hz, settings
        #: Whether it answers clock probes (``serve --clock-port``).
        self.clock = clock
        #: The UDP port of its clock endpoint, once announced (None: it has none).
        self.clock_port: int | None = None
        #: The event loop it runs on (``serve --loop``).
        self.loop = loop
        #: The collector's policy it applies once started (``serve --gc``).
        self.gc = gc
        #: Its certificate and key (``serve --tls --certfile F --keyfile F``; None: plain).
        self.tls = tls
        #: The server's soft and hard ``RLIMIT_NOFILE`` (None: this process's own limits).
        self.nofile = nofile
        self.options = options
        self.seed, self.p, self.host = seed, p, host
        self.port = port
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.extra_args = tuple(extra_args)
        #: Runs the server elsewhere (``ip netns exec NS``): empty for this namespace.
        self.exec_prefix = tuple(exec_prefix)
        #: How the readiness probe connects (from a client's namespace on an emulated path).
        self.connect: Connector = connect or asyncio.open_connection
        self.epoch: str | None = None
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._psutil: psutil.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        return [
            *self.exec_prefix,
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
            "--settings-json",
            settings_document(self.settings, self.options),
            "--ready-json",
            "--loop",
            self.loop,
            "--gc",
            self.gc,
            *self._tls_args(),
            *self._clock_args(),
            *self.extra_args,
        ]

    def _clock_args(self) -> list[str]:
        # An ephemeral port at first; a restart takes the same one again, as it does its port.
        return ["--clock-port", str(self.clock_port or 0)] if self.clock else []

    def _tls_args(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        args = ["--tls"]
        if tls.certfile is not None:
            args += ["--certfile", tls.certfile]
        if tls.keyfile is not None:
            args += ["--keyfile", tls.keyfile]
        return args

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
            preexec_fn=None if self.nofile is None else self._limit_files,
        )
        self._proc = proc
        LIVE[proc.pid] = proc
        self.starts += 1
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                ready = (await self._read_announcement(proc)).ready
                self.port, self.epoch = ready.port, ready.epoch
                if self.clock and ready.clock_port is None:
                    raise HarnessError(f"{self.transport}: announced no clock port")
                self.clock_port = ready.clock_port
                await self._probe(proc)
        except TimeoutError:
            await reap(proc, 1.0)
            raise HarnessError(
                f"{self.transport} server not ready within {self.ready_timeout_s:g} s: "
                f"{tail(self._log)}"
            ) from None
        except BaseException:
            await reap(proc, 1.0)
            raise
        self._psutil = psutil.Process(proc.pid)

    async def _read_announcement(self, proc: asyncio.subprocess.Process) -> Announcement:
        assert proc.stdout is not None and self._log is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                await proc.wait()
                raise HarnessError(
                    f"{self.transport} server exited with {proc.returncode} before serving: "
                    f"{tail(self._log)}"
                )
            ready = parse_announcement(line.decode(errors="replace"))
            if ready is not None:
                if ready.ready.pid != proc.pid:
                    raise HarnessError(
                        f"{self.transport}: announced pid {ready.ready.pid}, not ours"
                    )
                if ready.ready.loop != self.loop:
                    raise HarnessError(
                        f"{self.transport}: asked for loop {self.loop}, it runs {ready.ready.loop}"
                    )
                return ready

    async def _probe(self, proc: asyncio.subprocess.Process) -> None:
        # The announcement says the socket is bound; a connect proves it accepts. Retry only
        # on refusal (bounded by the caller's ready timeout).
        while True:
            try:
                _, writer = await self.connect(self.host, self.port)
            except ConnectionRefusedError:
                if self._bound_udp(proc):
                    return  # a UDP (QUIC) server accepts nothing: bound, it is ready
                await asyncio.sleep(0.01)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def _bound_udp(self, proc: asyncio.subprocess.Process) -> bool:
        """Whether a UDP socket is bound to the announced port in the server's network
        namespace: its ``/proc/PID/net/udp`` tables (psutil reads this process's namespace's,
        where a server on an emulated path has no socket)."""
        return udp_port_bound(proc.pid, self.port)

    def _limit_files(self) -> None:
        # In the child, before exec: soft and hard, so ``serve`` cannot raise it again.
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def stderr_bytes(self) -> int:
        """Bytes the server has written to its stderr so far."""
        return 0 if self._log is None else os.fstat(self._log.fileno()).st_size

    def stderr_since(self, offset: int, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of stderr from ``offset`` (pread: the server's file offset,
        which it shares with ours, stays where it is)."""
        return b"" if self._log is None else os.pread(self._log.fileno(), limit, offset)

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far."""
        assert self._psutil is not None
        t = self._psutil.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        assert self._psutil is not None
        return int(self._psutil.memory_info().rss)

    def fd_limit(self) -> int | None:
        """The server's soft ``RLIMIT_NOFILE`` now (None: unlimited, or not readable)."""
        try:
            soft, _ = psutil.Process(self.pid).rlimit(psutil.RLIMIT_NOFILE)
        except (psutil.Error, AttributeError):  # AttributeError: no rlimit on this platform
            return None
        return None if soft == resource.RLIM_INFINITY else int(soft)

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
            await reap(self._proc, self.stop_timeout_s)
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


class ServerPool:
    """Servers kept across the repeats of one scenario and transport.

    ``pool.use(key, make)`` is an async context manager: the first use starts ``make()``,
    later uses with the same key get the same running server; leaving the block keeps it
    (unless the block failed: then it is stopped, so the next repeat starts afresh). Leaving
    the pool stops them all.
    """

    def __init__(self) -> None:
        self._servers: dict[Hashable, ServerProcess] = {}

    @asynccontextmanager
    async def use(
        self, key: Hashable, make: Callable[[], ServerProcess]
    ) -> AsyncIterator[ServerProcess]:
        server = self._servers.get(key)
        if server is None or not server.running:
            server = make()
            await server.start()
            self._servers[key] = server
        try:
            yield server
        except BaseException:
            self._servers.pop(key, None)
            await server.stop()
            raise

    async def __aenter__(self) -> ServerPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            if exc_type is not None:
                await server.stop()
            else:
                await server.__aexit__(None, None, None)  # torn down in the background
