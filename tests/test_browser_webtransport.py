"""WebTransport as a browser client: Chromium reads the webtransport server, pinning its hash.

The harness's browser clients (:class:`~experiments.worker.browser.BrowserClients`) against a
real aioquic server in this process, with the throwaway certificate the server issues itself
from the local CA: the page gets that certificate's SHA-256 (read off a verified handshake)
and opens ``new WebTransport(url, {serverCertificateHashes})``. A short latency window is
judged by the same ledger as the Python worker's (0 lost, 0 duplicated, a latency histogram),
and a server restart (a new epoch and a new certificate) is crossed with resume: before it
reconnects the page asks the page host for the current hash, and reads on from seq 0 of the
new epoch. A page any web server serves takes the hash in its URL; a wrong one is refused.
The handshake probe is checked on its own, against a certificate it must refuse. Chromium is
Debian's (``CHROMIUM`` may point elsewhere): without it these tests fail, saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from experiments.histogram import merge, summarize
from experiments.worker.browser import BrowserClients, chromium_path
from experiments.worker.certificate_pin import (
    CertificateUnavailable,
    server_certificate_sha256,
    sha256_base64,
)
from experiments.worker.kinds import kind_not_applicable
from experiments.worker.page_outcome import Progress, browser_client
from experiments.worker.schema import ClientGroup, ClientJob, Connected
from tests.support import FAST, RunningServer, running_server
from transports.certs import authority_certificate, pinnable_certificate
from transports.page import PageConfig, render_page
from transports.registry import get
from transports.webtransport import WebTransportOptions, WebTransportServer

pytestmark = pytest.mark.xdist_group("cpu-heavy")  # Chromium: one browser test at a time

WEBTRANSPORT = get("webtransport")
#: The seed ``running_server``'s source uses: the ledger checks every value against it.
SEED = 7


def _require_chromium() -> None:
    if chromium_path() is None:
        pytest.fail("Chromium not found: apt-get install chromium, or set CHROMIUM", False)


def _job(
    running: RunningServer,
    *,
    warmup_s: float = 0.0,
    duration_s: float | None = None,
    keep_latencies: bool = True,
) -> ClientJob:
    return ClientJob(
        transport="webtransport",
        host="127.0.0.1",
        port=running.port,
        groups=(ClientGroup(1),),
        settings=FAST,
        options=msgspec.Raw(msgspec.json.encode(WebTransportOptions())),
        seed=SEED,
        connect_timeout_s=10.0,
        warmup_s=warmup_s,
        duration_s=duration_s,
        keep_latencies=keep_latencies,
    )


def _certificate_sha256(running: RunningServer) -> str | None:
    """The hash of the certificate the running server shows (hex)."""
    assert isinstance(running.server, WebTransportServer)
    return running.server.certificate_sha256


async def _until(
    pages: BrowserClients, what: str, done: Callable[[Progress], bool], timeout_s: float
) -> Progress:
    """Poll the page's position until ``done`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        (progress,) = await pages.progress()
        if done(progress):
            return progress
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout_s:g} s: {progress}")
        await asyncio.sleep(0.1)


def test_the_browser_kind_reads_webtransport() -> None:
    assert kind_not_applicable("browser", "webtransport") is None
    assert browser_client("webtransport").startswith("WebTransport")


@pytest.mark.browser
@pytest.mark.timeout(40)
async def test_a_webtransport_page_is_judged_by_the_ledger() -> None:
    _require_chromium()
    async with running_server(WEBTRANSPORT, FAST, rate_hz=1000) as running:
        job = _job(running, warmup_s=0.2, duration_s=1.0)
        async with BrowserClients(job) as pages:
            ready = await pages.wait_ready()
            result = await pages.result()
    assert (ready.connected, ready.clients) == (1, 1)
    (client,) = result.clients
    counts = client.counts
    assert (counts.lost, counts.duplicated, counts.reordered, counts.corrupted) == (0, 0, 0, 0)
    assert client.epochs == [running.hub.epoch] and client.error is None
    # The hash rendered into the page opened the first session: one attempt, no failure.
    assert [type(e) for e in client.events] == [Connected]
    first = client.events[0]
    assert isinstance(first, Connected) and first.attempt == 1
    assert client.received_in_window > 500  # 1,000/s for 1 s, on a shared machine
    histogram = merge(result.latency.values())
    assert histogram is not None
    latency = summarize(histogram)
    assert latency.count == client.received_in_window
    assert 0 <= latency.p50_ms < 1000


