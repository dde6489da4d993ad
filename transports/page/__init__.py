"""The live page every browser-capable server serves at ``GET /``.

One static file, ``index.html`` beside this module (package data: no CDN, no network fetch),
with plain JavaScript and SVG: the stream's state and position, samples per second, lost and
duplicated ids counted as :class:`model.ledger.DeliveryLedger` counts them, and the posterior
mean with its exact 95% band over time. Its clients are the browser's own: ``EventSource``
(native reconnect, ``Last-Event-ID``), ``WebSocket`` (the page reconnects with backoff, full
jitter and the resume token), ``fetch`` loops for polling and long polling, and
``WebTransport`` (HTTP/3: the page reads the session's unidirectional stream of NDJSON lines,
reconnects as its WebSocket does, and pins the server's certificate by its SHA-256, given as
:attr:`PageConfig.certificate_sha256`; no server of the suite serves the page over HTTP/3, so
a page host of the harness serves it, :mod:`experiments.worker.browser`).

A server serves :func:`render_page` with :data:`PAGE_HEADERS`; what it knows (its transport's
name, the settings it runs with) goes into the page as :class:`PageConfig`, and a URL's query
overrides it: ``/?transport=sse&server=http://127.0.0.1:8889`` reads the SSE server at that
origin whoever served the page (which needs that server's origin policy to allow the page:
:mod:`transports.origins`), ``/?transport=webtransport&server=https://127.0.0.1:8896&
certificate_sha256=H`` the WebTransport server whose certificate hashes to ``H`` (64 hex
digits, as ``serve webtransport`` prints it, or base64; the page
must be a secure context: ``http://127.0.0.1`` or ``localhost`` is one), and ``&record=1``
makes the page keep every sample for a harness.

For programs (tests, experiments) the page keeps its ledger on ``window.bench``: ``state``
(``connecting``, ``connected``, ``reconnecting``), ``epoch``, ``seq``, ``received``,
``delivered``, ``lost``, ``duplicated``, ``reordered``, ``connection`` (connections opened),
``events`` (``{kind, t, detail}``, ``t`` in ms since 1970 from the browser's clock; kinds
``connecting``, ``connected``, ``first-sample``, ``disconnected``, ``connect-failed``, and for
WebTransport ``certificate`` and ``certificate-failed``: a new hash fetched, or none) and
``take()``, which hands over the samples received since the last call when ``record=1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files

import msgspec

from transports.settings import Settings

__all__ = ["PAGE_HEADERS", "PAGE_PATH", "PageConfig", "render_page"]

#: Where every browser-capable server serves the page.
PAGE_PATH = "/"
#: Headers of the page's answer.
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_PLACEHOLDER = b"__BENCH_CONFIG__"


@dataclass(frozen=True, slots=True)
class PageConfig:
    """What the serving server tells its page: which transport, and the settings in force."""

    transport: str
    resume: bool = True
    #: The page's read deadline on samples (None: none).
    dead_after_s: float | None = 15.0
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    backoff_jitter: bool = True
    #: Polling: the pause between polls, and a long poll's wait.
    interval_s: float | None = None
    wait_s: float | None = None
    batch: int = 1000
    #: WebTransport: the SHA-256 (base64, or 64 hex digits) of the server's certificate,
    #: which the page pins (``serverCertificateHashes``: ECDSA, valid 14 days at most);
    #: None: the browser's own verification.
    certificate_sha256: str | None = None
    #: WebTransport: where (a URL, relative to the page) the page asks for the current hash,
    #: as text, before every attempt but the first; None: it keeps its own.
    certificate_url: str | None = None

    @classmethod
    def from_settings(
        cls,
        transport: str,
        settings: Settings,
        *,
        interval_s: float | None = None,
        wait_s: float | None = None,
    ) -> PageConfig:
        return cls(
            transport=transport,
            resume=settings.resume,
            dead_after_s=settings.dead_after_s,
            backoff_base_s=settings.backoff_base_s,
            backoff_cap_s=settings.backoff_cap_s,
            backoff_jitter=settings.backoff_jitter,
            interval_s=interval_s,
            wait_s=wait_s,
            batch=settings.batch,
        )


@cache
def _template() -> bytes:
    page = files(__name__).joinpath("index.html").read_bytes()
    if page.count(_PLACEHOLDER) != 1:
        raise RuntimeError("index.html must hold the configuration placeholder exactly once")
    return page


def render_page(config: PageConfig) -> bytes:
    """The page, with ``config`` as the JSON its script reads first."""
    document = msgspec.json.encode(asdict(config))
    # Inside <script>: no "</script>" may appear, so no "<" at all (JSON allows \\u003c).
    return _template().replace(_PLACEHOLDER, document.replace(b"<", b"\\u003c"))
