"""The ``interop`` scenario: other people's clients against every server of their family."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from experiments.faults.rounds import Proxies
from experiments.interop.matrix import Cell, judge_cell, matrix_tables
from experiments.interop.reader import Reader
from experiments.interop.sessions import SESSIONS, Session
from experiments.results import Record, Results, Scalar
from experiments.run.context import RunContext
from experiments.scenarios.scenario import Column, Kind
from experiments.worker.browser import BrowserClients, chromium_path
from experiments.worker.page_outcome import Progress, browser_family
from experiments.worker.schema import ClientGroup, ClientOutcome
from model.source import BernoulliSource
from transports.contract import Transport
from transports.registry import get

__all__ = ["INTEROP", "Interop", "InteropKnobs"]

#: Server transport -> its protocol family (the transports every client of it can read).
FAMILY = {
    "tornado-ws": "websocket",
    "websockets": "websocket",
    "aiohttp-ws": "websocket",
    "sse": "sse",
    "poll": "poll",
    "long-poll": "long-poll",
    "tcp": "tcp",
}
#: WebSocket transports whose own clients read every WebSocket server.
WEBSOCKET_CLIENTS = ("tornado-ws", "websockets", "aiohttp-ws")
BROWSER = "Chromium (the page)"


@dataclass(frozen=True, slots=True)
class InteropKnobs:
    rate_hz: float
    #: Samples each client must read before the restart, of the new epoch after it, and
    #: after the black hole's heal.
    samples: int
    downtime_s: float
    #: Each wait for every client is bounded by this.
    wait_s: float


class _Clients:
    """The cell's clients: readers and, on a browser server, Chromium pages."""

    def __init__(self, readers: list[tuple[str, Reader]], browser: BrowserClients | None):
        self.readers = readers
        self.browser = browser

    async def progress(self) -> list[Progress]:
        out = [r.progress() for _, r in self.readers]
        if self.browser is not None:
            out += await self.browser.progress()
        return out

    async def until(self, check: Callable[[list[Progress]], bool], timeout_s: float) -> bool:
        """Whether ``check`` came true for the clients within ``timeout_s`` (looked at 10/s)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if check(await self.progress()):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)


class Interop:
    """Other people's clients against every server of their protocol family.

    Per server transport, one server at ``rate_hz`` and, through a fault proxy each, every
    client of its family: WebSocket — the ``websockets`` library, aiohttp ``ws_connect``
    and the tornado-ws, websockets and aiohttp-ws transports' own clients; SSE — ``httpx-sse``
    and ``sseclient-py``; polling and long polling — ``httpx``; TCP — a plain socket reading
    NDJSON; plus Chromium running the live page on every server a browser can read. The
    third-party clients send back the resume token as a user would (``?epoch=&since=``,
    ``Last-Event-ID``, the TCP hello) and drop a connection without a sample for
    ``dead_after_s``. The run: samples flow; the server gets ``kill -9``, stays down
    ``downtime_s`` and starts again (a new epoch); samples of the new epoch flow; every proxy
    becomes a black hole until each client noticed (or ``dead_after_s`` + heartbeat + 2 s),
    then heals. A cell passes when its client read valid samples, read the restarted server
    with 0 lost and 0 duplicated over the whole run (the ledger), noticed the hole while it
    held and read again after the heal. The report draws the matrix per family and blames
    each failure on the client, the server or the pair.
    """

    name = "interop"
    kind: Kind = "fault"
    concurrent = False  # one family member at a time: a crowd of clients on 2 cores is slow
    max_repeats: int | None = 1
    knobs: Mapping[str, InteropKnobs] = {
        "quick": InteropKnobs(rate_hz=100.0, samples=20, downtime_s=0.3, wait_s=15.0),
        "default": InteropKnobs(rate_hz=100.0, samples=50, downtime_s=0.5, wait_s=20.0),
        "full": InteropKnobs(rate_hz=100.0, samples=100, downtime_s=1.0, wait_s=30.0),
    }
    columns: tuple[Column, ...] = (
        Column("cells", "cells"),
        Column("cells_ok", "cells ok"),
        Column("lost", "lost"),
        Column("duplicated", "duplicated"),
        Column("failed", "failed cells"),
    )
    headline = (Column("cells_ok", "cells ok"), Column("cells", "of"))

    def variant(self, params: Mapping[str, Scalar]) -> str:
        return str(params.get("family", ""))

    async def run(self, ctx: RunContext) -> list[Record]:
        name = ctx.transport.name
        family = FAMILY.get(name)
        if family is None:
            return [ctx.record({}, {"not_applicable": f"no third-party clients for {name}"})]
        k = self.knobs[ctx.profile.name]
        settings = ctx.effective_settings
        read_timeout_s = settings.dead_after_s or 6.0
        hold_s = read_timeout_s + (settings.heartbeat_s or 0.0) + 2.0
        source = BernoulliSource(ctx.p, ctx.seed)
        makers: list[tuple[str, Session | None, Transport | None]] = [
            (client, session, None) for client, session in SESSIONS[family]
        ]
        if family == "websocket":
            makers += [(f"{own} (own client)", None, get(own)) for own in WEBSOCKET_CLIENTS]

        def make(session: Session | None, own: Transport | None, host: str, port: int) -> Reader:
            if own is not None:
                mine = (own, ctx.settings, own.options)
                return Reader(host, port, source, read_timeout_s, own=mine)
            return Reader(host, port, source, read_timeout_s, session=session)

        browser = browser_family(name) is not None and chromium_path() is not None
        count = len(makers) + browser
        async with (
            ctx.server(k.rate_hz, keep=False) as server,
            Proxies(ctx, server, count) as proxies,
            contextlib.AsyncExitStack() as stack,
        ):
            readers = []
            for (client, session, own), proxy in zip(makers, proxies.items, strict=False):
                reader = make(session, own, proxy.host, proxy.port)
                reader.start()
                stack.push_async_callback(reader.stop)
                readers.append((client, reader))
            pages = None
            if browser:
                proxy = proxies.items[-1]
                group = ClientGroup(1, host=proxy.host, port=proxy.port)
                job = ctx.job(server.port, (group,), keep_samples=True, keep_latencies=False)
                pages = await stack.enter_async_context(BrowserClients(job))
                await pages.wait_ready()
            clients = _Clients(readers, pages)
            n = k.samples
            await clients.until(lambda ps: all(p.received >= n for p in ps), k.wait_s)
            ctx.note("kill -9, restart")
            await server.kill()
            await asyncio.sleep(k.downtime_s)  # the outage itself
            await server.start()
            new_epoch = server.epoch or ""
            await clients.until(
                lambda ps: all(p.by_epoch.get(new_epoch, 0) >= n for p in ps), k.wait_s
            )
            ctx.note("black hole")
            start = time.monotonic_ns()
            for proxy in proxies.items:
                proxy.blackhole()
            await clients.until(
                lambda ps: all((p.last_disconnect_ns or 0) > start for p in ps), hold_s
            )
            for proxy in proxies.items:
                proxy.heal()
            healed = time.monotonic_ns()
            at_heal = [p.received for p in await clients.progress()]
            recovered = await _recovered(clients, at_heal, n, k.wait_s)
            outcomes: list[tuple[str, ClientOutcome]] = []
            for index, (client, reader) in enumerate(readers):
                await reader.stop()
                outcomes.append((client, reader.outcome(index)))
            if pages is not None:
                result = await pages.stop()
                outcomes.append((BROWSER, result.clients[0]))
        cells = [
            judge_cell(family, client, name, outcome, new_epoch, (start, healed), ok)
            for (client, outcome), ok in zip(outcomes, recovered, strict=True)
        ]
        failed = [f"{c.client}: {'; '.join(c.problems)}" for c in cells if not c.ok]
        metrics: dict[str, Scalar] = {
            "cells": len(cells),
            "cells_ok": sum(c.ok for c in cells),
            "lost": sum(c.lost for c in cells),
            "duplicated": sum(c.duplicated for c in cells),
            "failed": " · ".join(failed) if failed else "none",
        }
        params: dict[str, Scalar] = {
            "family": family,
            "rate_hz": k.rate_hz,
            "downtime_s": k.downtime_s,
            "read_timeout_s": read_timeout_s,
        }
        return [ctx.record(params, metrics, detail=cells)]

    def sections(self, results: Results, out_dir: Path) -> list[str]:
        cells = _cells(r for r in results.records if r.scenario == self.name and not r.error)
        if not cells:
            return []
        return [
            "### Interop matrix\n\nRows: clients; columns: servers of the family. ✓: valid "
            "samples, resumed across kill -9 and restart with 0 lost/0 duplicated, noticed "
            "the black hole (time to notice), read again after the heal. ✗: what failed and "
            "who is at fault (client: it fails on every server where others pass; server: "
            "every client fails on it; pair: neither).",
            *matrix_tables(cells),
        ]


async def _recovered(
    clients: _Clients, at_heal: Sequence[int], n: int, timeout_s: float
) -> list[bool]:
    """Whether each client read ``n`` more samples after the heal (within the bound)."""

    def done(ps: list[Progress]) -> bool:
        return all(p.received >= r + n for p, r in zip(ps, at_heal, strict=True))

    await clients.until(done, timeout_s)
    now = await clients.progress()
    return [p.received >= r + n for p, r in zip(now, at_heal, strict=True)]


def _cells(records: Iterable[Record]) -> list[Cell]:
    out: list[Cell] = []
    for r in records:
        if "cells" in r.metrics:
            out += msgspec.json.decode(r.detail, type=list[Cell])
    return out


INTEROP = Interop()
