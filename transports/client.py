"""The shared reconnecting client: backoff, resume tokens and connection events.

:class:`StreamClient` wraps a transport's one-connection ``connect`` and yields samples across
as many connections as it takes. After every sample it holds the resume token ``(epoch, seq)``
of the newest sample received and sends it on the next connection (when ``settings.resume``).
It reports what happens to the connection as frozen event records, for the CLI and the
experiments (time to detect, time to reconnect).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from model.errors import ServerUnavailable, StreamError
from model.sample import Sample
from transports.backoff import Backoff
from transports.contract import Transport
from transports.options import Options
from transports.resume import ResumeToken
from transports.settings import Settings

__all__ = ["ClientEvent", "ConnectFailed", "Connected", "Disconnected", "StreamClient"]


@dataclass(frozen=True, slots=True)
class Connected:
    at_ns: int
    connection: int
    token: ResumeToken | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    at_ns: int
    connection: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    at_ns: int
    reason: str
    retry_in_s: float


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
    ) -> None:
        self.transport = transport
        self.host, self.port = host, port
        self.settings = transport.settings(settings)
        self.options = transport.options if options is None else options
        self._on_event = on_event
        self._initial_wait_s = initial_wait_s
        # The newest (epoch, seq) received, kept as plain fields: a token object per sample
        # would cost more than the rest of the receive path.
        self._epoch: str | None = token.epoch if token else None
        self._since = token.since if token else -1
        #: How many connections have been established; the current one's number.
        self.connection = 0
        s = self.settings
        self._backoff = Backoff(s.backoff_base_s, s.backoff_cap_s, s.backoff_jitter)

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    @property
    def token(self) -> ResumeToken | None:
        """What the next connection resumes from: the newest (epoch, seq) received."""
        return None if self._epoch is None else ResumeToken(self._epoch, self._since)

    async def __aiter__(self) -> AsyncGenerator[Sample, None]:
        started = time.monotonic()
        while True:
            offered = self.token if self.settings.resume else None
            try:
                async with self.transport.connect(
                    self.host, self.port, offered, self.settings, self.options
                ) as stream:
                    self.connection += 1
                    self._backoff.reset()
                    self._emit(Connected(time.monotonic_ns(), self.connection, offered))
                    try:
                        async for sample in stream:
                            if sample.seq > self._since or sample.epoch != self._epoch:
                                self._epoch, self._since = sample.epoch, sample.seq
                            yield sample
                    except StreamError as exc:
                        reason = f"{type(exc).__name__}: {exc}"
                    else:
                        reason = "closed by the server"
                    self._emit(Disconnected(time.monotonic_ns(), self.connection, reason))
            except ServerUnavailable as exc:
                elapsed = time.monotonic() - started
                if (
                    self.connection == 0
                    and self._initial_wait_s is not None
                    and elapsed >= self._initial_wait_s
                ):
                    raise
                delay = self._backoff.next_delay()
                if self.connection == 0 and self._initial_wait_s is not None:
                    delay = min(delay, max(0.0, self._initial_wait_s - elapsed))
                self._emit(ConnectFailed(time.monotonic_ns(), str(exc), delay))
                await asyncio.sleep(delay)
                continue
            except StreamError as exc:
                # Failed after connecting but before the stream was handed over (handshake).
                self._emit(ConnectFailed(time.monotonic_ns(), str(exc), 0.0))
            await asyncio.sleep(self._backoff.next_delay())