@pytest.mark.browser
@pytest.mark.timeout(40)
async def test_a_webtransport_page_resumes_across_a_restart_with_a_new_certificate() -> None:
    _require_chromium()
    async with running_server(WEBTRANSPORT, FAST, rate_hz=200) as running:
        async with BrowserClients(_job(running, keep_latencies=False)) as pages:
            await pages.wait_ready()
            await _until(pages, "50 samples", lambda p: p.received >= 50, 10.0)
            first_epoch, first_hash = running.hub.epoch, _certificate_sha256(running)
            await running.restart()
            second_epoch = running.hub.epoch
            assert _certificate_sha256(running) != first_hash  # a new certificate
            await _until(
                pages,
                "50 samples of the new epoch",
                lambda p: p.by_epoch.get(second_epoch, 0) >= 50,
                15.0,
            )
            result = await pages.stop()
    (client,) = result.clients
    assert client.epochs == [first_epoch, second_epoch]
    counts = client.counts
    assert (counts.lost, counts.duplicated, counts.reordered, counts.corrupted) == (0, 0, 0, 0)
    assert client.disconnects() >= 1
    connections = [e for e in client.events if isinstance(e, Connected)]
    assert len(connections) >= 2
    # Chromium opens a session only to the certificate pinned, so the page pinned the new
    # one; and it resumed: the new session's CONNECT carried the first run's position.
    token = connections[-1].token
    assert token is not None and token[0] == first_epoch


async def test_the_probe_hashes_a_verified_certificate_and_refuses_an_unknown_one(
    tmp_path: Path,
) -> None:
    pinned = pinnable_certificate(tmp_path / "pinned")
    options = WebTransportOptions(certfile=str(pinned.certfile), keyfile=str(pinned.keyfile))
    async with running_server(WEBTRANSPORT, FAST, rate_hz=10, options=options) as running:
        # Trusted (the certificate is its own CA): the hash is the certificate's.
        trusting = WebTransportOptions(cafile=str(pinned.cafile))
        got = await server_certificate_sha256("127.0.0.1", running.port, FAST, trusting, 5.0)
        assert got == pinned.sha256 == _certificate_sha256(running)
        assert sha256_base64(got) == pinned.sha256_base64
        # A CA that did not sign it: refused, as the Python client refuses it.
        other = authority_certificate(tmp_path / "other")
        with pytest.raises(CertificateUnavailable, match="handshake failed"):
            await server_certificate_sha256(
                "127.0.0.1", running.port, FAST, WebTransportOptions(cafile=str(other.cafile)), 5.0
            )
        port = running.port
    # Nobody on the port any more: refused at once (ICMP), not at the timeout.
    started = time.monotonic()
    with pytest.raises(CertificateUnavailable, match="no QUIC server"):
        await server_certificate_sha256("127.0.0.1", port, FAST, WebTransportOptions(), 5.0)
    assert time.monotonic() - started < 2.0


@pytest.mark.browser
@pytest.mark.timeout(40)
async def test_a_page_takes_the_hash_in_its_url_and_a_wrong_one_is_refused() -> None:
    chromium = chromium_path()
    if chromium is None:
        pytest.fail("Chromium not found: apt-get install chromium, or set CHROMIUM", False)
    body = render_page(PageConfig("sse"))  # a page host that knows nothing of WebTransport

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    consoles: list[str] = []
    try:
        async with (
            running_server(WEBTRANSPORT, FAST, rate_hz=200) as running,
            async_playwright() as playwright,
        ):
            hex_digest = _certificate_sha256(running)
            assert hex_digest is not None
            page_url = (
                f"http://localhost:{runner.addresses[0][1]}/?transport=webtransport"
                f"&server=https://127.0.0.1:{running.port}&certificate_sha256="
            )
            browser = await playwright.chromium.launch(executable_path=chromium)
            try:
                right = await browser.new_page()
                await right.goto(page_url + hex_digest)  # as `serve webtransport` prints it
                await right.wait_for_function("() => window.bench.received >= 50", timeout=15_000)
                counts = await right.evaluate("() => window.bench.counts()")
                wrong = await browser.new_page()
                wrong.on("console", lambda message: consoles.append(message.text))
                await wrong.goto(page_url + quote(sha256_base64("00" * 32)))
                await wrong.wait_for_function(
                    "() => window.bench.events.filter((e) => e.kind === 'connect-failed')"
                    ".length >= 2",
                    timeout=15_000,
                )
                refused = await wrong.evaluate("() => [window.bench.received, window.bench.state]")
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    assert (counts["lost"], counts["duplicated"]) == (0, 0) and counts["delivered"] >= 50
    assert refused == [0, "reconnecting"]
    # The page hears only "Opening handshake failed."; the console says why.
    assert any("CERTIFICATE" in line for line in consoles), consoles
