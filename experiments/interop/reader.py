"""One interop client at work: reconnects, a read deadline, the ledger, the events.

A :class:`Reader` runs either a third-party :data:`~experiments.interop.sessions.Session`
(one connection at a time; the reader reconnects with the suite's backoff and hands the
session the newest position received, as a user of that library would) or a transport's own
:class:`~transports.client.StreamClient` (which reconnects by itself). Either way each sample
goes through a :class:`~model.ledger.DeliveryLedger`, and connections become the worker's
:data:`~experiments.worker.schema.ClientEvent`, so a cell is judged from the same
:class:`~experiments.worker.schema.ClientOutcome` as every other client. A session that
receives no sample for ``read_timeout_s`` is dropped: how a client notices a black hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator

from experiments.interop.sessions import Session, Token
from experiments.worker.main import event_of
from experiments.worker.page_outcome import Progress
from experiments.worker.schema import (
    ClientEvent,
    ClientOutcome,
    Connected,
    ConnectFailed,
    Disconnected,
)
from model.ledger import DeliveryLedger
from model.sample import Sample
from model.source import BernoulliSource
from transports import client as stream
from transports.backoff import Backoff
from transports.contract import Transport
from transports.options import Options
from transports.settings import Settings

__all__ = ["Progress", "Reader"]


async def _next(it: AsyncGenerator[Sample, None]) -> Sample:
    return await anext(it)


class Reader:
    """A client reading through ``host:port`` until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        source: BernoulliSource,
        read_timeout_s: float,
        *,
        session: Session | None = None,
        own: tuple[Transport, Settings, Options] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if (session is None) == (own is None):
            raise ValueError("a reader runs a session or a transport's own client")
        self.host, self.port = host, port
        self.session = session
        self.client = None
        if own is not None:
            transport, settings, options = own
            self.client = stream.StreamClient(
                transport, host, port, settings, options, on_event=self.on_event
            )
        self.read_timeout_s = read_timeout_s
        self.backoff = backoff or Backoff(0.05, 1.0, True)
        self.ledger = DeliveryLedger(source)
        self.events: list[ClientEvent] = []
        self.received = 0
        self.by_epoch: dict[str, int] = {}
        self.error: str | None = None
        self._connection = 0
        self._on_connection = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def progress(self) -> Progress:
        drops = [e.at_ns for e in self.events if isinstance(e, Disconnected)]
        return Progress(self.received, dict(self.by_epoch), drops[-1] if drops else None)

    def _take(self, sample: Sample, connection: int) -> None:
        self.ledger.record(sample, connection)
        self.received += 1
        self._on_connection += 1
        self.by_epoch[sample.epoch] = self.by_epoch.get(sample.epoch, 0) + 1

    async def _run(self) -> None:
        try:
            if self.client is not None:
                await self._run_client(self.client)
            else:
                await self._run_sessions()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported in the outcome, not lost with the task
            self.error = f"{type(exc).__name__}: {exc}"

    async def _run_client(self, client: stream.StreamClient) -> None:
        async with contextlib.aclosing(client.__aiter__()) as samples:
            async for sample in samples:
                self._take(sample, client.connection)

    async def _run_sessions(self) -> None:
        assert self.session is not None
        token: Token = None
        attempt = 0
        while True:
            attempt += 1
            opened = False
            noticed: int | None = None
            try:
                it = self.session(self.host, self.port, token, self.read_timeout_s)
                async with contextlib.aclosing(it):
                    while True:
                        # The deadline runs beside the read: cancelling a library's read may
                        # first run its close (a close handshake a black hole holds up).
                        pending = asyncio.ensure_future(_next(it))
                        try:
                            done, _ = await asyncio.wait({pending}, timeout=self.read_timeout_s)
                        finally:
                            if not pending.done():
                                noticed = time.monotonic_ns()
                                pending.cancel()
                                # Not ``await pending``: a cancellation of this task must
                                # not be taken for the read's own.
                                await asyncio.wait({pending})
                                if not pending.cancelled():
                                    pending.exception()  # retrieved: it ended as we gave up
                        if not done:
                            raise TimeoutError(f"no sample for {self.read_timeout_s:g} s")
                        try:
                            sample = pending.result()
                        except StopAsyncIteration:
                            raise ConnectionError("the server ended the stream") from None
                        except Exception:
                            noticed = time.monotonic_ns()
                            raise
                        if not opened:
                            opened = True
                            self._connection += 1
                            self._on_connection = 0
                            self.events.append(
                                Connected(time.monotonic_ns(), self._connection, token, attempt)
                            )
                        self._take(sample, self._connection)
                        token = (sample.epoch, sample.seq)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
                now = noticed or time.monotonic_ns()
                delay = self.backoff.next_delay()
                if opened:
                    if self._on_connection >= 10:
                        self.backoff.reset()
                        delay = self.backoff.next_delay()
                    self.events.append(
                        Disconnected(now, self._connection, reason, "lost", self._on_connection)
                    )
                else:
                    self.events.append(ConnectFailed(now, reason, delay, attempt))
                await asyncio.sleep(delay)

    def on_event(self, event: stream.ClientEvent) -> None:
        """A stream client's own events (pass as its ``on_event``)."""
        self.events.append(event_of(event))

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Cancel the reader; a library that holds on to it past ``timeout_s`` is left."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=timeout_s)
        if not task.done():
            self.error = self.error or f"the client did not stop within {timeout_s:g} s"

    def outcome(self, index: int) -> ClientOutcome:
        return ClientOutcome(
            index=index,
            role="normal",
            received=self.received,
            received_in_window=0,
            counts=self.ledger.counts(),
            posterior_error=self.ledger.posterior_error(),
            epochs=list(self.ledger.epochs),
            events=self.events,
            error=self.error,
        )
