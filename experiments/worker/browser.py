"""Browser clients: :class:`BrowserClients` runs a :class:`ClientJob` as pages in Chromium.

The ``browser`` client kind (``python -m experiments --client-kinds python,browser``): one
headless Debian ``chromium`` (Playwright's Python API with the system browser via
``executable_path``; Playwright's own browser download cannot work offline) opens one page per
client of the job, each the live page of :mod:`transports.page` reading the job's server (or
its group's fault proxy) with ``?transport=NAME&server=URL&record=1``. The page is served by a
small page host of the harness on 127.0.0.1 (a loopback origin, which every server's origin
policy allows by default, and a secure context, which WebTransport needs), rendered with the
transport's effective settings and options, so it behaves as the server's own page would.

WebTransport: Chromium needs no flag, but it trusts the server's certificate (the throwaway one
a server issues itself from the local CA) only by its hash. The harness reads it off a
verified QUIC handshake with the job's server (:mod:`experiments.worker.certificate_pin`) and
renders it into the page (:attr:`~transports.page.PageConfig.certificate_sha256`); the page
host answers ``GET /certificate-sha256`` with the current one (a new handshake), which the page
asks for before every reconnect, as a page asks its origin: a restarted server shows a new
certificate. So a page's reconnect over WebTransport costs that fetch and one QUIC handshake
more than a Python client's (milliseconds on loopback).

It answers like :class:`~experiments.worker.process.ClientProcess` (``wait_ready``,
``result``, ``stop``, ``async with``) and returns the same
:class:`~experiments.worker.schema.WorkerResult`: each page's recorded samples go through the
ledger, its events become the worker's events, and latencies (browser receive time mapped onto
the server's ``time.monotonic_ns()``, :class:`~experiments.worker.page_outcome.ClockMap`)
become the role's HDR histogram. So every scenario judges a page as it judges a Python client.
Roles: ``normal`` only (a page reads as fast as samples come).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import time
from types import TracebackType
from typing import Any

import msgspec
import psutil
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from experiments.histogram import encode_latencies
from experiments.run.processes import HarnessError
from experiments.worker.certificate_pin import (
    CertificateUnavailable,
    server_certificate_sha256,
    sha256_base64,
)
from experiments.worker.page_outcome import (
    ClockMap,
    PageRecord,
    PageState,
    Progress,
    bracket_error_ns,
    browser_family,
    page_outcome,
)
from experiments.worker.probe import ServerProbe, cpu_seconds
from experiments.worker.schema import ClientJob, Window, WorkerReady, WorkerResult
from model.source import BernoulliSource
from transports.page import PageConfig, render_page
from transports.polling import LongPollOptions, PollOptions
from transports.polling import page_config as polling_page_config
from transports.registry import get

__all__ = ["BrowserClients", "ChromiumMissing", "chromium_path", "require_chromium"]

_STATE_JS = """() => ({received: window.bench.received, connection: window.bench.connection,
  malformed: window.bench.malformed, events: window.bench.events, records: window.bench.take()})"""


def chromium_cpu_s() -> float:
    """CPU seconds of this process's Chromium descendants (the browser's processes)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name().startswith("chrom"):
                total += cpu_seconds(child)
        except psutil.Error:
            continue  # a renderer that just exited
    return total


#: The longest a page may take to answer the harness.
EVALUATE_TIMEOUT_S = 20.0
#: Where the page host says the WebTransport server's current certificate hash.
CERTIFICATE_PATH = "/certificate-sha256"


class ChromiumMissing(RuntimeError):
    """No Chromium to run browser clients with."""


def chromium_path() -> str | None:
    """``$CHROMIUM``, else ``chromium`` (or ``chromium-browser``) on PATH."""
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return None
    return path


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        raise ChromiumMissing(
            "browser clients need Chromium: apt-get install chromium (Debian's package), "
            "or set CHROMIUM=/path/to/chromium"
        )
    return path


def page_config(job: ClientJob) -> PageConfig:
    """The page the transport's own server would serve: its effective settings and options."""
    transport = get(job.transport)
    options = msgspec.json.decode(job.options, type=type(transport.options))
    settings = transport.settings(job.settings)
    if isinstance(options, PollOptions | LongPollOptions):
        # The polling server's own: a long poll's page waits the held time, not wait_s.
        return polling_page_config(settings, options)
    return PageConfig.from_settings(job.transport, settings)


