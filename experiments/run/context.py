"""What a scenario gets: :class:`RunContext`, one per (scenario, transport, repeat).

A scenario's ``run(ctx)`` uses:

- ``ctx.transport`` (a registry :class:`~transports.contract.Transport`), ``ctx.profile``,
  ``ctx.repeat``, ``ctx.seed`` (differs per repeat), ``ctx.settings`` (the shared experiment
  settings) and ``ctx.effective_settings`` (with the transport's fixed settings applied);
- ``ctx.server(rate_hz)`` -> a :class:`~experiments.run.processes.ServerProcess` (use it with
  ``async with``; ``kill()``/``start()`` for restarts);
- ``ctx.job(port, groups, ...)`` -> a :class:`~experiments.worker.schema.ClientJob` with the
  run's settings, options, seed and p filled in; ``ctx.clients(job)`` -> a
  :class:`~experiments.worker.process.ClientProcess`; ``ctx.run_worker(...)`` both at once;
- ``ctx.record(params, metrics, ...)`` -> one :class:`~experiments.results.Record`
  (transport, scenario and repeat filled in);
- ``ctx.note(text)`` to show what is happening in the progress display;
- ``ctx.baselines``: baseline results of this run, so a pusher shared by several transports
  runs once per repeat;
- ``ctx.network``: the emulated network path the run is on (None: loopback in this
  namespace). Servers start in its server namespace, workers in its first client
  namespace, fault proxies make their sockets there, and every record's params say which
  network (and the other dimensions) it ran under;
- ``ctx.via``: the path in front of the server (``direct``, ``nginx``, ``nginx-defaults``):
  on an nginx path ``ctx.server()`` gives the server behind nginx
  (:class:`~experiments.via.FrontedServer`), whose host and port are nginx's;
  ``ctx.server(rate, proxy_read_timeout_s=S)`` sets nginx's read timeout;
- ``ctx.client_kind``: ``python`` (worker processes) or ``browser``: then ``ctx.clients(job)``
  gives :class:`~experiments.worker.browser.BrowserClients` (the same calls, the same result);
- ``ctx.security``: ``plain`` or ``tls`` (:mod:`experiments.run.security`): under ``tls``
  ``ctx.server()`` starts the server with the run's certificate (``serve --tls --certfile F
  --keyfile F``) and ``ctx.job()`` gives the clients its CA (``Settings.tls``, as ``listen
  --tls --cafile F`` builds it); through nginx, nginx terminates TLS with that certificate
  and the server behind it is plain; records say the security in force (WebTransport's is
  always ``tls``);
- ``ctx.loop``: the event loop (``asyncio`` or ``uvloop``, :mod:`experiments.run.event_loops`)
  the servers, client workers and baseline pushers of the step run on;
- ``ctx.gc``: the garbage collector's policy (``default`` or ``freeze``,
  :mod:`experiments.run.gc_dimension`) they all apply after start-up;
- ``ctx.engine``: what runs the clients (``builtin`` or ``ray``,
  :mod:`experiments.ray_engine.dimension`): under ``ray``, ``ctx.clients(job)`` gives the Ray
  driver over ``ctx.ray`` (the run's :class:`~experiments.ray_engine.cluster.RayCluster`,
  :func:`~experiments.ray_engine.clients.ray_clients`; the same calls, the same result, with
  ``result.engine`` saying what ran where), ``ctx.server()`` gives servers a clock endpoint
  and ``ctx.run_worker()`` hands its port to the clients, whose latencies are then on the
  server's clock (:mod:`experiments.clock_offset`); on a cluster the run joined, servers
  listen on this machine's address towards the cluster's head.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from experiments.baselines.process import BaselineResult
from experiments.network import NetworkPath
from experiments.ray_engine.clients import ray_clients
from experiments.ray_engine.cluster import RayCluster
from experiments.ray_engine.dimension import DEFAULT_ENGINE
from experiments.results import FaultTrace, Observation, Record, Scalar
from experiments.run.processes import (
    LOOPBACK,
    HarnessError,
    Placement,
    ServerPool,
    ServerProcess,
)
from experiments.run.profiles import Profile
from experiments.run.security import RunCertificate, Security, security_in_force
from experiments.via import FrontedServer, Tls, front
from experiments.worker.browser import BrowserClients
from experiments.worker.kinds import Clients
from experiments.worker.process import ClientProcess
from experiments.worker.schema import ClientGroup, ClientJob, WorkerResult
from transports.contract import Transport
from transports.gc_policy import DEFAULT_GC
from transports.loops import DEFAULT_LOOP
from transports.settings import Settings
from transports.tls import TlsSettings

__all__ = ["P", "RunContext", "clock_port_of"]

#: The source's success probability in every experiment.
P = 0.72


def clock_port_of(server: ServerProcess) -> int | None:
    """The clock endpoint's port of ``server`` (behind nginx, its upstream's: nginx carries
    no UDP); None when it has none."""
    upstream = server.upstream if isinstance(server, FrontedServer) else server
    return upstream.clock_port


@dataclass
class RunContext:
    transport: Transport
    scenario: str
    profile: Profile
    settings: Settings
    repeat: int
    seed: int
    out_dir: Path
    #: Results shared across the run's transports (e.g. a baseline pusher per repeat). One
    #: dict per ``run_suite`` call, so per network, via, client kind, security and loop: a
    #: pusher measured on one loop never stands in for another.
    baselines: dict[tuple[str, str, int], BaselineResult] = field(default_factory=dict)
    note: Callable[[str], None] = lambda text: None
    p: float = P
    #: Servers kept across this transport's repeats (None: each ``server()`` is fresh).
    servers: ServerPool | None = None
    #: The emulated network path (None: loopback in this namespace).
    network: NetworkPath | None = None
    #: The path in front of the server: ``direct``, ``nginx`` or ``nginx-defaults``.
    via: str = "direct"
    #: Whose clients read: ``python`` (the worker process) or ``browser`` (Chromium pages).
    client_kind: str = "python"
    #: The security asked for: ``plain`` or ``tls``.
    security: str = "plain"
    #: The run's certificate (None: the run has no ``tls``).
    certificate: RunCertificate | None = None
    #: The event loop servers, workers and pushers run on.
    loop: str = DEFAULT_LOOP
    #: The garbage collector's policy servers, workers and pushers apply.
    gc: str = DEFAULT_GC
    #: What runs the clients: ``builtin`` worker processes or ``ray`` actors.
    engine: str = DEFAULT_ENGINE
    #: The run's Ray cluster (None: the builtin engine).
    ray: RayCluster | None = None

    @property
    def network_name(self) -> str:
        return "loopback" if self.network is None else self.network.profile.name

    @property
    def security_in_force(self) -> Security:
        """What this transport really runs under (QUIC is always TLS)."""
        return security_in_force(self.security, self.transport)

    def _tls(self) -> RunCertificate | None:
        """The run's certificate when this step asks for TLS (None: plain, or a transport
        that brings its own, as WebTransport does in a run without ``tls``)."""
        if self.security != "tls":
            return None
        if self.certificate is None:
            raise HarnessError("security tls needs the run's certificate (RunContext.certificate)")
        return self.certificate

    @property
    def server_tls(self) -> TlsSettings | None:
        """What the server gets under ``tls``: certificate and key (None: plain)."""
        cert = self._tls()
        return None if cert is None else cert.server_tls

    @property
    def nginx_tls(self) -> Tls | None:
        """The certificate nginx terminates TLS with under ``tls`` (None: plain)."""
        cert = self._tls()
        return None if cert is None else Tls(str(cert.certfile), str(cert.keyfile))

    @property
    def client_settings(self) -> Settings:
        """The settings clients get: the run's, with the CA to trust under ``tls``."""
        cert = self._tls()
        return self.settings if cert is None else self.settings.with_changes(tls=cert.client_tls)

    @property
    def place(self) -> Placement:
        """Where servers and clients run: here, or the emulated path's namespaces; on the
        step's event loop."""
        path = self.network
        if path is None or not path.namespaced:
            host = self._ray_server_host
            if (self.loop, self.gc, host) == (DEFAULT_LOOP, DEFAULT_GC, None):
                return LOOPBACK
            return Placement(host=host or LOOPBACK.host, loop=self.loop, gc=self.gc)
        client_ns = path.client_ns[0]

        async def connect(
            host: str, port: int
        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await path.open_connection(client_ns, host, port)

        return Placement(
            host=path.server_addr,
            server_prefix=tuple(path.exec_prefix(path.server_ns)),
            client_prefix=tuple(path.exec_prefix(client_ns)),
            connect=connect,
            server_netns=path.server_ns,
            loop=self.loop,
            gc=self.gc,
        )

    @property
    def _ray_server_host(self) -> str | None:
        """Where servers listen for a joined cluster's actors (None: the usual address)."""
        return self.ray.server_host if self.engine == "ray" and self.ray is not None else None

    @property
    def dimensions(self) -> dict[str, Scalar]:
        """What every record says it ran under (the report groups by any of them)."""
        return {
            "network": self.network_name,
            "via": self.via,
            "security": self.security_in_force,
            "client_kind": self.client_kind,
            "loop": self.loop,
            "gc": self.gc,
            "engine": self.engine,
        }

    def client_sockets(self) -> Callable[[], socket.socket] | None:
        """Sockets of the (first) client namespace, for fault proxies; None on loopback."""
        path = self.network
        if path is None or not path.namespaced:
            return None
        ns = path.client_ns[0]
        return lambda: path.socket(ns)

    @property
    def effective_settings(self) -> Settings:
        """The settings this transport actually runs with (fixed settings applied)."""
        return self.transport.settings(self.settings)

    def server(
        self, rate_hz: float, *, keep: bool = True, **kwargs: Any
    ) -> AbstractAsyncContextManager[ServerProcess]:
        """A server of this transport at ``rate_hz`` for ``async with``: the one kept for
        this transport's repeats when the runner keeps servers (and ``keep``), else a fresh
        process stopped at the end of the block."""

        place = self.place
        read_timeout_s = kwargs.pop("proxy_read_timeout_s", None)

        def make() -> ServerProcess:
            kwargs.setdefault("ready_timeout_s", self.profile.ready_timeout_s)
            kwargs.setdefault("host", place.host)
            kwargs.setdefault("exec_prefix", place.server_prefix)
            kwargs.setdefault("connect", place.connect)
            kwargs.setdefault("loop", place.loop)
            kwargs.setdefault("gc", place.gc)
            # Behind nginx, nginx terminates TLS and the upstream is plain.
            kwargs.setdefault("tls", self.server_tls if self.via == "direct" else None)
            # Ray's actors may run on other hosts: they read latencies on the server's clock.
            kwargs.setdefault("clock", self.engine == "ray")
            server = ServerProcess(
                self.transport.name,
                rate_hz=rate_hz,
                settings=self.effective_settings,
                options=self.transport.options,
                seed=self.seed,
                p=self.p,
                **kwargs,
            )
            return front(
                server,
                self.via,
                netns=place.server_netns,
                read_timeout_s=read_timeout_s,
                tls=self.nginx_tls,
            )

        if self.servers is None or not keep:
            return make()
        return self.servers.use((rate_hz, tuple(sorted(kwargs.items()))), make)

    def job(
        self, port: int, groups: tuple[ClientGroup, ...], host: str | None = None, **kwargs: Any
    ) -> ClientJob:
        """A job for this transport's clients; ``host`` defaults to the server's address
        (a group with its own host and port reaches a fault proxy instead)."""
        place = self.place
        kwargs.setdefault("server_netns", place.server_netns)
        kwargs.setdefault("loop", place.loop)
        kwargs.setdefault("gc", place.gc)
        return ClientJob(
            transport=self.transport.name,
            host=host or place.host,
            port=port,
            groups=groups,
            settings=self.client_settings,
            options=msgspec.Raw(msgspec.json.encode(self.transport.options)),
            seed=self.seed,
            p=self.p,
            **kwargs,
        )

    def clients(self, job: ClientJob, **kwargs: Any) -> Clients:
        """A worker process for ``job``, in the client namespace on an emulated path; with
        the browser client kind, Chromium pages (:mod:`experiments.worker.browser`); under
        the ray engine, the Ray driver (``kwargs``: :func:`ray_clients`' own)."""
        if self.client_kind == "browser":
            return BrowserClients(job)
        if self.engine == "ray":
            if self.ray is None:
                raise HarnessError("the ray engine needs the run's Ray cluster (RunContext.ray)")
            return ray_clients(job, self.ray, **kwargs)
        kwargs.setdefault("exec_prefix", self.place.client_prefix)
        return ClientProcess(job, **kwargs)

    async def run_worker(
        self,
        server: ServerProcess,
        groups: tuple[ClientGroup, ...],
        *,
        warmup_s: float,
        duration_s: float,
        **job_kwargs: Any,
    ) -> WorkerResult:
        """One worker against ``server`` for warm-up + window; its result."""
        job_kwargs.setdefault("server_pid", server.pid)
        job_kwargs.setdefault("server_port", server.port)
        job_kwargs.setdefault("clock_port", clock_port_of(server))
        job = self.job(server.port, groups, warmup_s=warmup_s, duration_s=duration_s, **job_kwargs)
        async with self.clients(job) as worker:
            return await worker.result()

    def record(
        self,
        params: Mapping[str, Scalar],
        metrics: Mapping[str, Scalar],
        *,
        latency: Mapping[str, str] | None = None,
        observations: list[Observation] | None = None,
        traces: list[FaultTrace] | None = None,
        detail: object = None,
    ) -> Record:
        return Record(
            transport=self.transport.name,
            scenario=self.scenario,
            repeat=self.repeat,
            params={**self.dimensions, **params},
            metrics=dict(metrics),
            latency=dict(latency or {}),
            observations=observations or [],
            traces=traces or [],
            detail=msgspec.Raw(msgspec.json.encode(detail)),
        )
