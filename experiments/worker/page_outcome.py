"""What a browser page recorded, read as the worker's typed outcome (pure: no browser here).

The live page (:mod:`transports.page`) keeps, with ``?record=1``, every sample it received as
``[epoch, seq, value, sent_ns, received_ms, connection]`` and its events as
``{kind, t, detail}``, ``t`` and ``received_ms`` in milliseconds since 1970 from the browser's
clock (``performance.timeOrigin + performance.now()``). The harness judges samples against the
server's ``time.monotonic_ns()`` (``sent_ns``), so a browser time is mapped onto the monotonic
clock with a :class:`ClockMap`: ``time.time_ns()`` and ``time.monotonic_ns()`` read together on
the harness side (same machine, same kernel clocks as Chromium's), the pair with the shortest
gap kept; a browser time ``t`` ms maps to ``t * 1e6 - (wall - monotonic)``. Its error bound:
the gap between the two reads (well under a microsecond), plus Chromium's coarsening of
``performance.now()`` (100 µs, with jitter, in a page that is not cross-origin isolated), plus
any slew of the wall clock between Chromium fixing ``timeOrigin`` and the read (NTP slews at
most 500 ppm: 0.5 ms per second of page life in the worst case, none on an idle clock). The
browser side checks it: :func:`bracket_error_ns` reads the page's clock between two harness
reads and says how far the mapped value lies outside them.

:func:`page_outcome` feeds the samples through the same :class:`~model.ledger.DeliveryLedger`
the Python worker uses and turns the events into the worker's
:data:`~experiments.worker.schema.ClientEvent`, so every scenario judges a page exactly as it
judges a Python client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from experiments.worker.schema import (
    ClientEvent,
    ClientOutcome,
    Connected,
    ConnectFailed,
    Disconnected,
    Role,
)
from model.ledger import DeliveryLedger
from model.sample import Sample
from model.source import BernoulliSource

__all__ = [
    "BROWSER_CLOCK",
    "BROWSER_SCENARIOS",
    "FAMILIES",
    "ClockMap",
    "PageEvent",
    "PageRecord",
    "PageState",
    "Progress",
    "bracket_error_ns",
    "browser_client",
    "browser_family",
    "page_outcome",
]

#: How the report explains a browser row's latency clock.
BROWSER_CLOCK = (
    "Browser rows (client kind `browser`): the page stamps each sample on receipt with "
    "`performance.timeOrigin + performance.now()` (the browser's wall clock, ms). The harness "
    "reads `time.time_ns()` between two `time.monotonic_ns()` reads on the same machine and "
    "maps a browser time t to t − (wall − monotonic), so it is compared with the server's "
    "`sent_ns` on one clock. Error bound: the gap between the harness's reads (< 1 µs), "
    "Chromium's coarsening of `performance.now()` (100 µs with jitter in a page that is not "
    "cross-origin isolated) and any slew of the wall clock since the page fixed its "
    "`timeOrigin` (at most 500 ppm of the page's life under NTP; none on an unslewed clock). "
    "Latencies a coarsened clock puts below 0 count as 0."
)
#: Transport -> the page's protocol family (the page's own ``FAMILIES``).
FAMILIES = {
    "tornado-ws": "websocket",
    "tornado-ws-seed": "websocket",
    "websockets": "websocket",
    "aiohttp-ws": "websocket",
    "sse": "sse",
    "poll": "poll",
    "long-poll": "long-poll",
    "webtransport": "webtransport",
}
#: The browser's client per family, as the report names it.
CLIENTS = {
    "websocket": "WebSocket (page's reconnect)",
    "sse": "EventSource (native reconnect)",
    "poll": "fetch polling (page's loop)",
    "long-poll": "fetch long polling (page's loop)",
    "webtransport": "WebTransport, pinned certificate hash (page's reconnect)",
}
#: The scenarios a browser client takes part in.
BROWSER_SCENARIOS = ("latency", "restart", "reset", "blackhole")


def browser_family(transport: str) -> str | None:
    """The page's family for ``transport`` (None: the page cannot read it)."""
    return FAMILIES.get(transport)


def browser_client(transport: str) -> str:
    """What the report calls the browser's client of ``transport``."""
    family = browser_family(transport)
    return CLIENTS.get(family or "", "browser")


@dataclass(frozen=True, slots=True)
class Progress:
    """A client's position at one instant (a page's or an interop reader's)."""

    received: int
    #: Samples of each epoch received.
    by_epoch: dict[str, int]
    #: When it last noticed a connection end (``time.monotonic_ns()``), or None.
    last_disconnect_ns: int | None


#: One recorded sample: epoch, seq, value, sent_ns, received_ms, connection.
PageRecord = tuple[str, int, int, int, float, int]


