"""nginx as an ordinary process of the run: found, configured, started, probed and stopped.

:class:`NginxProcess` renders a config (:mod:`.render`, from the shipped templates) into a
directory of its own and runs ::

    nginx -p DIR -c DIR/nginx.conf -e DIR/error.log -g 'daemon off; master_process off;'

as a child of the harness: no system service, no root-owned path, one process (no master
and workers: a harness killed with SIGKILL leaves no orphaned worker holding the port).
nginx cannot listen on port 0, so a free port is taken from the OS right before the start
(bind port 0, read it, close) and the start is retried with another when nginx reports
``Address already in use``. It is ready once its pid file exists (written after it bound
its sockets) and a TCP connect to the port succeeds; never a sleep. :meth:`NginxProcess.stop`
sends SIGTERM (nginx's fast shutdown: a graceful SIGQUIT would wait for every stream to
end), waits, then SIGKILLs, and removes the directory; as an async context manager it is
torn down on success, on errors and on Ctrl-C. The process is registered in
:data:`experiments.run.processes.LIVE`, so the CLI's last-resort cleanup kills it too.

Which nginx: ``$NGINX_BINARY`` if set, else ``nginx`` on ``PATH``, else ``/usr/sbin/nginx``.
None there: :class:`NginxMissing`, whose message names the Debian package (``nginx``).

Errors: ``HarnessError`` (the run's) ← :class:`NginxError` (would not start, config refused)
← :class:`NginxMissing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from experiments.network import namespaces
from experiments.run.processes import LIVE, Connector, HarnessError, reap
from experiments.via.paths import Via
from experiments.via.render import Process, Site, Tls, render

__all__ = [
    "BINARY_ENV",
    "DEBIAN_PACKAGE",
    "NginxError",
    "NginxMissing",
    "NginxProcess",
    "check_config",
    "find_nginx",
    "free_port",
    "main_template",
    "nginx_version",
    "require_nginx",
    "site_template",
]

#: The Debian package that holds nginx.
DEBIAN_PACKAGE = "nginx"
#: Environment variable naming the nginx binary to run.
BINARY_ENV = "NGINX_BINARY"
_FALLBACK = "/usr/sbin/nginx"
_TEMPLATES = Path(__file__).resolve().parent
_SITE_TEMPLATES: dict[str, str] = {
    "nginx": "nginx-recommended.conf",
    "nginx-defaults": "nginx-defaults.conf",
}
#: Fresh ports tried when another process takes the chosen one first.
START_ATTEMPTS = 5
#: Most connections the process takes (each proxied stream is two).
MAX_WORKER_CONNECTIONS = 16_384
_POLL_S = 0.01
_GLOBALS = "daemon off; master_process off;"


class NginxError(HarnessError):
    """nginx would not start, or refused its config (the message holds its error log)."""


class NginxMissing(NginxError):
    """No nginx binary to run."""


def find_nginx() -> str | None:
    """The nginx binary to run (None: none found)."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return named if os.access(named, os.X_OK) and Path(named).is_file() else None
    found = shutil.which("nginx")
    if found:
        return found
    return _FALLBACK if os.access(_FALLBACK, os.X_OK) else None


def require_nginx() -> str:
    """The nginx binary, or :class:`NginxMissing` saying how to install it."""
    binary = find_nginx()
    if binary is None:
        named = os.environ.get(BINARY_ENV)
        where = f"${BINARY_ENV}={named} is not an executable file" if named else "not found"
        raise NginxMissing(
            f"nginx is needed for --via nginx and nginx-defaults ({where}): install the "
            f"Debian package '{DEBIAN_PACKAGE}' (apt-get install {DEBIAN_PACKAGE})"
        )
    return binary