class _SharedBrowser:
    """One Chromium for every :class:`BrowserClients` alive at once (concurrent fault
    scenarios run a browser per transport; one process serves them, each in its own
    context), launched by the first and closed by the last."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
        self.playwright: Playwright | None = None
        self.browser: Browser | None = None

    async def acquire(self, executable: str) -> Browser:
        async with self.lock:
            if self.browser is None or not self.browser.is_connected():
                self.playwright = await async_playwright().start()
                self.browser = await self.playwright.chromium.launch(executable_path=executable)
            self.users += 1
            return self.browser

    async def release(self) -> None:
        async with self.lock:
            self.users -= 1
            if self.users > 0:
                return
            browser, playwright = self.browser, self.playwright
            self.browser = self.playwright = None
            if browser is not None:
                with contextlib.suppress(Exception):
                    await browser.close()
            if playwright is not None:
                await playwright.stop()


_SHARED = _SharedBrowser()


class BrowserClients:
    """The job's clients as pages of one headless Chromium."""

    def __init__(self, job: ClientJob, *, ready_timeout_s: float | None = None) -> None:
        if browser_family(job.transport) is None:
            raise HarnessError(f"the page has no client for {job.transport}")
        if any(g.role != "normal" for g in job.groups):
            raise HarnessError("browser clients read as fast as samples come (role normal)")
        self.job = job
        self.ready_timeout_s = job.connect_timeout_s if ready_timeout_s is None else ready_timeout_s
        self.ready: WorkerReady | None = None
        self.clock = ClockMap.now()
        #: How far the page's clock, mapped, fell outside the harness reads around it (ns).
        self.clock_check_ns: int | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._runner: web.AppRunner | None = None
        self._pages: list[Page] = []
        #: What each page recorded so far (``take()`` hands samples over once).
        self._taken: list[list[PageRecord]] = []
        self._result: WorkerResult | None = None
        self._window_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._window_start: int | None = None
        self._window_end: int | None = None
        self._probe: ServerProbe | None = None
        self._cpu_at = (0.0, 0.0, 0.0)  # start, window start, window end

    async def _certificate_sha256(self) -> str:
        """The job's WebTransport server's certificate hash, base64 (a verified handshake)."""
        job = self.job
        transport = get(job.transport)
        options = msgspec.json.decode(job.options, type=type(transport.options))
        settings = transport.settings(job.settings)
        hex_digest = await server_certificate_sha256(
            job.host, job.port, settings, options, settings.connect_timeout_s
        )
        return sha256_base64(hex_digest)

    async def _page_config(self) -> PageConfig:
        config = page_config(self.job)
        if browser_family(self.job.transport) != "webtransport":
            return config
        try:
            pinned: str | None = await self._certificate_sha256()
        except CertificateUnavailable:
            pinned = None  # the page asks the page host before its first attempt
        return dataclasses.replace(
            config, certificate_sha256=pinned, certificate_url=CERTIFICATE_PATH
        )

    async def start(self) -> None:
        executable = require_chromium()
        body = render_page(await self._page_config())

        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="text/html")

        async def certificate(request: web.Request) -> web.Response:
            try:
                pinned = await self._certificate_sha256()
            except CertificateUnavailable as exc:
                return web.Response(status=503, text=f"{exc}\n")
            return web.Response(text=pinned, headers={"Cache-Control": "no-store"})

        app = web.Application()
        app.router.add_get("/", serve)
        if browser_family(self.job.transport) == "webtransport":
            app.router.add_get(CERTIFICATE_PATH, certificate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host_port = int(self._runner.addresses[0][1])
        self._browser = await _SHARED.acquire(executable)
        context = self._context = await self._browser.new_context()
        job = self.job
        for group in job.groups:
            server = f"http://{group.host or job.host}:{group.port or job.port}"
            url = (
                f"http://127.0.0.1:{host_port}/?transport={job.transport}&server={server}&record=1"
            )
            for _ in range(group.count):
                page = await context.new_page()
                await page.goto(url)
                self._pages.append(page)
                self._taken.append([])
        self._cpu_at = (chromium_cpu_s(), 0.0, 0.0)
        if job.server_pid:
            self._probe = ServerProbe(job.server_pid, job.server_port, job.server_netns)

    async def _check_clock(self) -> None:
        """Read the first page's clock between two harness reads (the mapping's check)."""
        worst: int | None = None
        for _ in range(5):
            before = time.monotonic_ns()
            try:
                async with asyncio.timeout(EVALUATE_TIMEOUT_S):
                    browser_ms = float(
                        await self._pages[0].evaluate(
                            "() => performance.timeOrigin + performance.now()"
                        )
                    )
            except TimeoutError:
                raise HarnessError("the page did not tell its clock in time") from None
            after = time.monotonic_ns()
            off = bracket_error_ns(self.clock, before, browser_ms, after)
            worst = off if worst is None else min(worst, off)
        self.clock_check_ns = worst

    async def wait_ready(self) -> WorkerReady:
        """Every page connected once (or the connect timeout passed); the window starts."""
        if self.ready is None:
            deadline_ms = self.ready_timeout_s * 1000

            async def connected(page: Page) -> bool:
                try:
                    # Bounded here too: a starved browser may not honour its own timeout.
                    async with asyncio.timeout(self.ready_timeout_s + 5.0):
                        await page.wait_for_function(
                            "() => window.bench && window.bench.connection >= 1",
                            polling=100,
                            timeout=deadline_ms,
                        )
                except Exception:  # a page that never connected counts as not ready
                    return False
                return True

            ok = await asyncio.gather(*(connected(p) for p in self._pages))
            await self._check_clock()
            self.ready = WorkerReady(time.monotonic_ns(), sum(ok), len(self._pages))
            self._window_task = asyncio.create_task(self._window())
        return self.ready

    async def _window(self) -> None:
        job = self.job

        async def until(seconds: float | None) -> None:
            waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._stop.wait())}
            if seconds is not None:
                waits.add(asyncio.ensure_future(asyncio.sleep(seconds)))
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for f in pending:
                f.cancel()

        if job.warmup_s > 0:
            await until(job.warmup_s)
        if self._stop.is_set():
            return
        if self._probe is not None:
            self._probe.start = self._probe.snapshot()
        self._window_start = time.monotonic_ns()
        at_start = chromium_cpu_s()
        await until(job.duration_s)
        self._window_end = time.monotonic_ns()
        self._cpu_at = (self._cpu_at[0], at_start, chromium_cpu_s())
        if self._probe is not None:
            self._probe.end = self._probe.snapshot()

    async def result(self, timeout_s: float | None = None) -> WorkerResult:
        """Wait for the window to end (its duration, or :meth:`stop`) and read every page."""
        if self._result is None:
            await self.wait_ready()
            job = self.job
            budget = timeout_s
            if budget is None and job.duration_s is not None:
                budget = job.warmup_s + job.duration_s + 30.0
            assert self._window_task is not None
            try:
                async with asyncio.timeout(budget):
                    await self._window_task
            except TimeoutError:
                raise HarnessError(f"browser clients gave no result within {budget:g} s") from None
            self._result = await self._read()
        return self._result

    async def stop(self, timeout_s: float = 30.0) -> WorkerResult:
        """End the window now and return the result."""
        self._stop.set()
        return await self.result(timeout_s)

    async def _state(self, index: int) -> PageState:
        try:
            async with asyncio.timeout(EVALUATE_TIMEOUT_S):
                raw = await self._pages[index].evaluate(_STATE_JS)
        except TimeoutError:
            raise HarnessError(f"a page did not answer within {EVALUATE_TIMEOUT_S:g} s") from None
        state = msgspec.convert(raw, PageState, strict=False)
        self._taken[index].extend(state.records)
        return msgspec.structs.replace(state, records=self._taken[index])

    async def progress(self) -> list[Progress]:
        """Each page's position now (its events' times mapped onto the monotonic clock)."""
        out = []
        for index in range(len(self._pages)):
            state = await self._state(index)
            by_epoch: dict[str, int] = {}
            for record in state.records:
                by_epoch[record[0]] = by_epoch.get(record[0], 0) + 1
            drops = [e.t for e in state.events if e.kind == "disconnected"]
            last = self.clock.monotonic_ns(drops[-1]) if drops else None
            out.append(Progress(len(state.records), by_epoch, last))
        return out

    async def _read(self) -> WorkerResult:
        job = self.job
        assert self.ready is not None
        source = BernoulliSource(job.p, job.seed)
        latencies: list[int] = []
        clients = []
        for index in range(len(self._pages)):
            state = await self._state(index)
            clients.append(
                page_outcome(
                    index,
                    "normal",
                    state,
                    self.clock,
                    source,
                    (self._window_start, self._window_end),
                    keep_samples=job.keep_samples,
                    latencies=latencies if job.keep_latencies else None,
                )
            )
        transport = get(job.transport)
        return WorkerResult(
            transport=job.transport,
            clients_requested=len(self._pages),
            ready_ns=self.ready.at_ns,
            window=Window(self._window_start, self._window_end),
            cpu_window_s=self._cpu_at[2] - self._cpu_at[1] if self._window_end else 0.0,
            cpu_total_s=chromium_cpu_s() - self._cpu_at[0],
            server=self._probe.usage() if self._probe is not None else None,
            settings=transport.settings(job.settings),
            latency={"normal": encode_latencies(latencies)} if latencies else {},
            clients=clients,
        )

    async def close(self) -> None:
        if self._window_task is not None and not self._window_task.done():
            self._stop.set()
            self._window_task.cancel()
        for page in self._pages:
            with contextlib.suppress(Exception):  # the browser may be gone already
                await page.close()
        if self._context is not None:
            with contextlib.suppress(Exception):
                await self._context.close()
        if self._browser is not None:
            self._browser = None
            await _SHARED.release()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> BrowserClients:
        try:
            await self.start()
        except PlaywrightError as exc:  # the run goes on: this step gets an error record
            await self.close()
            raise HarnessError(f"Chromium: {exc.message}") from None
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
