"""The live page in a real headless Chromium: every browser transport, origins, resume.

Debian's ``chromium``, driven through Playwright's Python API with the system browser
(``executable_path``; Playwright's own browser download cannot work offline). Without a
Chromium these tests fail, saying so: they are never skipped. One browser serves the whole
module; each test gets a fresh context (no cache, no cookies shared between tests).

What a page received is judged twice: by the page's own JavaScript ledger and by the suite's
Python :class:`~model.ledger.DeliveryLedger` fed with the samples the page recorded, and the
two must agree. ``*.test`` names resolve to 127.0.0.1 inside the browser, which gives a page an
origin that is not loopback while it is still served from this machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright
from scipy.stats import beta as beta_dist

from experiments.faults.proxy import FaultProxy
from model.ledger import DeliveryCounts, DeliveryLedger
from model.sample import Sample
from tests.support import FAST, RunningServer, running_server
from transports.page import PageConfig, render_page
from transports.registry import get

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.xdist_group("cpu-heavy"),  # Chromium: one browser test at a time under -n 2
]

#: Servers that serve the live page at ``GET /`` (the other transports' servers join as they
#: adopt :mod:`transports.page`).
PAGE_SERVERS = ("tornado-ws", "tornado-ws-seed", "sse", "poll", "long-poll")
#: One server per protocol family a browser speaks.
FAMILIES = ("tornado-ws", "sse", "poll")
#: Playwright counts milliseconds.
WAIT_MS = 15_000


def _chromium() -> str:
    """The system Chromium, or a failure saying how to get one (never a skip)."""
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(
            f"Chromium not found ({path or 'no chromium on PATH'}): the browser tests drive "
            "Debian's chromium (apt-get install chromium; .ci/run installs it when missing), "
            "or set CHROMIUM=/path/to/chromium",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable,
            args=["--host-resolver-rules=MAP *.test 127.0.0.1"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    fresh = await browser.new_context()
    try:
        yield fresh
    finally:
        await fresh.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def page_host() -> AsyncIterator[int]:
    """A plain web server on its own port serving only the page: another origin."""
    body = render_page(PageConfig("sse"))

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@dataclass
class Console:
    """What a page said on its console (the browser's CORS and handshake errors land there)."""

    lines: list[str]

    def mentions(self, text: str) -> bool:
        return any(text in line for line in self.lines)


async def _open(context: BrowserContext, url: str) -> tuple[Page, Console]:
    """A new page at ``url``, and its console until the page closes.

    Close the page before its server stops: the page's retries would then fill the console.
    """
    page = await context.new_page()
    console = Console([])
    page.on("console", lambda message: console.lines.append(message.text))
    await page.goto(url)
    return page, console


async def _wait(page: Page, condition: str) -> None:
    await page.wait_for_function(f"() => {condition}", timeout=WAIT_MS)


async def _bench(page: Page) -> dict[str, Any]:
    """The page's ``window.bench`` at one instant (its ledger's counts included), and the
    samples recorded since the last look (``records``, with ``?record=1``)."""
    state: dict[str, Any] = await page.evaluate(
        """() => ({...window.bench, counts: window.bench.counts(), records: window.bench.take(),
                   config: undefined})"""
    )
    return state


async def _judged(page: Page, running: RunningServer) -> tuple[DeliveryLedger, dict[str, Any]]:
    """The Python ledger fed with what the page recorded, and the page's own view then."""
    bench = await _bench(page)
    ledger = DeliveryLedger(running.source)
    for epoch, seq, value, sent_ns, _, connection in bench["records"]:
        ledger.record(Sample(epoch, seq, value, sent_ns), connection)
    return ledger, bench


def _agree(ledger: DeliveryLedger, bench: dict[str, Any]) -> DeliveryCounts:
    """The page's counts are the Python ledger's; its posterior too."""
    counts = ledger.counts()
    assert counts.corrupted == 0  # every value the page decoded is the source's
    page_counts = bench["counts"]
    assert (
        page_counts["delivered"],
        page_counts["lost"],
        page_counts["duplicated"],
        page_counts["reordered"],
    ) == (counts.delivered, counts.lost, counts.duplicated, counts.reordered)
    assert (bench["alpha"], bench["beta"]) == (ledger.posterior.alpha, ledger.posterior.beta)
    return counts


# -- the page on every browser transport -------------------------------------------------------


@pytest.mark.parametrize("name", PAGE_SERVERS)
async def test_the_page_receives_samples(name: str, context: BrowserContext) -> None:
    async with running_server(get(name), FAST, rate_hz=200) as running:
        page, console = await _open(context, f"http://127.0.0.1:{running.port}/?record=1")
        await _wait(page, "window.bench.received >= 100 && window.bench.low !== null")
        ledger, bench = await _judged(page, running)
        await page.close()
    assert bench["transport"] == name and bench["state"] == "connected"
    assert ledger.epochs == [running.hub.epoch] == [bench["epoch"]]
    counts = _agree(ledger, bench)
    assert counts.delivered >= 100
    assert (counts.lost, counts.duplicated, counts.reordered) == (0, 0, 0)
    assert bench["connection"] == 1 and bench["malformed"] == 0
    assert not console.lines, console.lines
    # The page drew its band: an interval around the mean, inside [0, 1].
    assert 0 < bench["low"] < bench["mean"] < bench["high"] < 1


async def test_the_page_computes_exact_beta_quantiles(context: BrowserContext) -> None:
    pairs = [(2, 2), (3, 50), (184, 75), (7_202, 2_801), (720_002, 280_001), (1, 1), (0.5, 0.5)]
    async with running_server(get("sse"), FAST, rate_hz=10) as running:
        page, _ = await _open(context, f"http://127.0.0.1:{running.port}/")
        quantiles: list[list[float]] = await page.evaluate(
            """(pairs) => pairs.map(([a, b]) =>
                [0.025, 0.5, 0.975].map((p) => window.benchMath.betaQuantile(a, b, p)))""",
            pairs,
        )
    for (a, b), got in zip(pairs, quantiles, strict=True):
        expected = beta_dist.ppf([0.025, 0.5, 0.975], a, b)
        assert got == pytest.approx(list(expected), rel=1e-7, abs=1e-12), (a, b)


# -- origins: the same policy on WebSocket, SSE and polling ------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("how", ["loopback", "configured"])
async def test_an_allowed_cross_origin_page_reads_the_stream(
    name: str, how: str, context: BrowserContext, page_host: int
) -> None:
    # Loopback pages are allowed by default; page.test only when the setting names it.
    host = "localhost" if how == "loopback" else "page.test"
    settings = FAST.with_changes(allow_origins=("http://page.test:*",) if how != "loopback" else ())
    async with running_server(get(name), settings, rate_hz=200) as running:
        url = f"http://{host}:{page_host}/?transport={name}&server=http://127.0.0.1:{running.port}"
        page, console = await _open(context, url + "&record=1")
        await _wait(page, "window.bench.received >= 50")
        ledger, bench = await _judged(page, running)
        await page.close()
    counts = _agree(ledger, bench)
    assert (counts.lost, counts.duplicated) == (0, 0)
    assert not console.lines, console.lines


@pytest.mark.parametrize("name", FAMILIES)
async def test_a_refused_origin_gets_nothing(
    name: str, context: BrowserContext, page_host: int
) -> None:
    async with running_server(get(name), FAST, rate_hz=200) as running:
        url = (
            f"http://page.test:{page_host}/?transport={name}&server=http://127.0.0.1:{running.port}"
        )
        page, console = await _open(context, url)
        # The page keeps trying (with backoff); each attempt is refused.
        await _wait(
            page, "window.bench.events.filter((e) => e.kind === 'connect-failed').length >= 3"
        )
        bench = await _bench(page)
        subscribers = running.hub.subscriber_count
        await page.close()
    assert bench["received"] == 0 and bench["connection"] == 0
    assert subscribers == 0  # the server streamed nothing to it
    if name == "tornado-ws":
        assert console.mentions("Unexpected response code: 403"), console.lines
    else:
        # 403 without Access-Control-Allow-Origin: the browser hands the page nothing.
        assert console.mentions("has been blocked by CORS policy"), console.lines
        assert console.mentions("No 'Access-Control-Allow-Origin' header"), console.lines


# -- resume: EventSource across a restart, the page's WebSocket across a reset -----------------


async def test_event_source_resumes_across_a_server_restart(context: BrowserContext) -> None:
    requests: list[Request] = []
    # FAST's backoff cap (0.1 s) is the retry: hint, so the browser comes back quickly.
    async with running_server(get("sse"), FAST, rate_hz=200) as running:
        page = await context.new_page()
        page.on("request", lambda r: requests.append(r) if "/events" in r.url else None)
        await page.goto(f"http://127.0.0.1:{running.port}/?record=1")
        await _wait(page, "window.bench.received >= 50")
        first_epoch = running.hub.epoch
        await running.restart()
        second_epoch = running.hub.epoch
        received = await page.evaluate("() => window.bench.received")
        await _wait(
            page,
            f"window.bench.epoch === '{second_epoch}' && window.bench.received >= {received + 50}",
        )
        ledger, bench = await _judged(page, running)
    assert ledger.epochs == [first_epoch, second_epoch]
    counts = _agree(ledger, bench)
    assert (counts.lost, counts.duplicated, counts.reordered) == (0, 0, 0)
    # The browser reconnected by itself: the page made one EventSource, never a second.
    kinds = [e["kind"] for e in bench["events"]]
    assert kinds.count("connecting") == 1, bench["events"]
    assert {"kind": "disconnected", "detail": "native reconnect"} in [
        {"kind": e["kind"], "detail": e.get("detail")} for e in bench["events"]
    ]
    assert bench["connection"] >= 2
    # ... sending Last-Event-ID, the newest id it had of the first run.
    resent = [await r.header_value("last-event-id") for r in requests[1:]]
    assert any(value and value.startswith(f"{first_epoch}:") for value in resent), resent


async def test_the_websocket_page_resumes_across_a_reset(context: BrowserContext) -> None:
    async with running_server(get("tornado-ws"), FAST, rate_hz=200) as running:
        proxy = FaultProxy("127.0.0.1", running.port)
        await proxy.start()
        try:
            page, _ = await _open(context, f"http://127.0.0.1:{proxy.port}/?record=1")
            await _wait(page, "window.bench.received >= 50")
            proxy.reset_peer()  # RST both ways, mid-stream
            received = await page.evaluate("() => window.bench.received")
            await _wait(
                page,
                f"window.bench.connection >= 2 && window.bench.received >= {received + 100}",
            )
            ledger, bench = await _judged(page, running)
        finally:
            with contextlib.suppress(Exception):
                await proxy.stop()
    counts = _agree(ledger, bench)
    assert ledger.epochs == [running.hub.epoch]
    assert (counts.lost, counts.duplicated, counts.reordered) == (0, 0, 0)
    reconnects = [e for e in bench["events"] if e["kind"] == "connecting"][1:]
    assert reconnects and all("?epoch=" in e["detail"] for e in reconnects), reconnects
    assert any(e["kind"] == "disconnected" for e in bench["events"])
