"""A transport server with nginx in front: what ``ctx.server()`` gives a scenario on a
``--via nginx`` or ``--via nginx-defaults`` run.

:class:`FrontedServer` is a :class:`~experiments.run.processes.ServerProcess`, so every
scenario takes it as it is, but its ``host`` and ``port`` are nginx's: clients, their fault
proxies and readiness probes reach the server through nginx. What concerns the server
process itself goes to the upstream server: ``pid``, ``epoch``, CPU, memory and stderr, and
``kill()``/``start()``: the restart fault kills the upstream and starts it again on its port
behind an nginx that keeps running (nginx starts with the first start). ``stop()`` stops
both. nginx runs where the server runs (its namespace on an emulated path) and listens on
the server's address. Under ``--security tls`` nginx terminates TLS with the run's certificate
and speaks plain HTTP to the upstream, as a production proxy does.

:func:`front` is what the run context calls: the server itself for ``direct``, else the
server behind nginx, with the recommended ``proxy_read_timeout`` worked out from the
transport's settings (:func:`~experiments.via.render.read_timeout_s`) unless the caller
sets one (the quiet-stream scenario shortens it).
"""

from __future__ import annotations

from experiments.run.processes import ServerProcess
from experiments.via.nginx import NginxProcess
from experiments.via.paths import Via
from experiments.via.render import Tls, read_timeout_s
from transports.registry import get as get_transport

__all__ = ["FrontedServer", "front", "recommended_read_timeout_s"]


def recommended_read_timeout_s(server: ServerProcess) -> float:
    """The recommended ``proxy_read_timeout`` for ``server``'s transport and settings."""
    held = get_transport(server.transport).keepalive_in_force(server.settings, server.options)
    return read_timeout_s(server.settings, held.get("long_poll_wait_s") or 0.0)


class FrontedServer(ServerProcess):
    """``upstream`` with nginx (configured as ``via`` says) in front of it."""

    def __init__(
        self,
        upstream: ServerProcess,
        via: Via,
        *,
        netns: str | None = None,
        read_timeout_s: float | None = None,
        tls: Tls | None = None,
    ) -> None:
        super().__init__(
            upstream.transport,
            rate_hz=upstream.rate_hz,
            settings=upstream.settings,
            options=upstream.options,
            seed=upstream.seed,
            p=upstream.p,
            host=upstream.host,
            ready_timeout_s=upstream.ready_timeout_s,
            stop_timeout_s=upstream.stop_timeout_s,
            extra_args=upstream.extra_args,
            exec_prefix=upstream.exec_prefix,
            connect=upstream.connect,
            nofile=upstream.nofile,
        )
        self.upstream = upstream
        self.via = via
        #: The server's network namespace (None: this one), where nginx's port is chosen.
        self.netns = netns
        #: nginx's ``proxy_read_timeout`` (None: what the config says).
        self.read_timeout_s = read_timeout_s
        #: TLS terminated at nginx (None: plain); the upstream behind it is plain.
        self.terminates_tls = tls
        self.nginx: NginxProcess | None = None

    @property
    def argv(self) -> list[str]:
        return self.upstream.argv

    @property
    def pid(self) -> int:
        return self.upstream.pid

    @property
    def running(self) -> bool:
        return self.upstream.running and self.nginx is not None and self.nginx.running

    async def start(self) -> None:
        """Start the upstream (again, on its port); start nginx the first time."""
        await self.upstream.start()
        self.epoch, self.starts = self.upstream.epoch, self.upstream.starts
        if self.nginx is not None and self.nginx.running:
            return
        nginx = NginxProcess(
            self.via,
            self.upstream.host,
            self.upstream.port,
            listen_host=self.upstream.host,
            read_timeout_s=self.read_timeout_s,
            connect_timeout_s=self.settings.connect_timeout_s,
            header_timeout_s=self.settings.header_timeout_s,
            tls=self.terminates_tls,
            exec_prefix=self.exec_prefix,
            netns=self.netns,
            connect=self.connect,
            ready_timeout_s=self.ready_timeout_s,
        )
        try:
            await nginx.start()
        except BaseException:
            await self.upstream.stop()
            raise
        self.nginx = nginx
        self.port = nginx.port

    async def kill(self) -> None:
        """SIGKILL the upstream (the restart fault); nginx stays."""
        await self.upstream.kill()

    async def stop(self) -> None:
        try:
            if self.nginx is not None:
                await self.nginx.stop()
        finally:
            await self.upstream.stop()

    def cpu_s(self) -> float:
        return self.upstream.cpu_s()

    def rss(self) -> int:
        return self.upstream.rss()

    def stderr_bytes(self) -> int:
        return self.upstream.stderr_bytes()

    def stderr_since(self, offset: int, limit: int = 1 << 20) -> bytes:
        return self.upstream.stderr_since(offset, limit)


def front(
    server: ServerProcess,
    via: str,
    *,
    netns: str | None = None,
    read_timeout_s: float | None = None,
    tls: Tls | None = None,
) -> ServerProcess:
    """``server`` as clients reach it ``via`` this path (``direct``: the server itself).

    ``read_timeout_s``: nginx's ``proxy_read_timeout`` (None: the recommended value for
    ``nginx``, nginx's own 60 s for ``nginx-defaults``). ``tls``: the certificate nginx
    terminates TLS with (both configurations; ``server`` itself should then be plain, as
    behind a production proxy); ignored for ``direct``, where the server holds its own.
    """
    if via == "direct":
        return server
    if via == "nginx":
        timeout = read_timeout_s or recommended_read_timeout_s(server)
        return FrontedServer(server, "nginx", netns=netns, read_timeout_s=timeout, tls=tls)
    if via == "nginx-defaults":
        return FrontedServer(
            server, "nginx-defaults", netns=netns, read_timeout_s=read_timeout_s, tls=tls
        )
    raise ValueError(f"unknown via {via!r}")