class PageEvent(msgspec.Struct, frozen=True):
    kind: str
    t: float
    detail: str | None = None


class PageState(msgspec.Struct, frozen=True):
    """What the harness reads off ``window.bench`` at the end of a run."""

    received: int
    connection: int
    malformed: int
    events: list[PageEvent]
    records: list[PageRecord]


@dataclass(frozen=True, slots=True)
class ClockMap:
    """Browser wall time (ms since 1970) -> the harness's ``time.monotonic_ns()``."""

    #: ``time.time_ns() - time.monotonic_ns()``.
    offset_ns: int
    #: The gap between the two reads the offset came from.
    read_gap_ns: int

    @classmethod
    def now(cls, tries: int = 20) -> ClockMap:
        best: ClockMap | None = None
        for _ in range(tries):
            a = time.monotonic_ns()
            wall = time.time_ns()
            b = time.monotonic_ns()
            candidate = cls(wall - (a + b) // 2, b - a)
            if best is None or candidate.read_gap_ns < best.read_gap_ns:
                best = candidate
        assert best is not None
        return best

    def monotonic_ns(self, browser_ms: float) -> int:
        return round(browser_ms * 1e6) - self.offset_ns


def bracket_error_ns(clock: ClockMap, before_ns: int, browser_ms: float, after_ns: int) -> int:
    """How far the page's clock, mapped, lies outside the harness reads around it (0: inside)."""
    mapped = clock.monotonic_ns(browser_ms)
    return max(0, before_ns - mapped, mapped - after_ns)


def _token(url: str) -> tuple[str, int] | None:
    """The resume token a ``connecting`` URL carries (``?epoch=&since=`` or ``lastEventId``)."""
    query = parse_qs(urlsplit(url).query)
    if "epoch" in query and "since" in query:
        return query["epoch"][0], int(query["since"][0])
    if "lastEventId" in query:
        epoch, _, seq = unquote(query["lastEventId"][0]).partition(":")
        return (epoch, int(seq)) if seq.isdigit() else None
    return None


def _events(
    page: Sequence[PageEvent], records: Sequence[PageRecord], clock: ClockMap
) -> list[ClientEvent]:
    out: list[ClientEvent] = []
    attempt, connection = 0, 0
    token: tuple[str, int] | None = None
    for index, e in enumerate(page):
        at = clock.monotonic_ns(e.t)
        detail = e.detail or ""
        if e.kind == "connecting":
            attempt += 1
            token = _token(detail)
        elif e.kind == "connected":
            connection = int(detail) if detail.isdigit() else connection + 1
            out.append(Connected(at, connection, token, max(attempt, 1)))
        elif e.kind == "disconnected":
            samples = sum(r[5] == connection for r in records)
            out.append(Disconnected(at, connection, detail, "lost", samples))
            if detail == "native reconnect":
                attempt += 1  # the browser's own next attempt makes no "connecting" event
        elif e.kind == "connect-failed":
            later = [x for x in page[index + 1 :] if x.kind in ("connecting", "connected")]
            retry = (later[0].t - e.t) / 1000 if later else None
            out.append(ConnectFailed(at, detail, retry, max(attempt, 1), "unavailable"))
            if detail == "native reconnect":
                attempt += 1
    return out


def page_outcome(
    index: int,
    role: Role,
    state: PageState,
    clock: ClockMap,
    source: BernoulliSource,
    window: tuple[int | None, int | None],
    *,
    keep_samples: bool,
    latencies: list[int] | None,
) -> ClientOutcome:
    """The page's run as a :class:`ClientOutcome`; the window's latencies (ns, clamped at 0:
    a browser time may read up to its coarsening early) appended to ``latencies``."""
    ledger = DeliveryLedger(source)
    start, end = window
    in_window = 0
    samples: list[tuple[int, str, int, int]] = []
    for epoch, seq, value, sent_ns, received_ms, connection in state.records:
        ledger.record(Sample(epoch, seq, value, sent_ns), connection)
        received_ns = clock.monotonic_ns(received_ms)
        if start is not None and end is not None and start <= received_ns < end:
            in_window += 1
            if latencies is not None:
                latencies.append(max(0, received_ns - sent_ns))
        if keep_samples:
            samples.append((received_ns, epoch, seq, sent_ns))
    error = f"{state.malformed} malformed samples" if state.malformed else None
    return ClientOutcome(
        index=index,
        role=role,
        received=len(state.records),
        received_in_window=in_window,
        counts=ledger.counts(),
        posterior_error=ledger.posterior_error(),
        epochs=list(ledger.epochs),
        events=_events(state.events, state.records, clock),
        samples=samples,
        error=error,
    )
