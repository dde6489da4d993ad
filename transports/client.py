"""The shared reconnecting client: backoff, resume tokens and connection events.

:class:`StreamClient` wraps a transport's one-connection ``connect`` and yields samples across
as many connections as it takes (or, from ``batches()``, the lists a batched transport
reads). After every sample it holds the resume token ``(epoch, seq)``
of the newest sample received and sends it on the next connection (when ``settings.resume``).
It reports what happens to the connection as frozen event records, for the CLI and the
experiments (time to detect, time to reconnect), each attempt numbered.

The rules it keeps, whatever the transport:

- Every failure is sorted into a kind (:mod:`transports.failures`) and reported with it.
- ``not-this-protocol`` before the first sample is final: the error is raised at once, since
  no retry turns, say, an SSE server into a tcp one. (After samples arrived the endpoint did
  speak the protocol, so it is retried like any other failure.)
- ``initial_wait_s`` bounds the time to the *first sample*, whatever the failures on the way
  (nobody there, a refusal, a handshake that never completes, a server that accepts and sends
  nothing): past it, :class:`~model.errors.WaitExpired` is raised from the last failure.
- Backoff resets only after a *healthy* connection: one that delivered a new sample and then
  stayed up for the backoff cap, or delivered :data:`HEALTHY_SAMPLES` new samples. A server
  that accepts and closes at once (full, overloaded, broken) is retried on the backoff
  schedule, not as fast as handshakes go (about 19 per second per client before this rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from model.errors import ConnectionLost, ServerUnavailable, StreamError, WaitExpired
from model.sample import Sample, SampleRun, as_run
from transports.admission import Admission
from transports.backoff import Backoff
from transports.contract import Transport
from transports.failures import FailureKind, failure_kind
from transports.options import Options
from transports.resume import ResumeToken
from transports.sample_stream import BatchedSampleStream
from transports.settings import Settings

__all__ = [
    "HEALTHY_SAMPLES",
    "ClientEvent",
    "ConnectFailed",
    "Connected",
    "Disconnected",
    "StreamClient",
]

T = TypeVar("T")

#: New samples after which a connection counts as healthy (its backoff resets) however
#: short-lived: enough to tell a working stream from a server that accepts and gives up,
#: few enough that a fault scenario's short rounds still reconnect from the backoff's base.
HEALTHY_SAMPLES = 10


@dataclass(frozen=True, slots=True)
class Connected:
    at_ns: int
    connection: int
    token: ResumeToken | None
    #: Which attempt of this client this was, counting every attempt from 1.
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Disconnected:
    at_ns: int
    connection: int
    reason: str
    #: The failure's kind (``lost`` for a stream that broke; ``refused`` when the server
    #: closed it saying why, e.g. WebSocket 1013 or a tcp error line).
    kind: FailureKind = "lost"
    #: Samples this connection delivered (0: it failed before streaming anything).
    samples: int = 0


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    at_ns: int
    reason: str
    #: The delay before the next attempt; None when the client gives up.
    retry_in_s: float | None
    attempt: int = 1
    kind: FailureKind = "unavailable"


ClientEvent = Connected | Disconnected | ConnectFailed


class StreamClient:
    """Samples from one transport's server, reconnecting on its own."""

    def __init__(
        self,
        transport: Transport,
        host: str,
        port: int,
        settings: Settings | None = None,
        options: Options | None = None,
        *,
        on_event: Callable[[ClientEvent], None] | None = None,
        initial_wait_s: float | None = None,
        token: ResumeToken | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.transport = transport
        self.host, self.port = host, port
        self.settings = transport.settings(settings)
        self.options = transport.options if options is None else options
        self._on_event = on_event
        self._initial_wait_s = initial_wait_s
        #: Held around each connect attempt until the first connection is made: a process
        #: starting thousands of clients bounds the handshakes it has in flight.
        self._admission = admission
        # The newest (epoch, seq) received, kept as plain fields: a token object per sample
        # would cost more than the rest of the receive path.
        self._epoch: str | None = token.epoch if token else None
        self._since = token.since if token else -1
        #: How many connections have been established; the current one's number.
        self.connection = 0
        #: How many connection attempts have been made, successful or not.
        self.attempts = 0
        #: Samples received over every connection.
        self.received = 0
        #: The run the batch last handed out by :meth:`batches` makes (None: it is not one,
        #: or is one sample), for a receiver that accounts for runs at once.
        self.run: SampleRun | None = None
        s = self.settings
        self._backoff = Backoff(s.backoff_base_s, s.backoff_cap_s, s.backoff_jitter)
        self._healthy_after_s = s.backoff_cap_s

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    @property
    def token(self) -> ResumeToken | None:
        """What the next connection resumes from: the newest (epoch, seq) received."""
        return None if self._epoch is None else ResumeToken(self._epoch, self._since)

    async def __aiter__(self) -> AsyncGenerator[Sample, None]:
        """The samples one by one (the :meth:`batches` flattened)."""
        async with contextlib.aclosing(self.batches()) as batches:
            async for batch in batches:
                for sample in batch:
                    yield sample

    def _advance(self, batch: Sequence[Sample]) -> int:
        """Move the resume token over ``batch``; how many of its samples were new."""
        self.run = run = as_run(batch) if len(batch) > 1 else None
        if run is not None and (run.epoch != self._epoch or run.start > self._since):
            self._epoch, self._since = run.epoch, run.stop - 1
            return len(batch)
        fresh = 0
        for sample in batch:
            if sample.seq > self._since or sample.epoch != self._epoch:
                self._epoch, self._since = sample.epoch, sample.seq
                fresh += 1
        return fresh

    async def batches(self) -> AsyncGenerator[Sequence[Sample], None]:
        """The samples as they were read: a list per read of a batched transport, else one
        sample at a time. The token and counters move before each batch is handed out."""
        loop = asyncio.get_running_loop()
        wait = self._initial_wait_s
        deadline = None if wait is None else loop.time() + wait
        last: StreamError | None = None

        async def first(step: Awaitable[T]) -> T:
            """``step`` bounded by the wait for the first sample (while it runs)."""
            if deadline is None or self.received:
                return await step
            try:
                async with asyncio.timeout_at(deadline):
                    return await step
            except TimeoutError:
                cause = last or ServerUnavailable("no answer")
                raise WaitExpired(f"no sample within {wait:g} s: {cause}") from cause

        while True:
            self.attempts += 1
            attempt = self.attempts
            offered = self.token if self.settings.resume else None
            failure: StreamError
            delivered = fresh = 0
            connected = False
            async with contextlib.AsyncExitStack() as stack:
                turn = self._admission if self._admission and not self.connection else None
                try:
                    async with turn or contextlib.nullcontext():
                        stream: AsyncIterator[Sample] = await first(
                            stack.enter_async_context(
                                self.transport.connect(
                                    self.host, self.port, offered, self.settings, self.options
                                )
                            )
                        )
                except WaitExpired:
                    raise
                except StreamError as exc:
                    failure = exc
                else:
                    connected = True
                    self.connection += 1
                    up_since = loop.time()
                    self._emit(Connected(time.monotonic_ns(), self.connection, offered, attempt))
                    try:
                        if isinstance(stream, BatchedSampleStream):
                            # Lists, one per read: a step of its generator per read, not
                            # one per sample. The wait bounds only the first read.
                            batches = stream.batches()
                            batch = await first(anext(batches)) if not self.received else ()
                            while True:
                                if batch:
                                    delivered += len(batch)
                                    fresh += self._advance(batch)
                                    self.received += len(batch)
                                    yield batch
                                batch = await anext(batches)
                        else:
                            samples = aiter(stream)
                            if not self.received:
                                # The wait bounds only the first sample: one bounded step, then the
                                # plain loop below, which costs nothing extra per sample.
                                sample = await first(anext(samples))
                                delivered = fresh = 1
                                self._epoch, self._since = sample.epoch, sample.seq
                                self.received += 1
                                self.run = None
                                yield (sample,)
                            self.run = None
                            async for sample in samples:
                                delivered += 1
                                if sample.seq > self._since or sample.epoch != self._epoch:
                                    self._epoch, self._since = sample.epoch, sample.seq
                                    fresh += 1
                                self.received += 1
                                yield (sample,)
                    except StopAsyncIteration:
                        failure = ConnectionLost("closed by the server")
                    except WaitExpired:
                        raise
                    except StreamError as exc:
                        failure = exc
                    else:
                        failure = ConnectionLost("closed by the server")
                    lived_s = loop.time() - up_since
                    # New samples only: a server replaying the same ones is not progress.
                    if fresh >= HEALTHY_SAMPLES or (fresh and lived_s >= self._healthy_after_s):
                        self._backoff.reset()
            last = failure
            kind = failure_kind(failure)
            reason = f"{type(failure).__name__}: {failure}" if connected else str(failure)
            # Neither a peer speaking another protocol nor a certificate we refuse gets better
            # by retrying (a certificate is refused at every connect, samples or not).
            final = (kind == "not-this-protocol" and not self.received) or kind == "certificate"
            delay = None if final else self._backoff.next_delay()
            if deadline is not None and not self.received and delay is not None:
                # Never sleep past the wait: the last attempt comes right at its end.
                remaining = deadline - loop.time()
                delay = None if remaining <= 0 else min(delay, remaining)
            now_ns = time.monotonic_ns()
            if connected:
                self._emit(Disconnected(now_ns, self.connection, reason, kind, delivered))
            else:
                self._emit(ConnectFailed(now_ns, reason, delay, attempt, kind))
            if final:
                raise failure
            if delay is None:
                raise WaitExpired(f"no sample within {wait:g} s: {failure}") from failure
            await asyncio.sleep(delay)