def nginx_version(binary: str | None = None) -> str:
    """``1.22.1`` (what ``nginx -v`` says, without its prefix)."""
    done = subprocess.run(
        [binary or require_nginx(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    text = (done.stderr or done.stdout).strip()
    return text.rpartition("/")[2] if "/" in text else text


def main_template() -> str:
    """The shipped process template (``nginx-main.conf``)."""
    return (_TEMPLATES / "nginx-main.conf").read_text(encoding="utf-8")


def site_template(via: Via) -> str:
    """The shipped site template of ``via`` (``nginx`` or ``nginx-defaults``)."""
    name = _SITE_TEMPLATES.get(via)
    if name is None:
        raise ValueError(f"{via!r} has no nginx config; one of {', '.join(_SITE_TEMPLATES)}")
    return (_TEMPLATES / name).read_text(encoding="utf-8")


def _argv(binary: str, directory: Path, *, test: bool = False) -> list[str]:
    return [
        binary, *(["-t", "-q"] if test else []),
        "-p", f"{directory}/", "-c", str(directory / "nginx.conf"),
        "-e", str(directory / "error.log"), "-g", _GLOBALS,
    ]  # fmt: skip


def check_config(directory: Path, binary: str | None = None) -> None:
    """``nginx -t`` on ``directory/nginx.conf``; :class:`NginxError` with its words if refused."""
    done = subprocess.run(
        _argv(binary or require_nginx(), directory, test=True),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        log = directory / "error.log"
        said = log.read_text(errors="replace") if log.exists() else ""
        raise NginxError(f"nginx -t refused {directory}/nginx.conf: {(done.stderr + said).strip()}")


def free_port(host: str, netns: str | None = None) -> int:
    """A port the OS says is free on ``host`` (in ``netns``): bound to port 0, read, closed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with namespaces.socket_in(netns, family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _worker_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = MAX_WORKER_CONNECTIONS if soft == resource.RLIM_INFINITY else soft - 64
    return max(64, min(MAX_WORKER_CONNECTIONS, limit))


class NginxProcess:
    """One nginx in front of one upstream, configured as ``via`` says."""

    def __init__(
        self,
        via: Via,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        read_timeout_s: float | None = None,
        connect_timeout_s: float = 5.0,
        header_timeout_s: float = 10.0,
        tls: Tls | None = None,
        exec_prefix: Sequence[str] = (),
        netns: str | None = None,
        connect: Connector | None = None,
        ready_timeout_s: float = 15.0,
        stop_timeout_s: float = 3.0,
    ) -> None:
        self.via = via
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.listen_host = listen_host
        self.read_timeout_s, self.connect_timeout_s = read_timeout_s, connect_timeout_s
        self.header_timeout_s = header_timeout_s
        self.tls = tls
        #: Runs nginx elsewhere (``ip netns exec NS``); ``netns`` is where its port is chosen.
        self.exec_prefix, self.netns = tuple(exec_prefix), netns
        self.connect: Connector = connect or asyncio.open_connection
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.port = 0
        self.directory: Path | None = None
        #: The config it runs with (after :meth:`start`).
        self.config = ""
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise NginxError("nginx is not running")
        return self._proc.pid

    def _render(self, directory: Path, port: int) -> str:
        site = Site(
            listen_host=self.listen_host,
            listen_port=port,
            upstream_host=self.upstream_host,
            upstream_port=self.upstream_port,
            read_timeout_s=self.read_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            header_timeout_s=self.header_timeout_s,
            tls=self.tls,
        )
        process = Process(str(directory), worker_connections=_worker_connections())
        return render(main_template(), site_template(self.via), site, process)

    async def start(self) -> None:
        """Render the config, start nginx on a free port, wait until it accepts."""
        if self.running:
            raise NginxError("nginx is already running")
        binary = require_nginx()
        self.directory = Path(tempfile.mkdtemp(prefix="transport-bench-nginx-"))
        (self.directory / "temp").mkdir()
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                for _ in range(START_ATTEMPTS):
                    if await self._attempt(binary, self.directory):
                        return
            raise NginxError(
                f"nginx found no free port in {START_ATTEMPTS} attempts: {self._log_tail()}"
            )
        except TimeoutError:
            await self.stop()
            raise NginxError(
                f"nginx not ready within {self.ready_timeout_s:g} s: {self._log_tail()}"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def _attempt(self, binary: str, directory: Path) -> bool:
        """One start on a fresh port: True once ready, False if the port was taken."""
        self.port = free_port(self.listen_host, self.netns)
        self.config = self._render(directory, self.port)
        (directory / "nginx.conf").write_text(self.config, encoding="utf-8")
        for stale in ("nginx.pid", "error.log"):  # what a failed attempt left
            (directory / stale).unlink(missing_ok=True)
        with open(directory / "stderr.log", "wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                *self.exec_prefix,
                *_argv(binary, directory),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        self._proc = proc
        LIVE[proc.pid] = proc
        while True:
            if proc.returncode is not None or await _exited(proc):
                LIVE.pop(proc.pid, None)
                if "Address already in use" in self._log_tail():
                    return False
                raise NginxError(f"nginx exited with {proc.returncode}: {self._log_tail()}")
            if (directory / "nginx.pid").exists() and await self._accepts():
                return True

    async def _accepts(self) -> bool:
        try:
            _, writer = await self.connect(self.listen_host, self.port)
        except ConnectionRefusedError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def _log_tail(self, limit: int = 2000) -> str:
        if self.directory is None:
            return ""
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-limit:].strip()

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after ``stop_timeout_s``; then the directory is removed."""
        try:
            if self._proc is not None:
                await reap(self._proc, self.stop_timeout_s)
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    async def __aenter__(self) -> NginxProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _exited(proc: asyncio.subprocess.Process) -> bool:
    """Whether ``proc`` exits within one poll interval (the readiness loop's only wait)."""
    try:
        await asyncio.wait_for(proc.wait(), _POLL_S)
    except TimeoutError:
        return False
    return True
