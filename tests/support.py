"""Helpers shared by the socket tests: in-process servers, known samples and bounded waits.

Fixtures (ports, fake servers, stalled sockets) live in ``conftest.py``; these are the plain
functions and classes tests import.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from experiments.network import NetworkPath, missing_requirements
from experiments.results import Environment
from experiments.run.processes import ServerProcess
from experiments.run.profiles import EXPERIMENT_SETTINGS
from model.ledger import DeliveryLedger
from model.sample import Sample
from model.source import BernoulliSource
from transports.client import ClientEvent, StreamClient
from transports.contract import Server, Transport
from transports.hub import Hub
from transports.options import Options
from transports.publisher import publish_forever
from transports.settings import Settings

__all__ = [
    "EPOCH",
    "FAST",
    "SOURCE",
    "Receiver",
    "RunningServer",
    "make_samples",
    "running_server",
    "serving",
    "wait_until",
]

#: Test settings: quick heartbeats, quick reconnects, short handshakes.
FAST = Settings(
    heartbeat_s=0.2,
    dead_after_s=0.6,
    backoff_base_s=0.01,
    backoff_cap_s=0.1,
    connect_timeout_s=2.0,
)

#: The epoch of hand-published samples, and the source of their values.
EPOCH = "c0ffee"
SOURCE = BernoulliSource(0.72, seed=3)

S = TypeVar("S", bound=Server)


#: For a test that builds emulated network paths: skipped, saying what is missing (root,
#: nftables, ...), on a machine that cannot.
NEEDS_NETWORK_PATHS = pytest.mark.skipif(
    bool(missing_requirements()),
    reason="network paths need " + "; ".join(missing_requirements()),
)


def make_samples(first: int, stop: int, epoch: str = EPOCH) -> list[Sample]:
    """Samples ``first`` .. ``stop - 1`` of ``epoch`` as a server would publish them."""
    return [Sample(epoch, seq, SOURCE.value(seq), 1_000 + seq) for seq in range(first, stop)]


@asynccontextmanager
async def serving(
    factory: Callable[[Hub, str, int, Settings, Options], S],
    settings: Settings,
    options: Options,
    *,
    hub: Hub | None = None,
    held: int = 0,
) -> AsyncIterator[S]:
    """A server on port 0 whose hub the test publishes into by hand (``held`` samples first)."""
    hub = hub or Hub(EPOCH, settings)
    hub.publish(make_samples(0, held))
    server = factory(hub, "127.0.0.1", 0, settings, options)
    await server.start()
    try:
        yield server
    finally:
        async with asyncio.timeout(10):
            await server.stop()


@dataclass
class RunningServer:
    """One transport server in this process, fed by a publisher at a fixed rate."""

    transport: Transport
    settings: Settings
    options: Options
    rate_hz: float
    source: BernoulliSource
    host: str = "127.0.0.1"
    port: int = 0
    hub: Hub = field(init=False)
    server: Server = field(init=False)
    _publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.hub = Hub(secrets.token_hex(4), self.settings)
        self.server = self.transport.serve(
            self.hub, self.host, self.port, self.settings, self.options
        )
        await self.server.start()
        self.port = self.server.port
        self._publisher = asyncio.create_task(publish_forever(self.hub, self.source, self.rate_hz))

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            self._publisher = None
        await self.server.stop()

    async def restart(self) -> None:
        """Stop, then serve a new epoch on the same port."""
        await self.stop()
        await self.start()


@asynccontextmanager
async def running_server(
    transport: Transport,
    settings: Settings = FAST,
    rate_hz: float = 2_000.0,
    source: BernoulliSource | None = None,
    options: Options | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[RunningServer]:
    running = RunningServer(
        transport,
        transport.settings(settings),
        transport.options if options is None else options,
        rate_hz,
        source or BernoulliSource(0.72, seed=7),
        host,
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``predicate`` by yielding to the event loop; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


class Receiver:
    """A StreamClient run as a task, feeding a ledger, with its events recorded."""

    def __init__(
        self,
        transport: Transport,
        port: int,
        source: BernoulliSource,
        settings: Settings = FAST,
        host: str = "127.0.0.1",
    ) -> None:
        self.events: list[ClientEvent] = []
        self.samples: list[Sample] = []
        self.ledger = DeliveryLedger(source)
        self.client = StreamClient(transport, host, port, settings, on_event=self.events.append)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async for sample in self.client:
            self.samples.append(sample)
            self.ledger.record(sample, self.client.connection)

    def failure(self) -> BaseException | None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return self._task.exception()
        return None

    async def receive(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` more samples arrived."""
        target = len(self.samples) + count
        await wait_until(
            lambda: len(self.samples) >= target or self.failure() is not None,
            timeout,
            f"{count} samples",
        )
        if (exc := self.failure()) is not None:
            raise AssertionError(f"client failed: {exc!r}") from exc


#: A machine description for results built by hand in report tests.
ENVIRONMENT = Environment(
    cpu_model="Test CPU",
    cores=2,
    machine="x86_64",
    os="Linux",
    python="3.11",
    python_implementation="CPython",
    packages={},
    git_commit=None,
    git_dirty=None,
    argv=[],
)


def clocked_tcp_server_on(path: NetworkPath, rate_hz: float) -> ServerProcess:
    """A tcp server with a clock endpoint in ``path``'s server namespace, probed for readiness
    from its first client namespace (not started)."""
    ns = path.client_ns[0]
    return ServerProcess(
        "tcp",
        rate_hz=rate_hz,
        settings=EXPERIMENT_SETTINGS,
        clock=True,
        host=path.server_addr,
        exec_prefix=path.exec_prefix(path.server_ns),
        connect=lambda host, port: path.open_connection(ns, host, port),
    )
