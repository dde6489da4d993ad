"""The poll and long-poll transports: pure answer selection and query parsing, then sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from model.errors import (
    BadResumeToken,
    ConnectionLost,
    MalformedSample,
    ProtocolError,
    ServerUnavailable,
)
from model.sample import Sample, decode_samples, encode_samples
from tests.support import EPOCH, serving
from tests.support import make_samples as _samples
from transports.contract import Connect
from transports.hub import Hub
from transports.options import Options
from transports.poll_query import (
    PollQuery,
    answer_range,
    format_poll_query,
    parse_poll_query,
    wanted_seq,
)
from transports.polling import (
    LongPollOptions,
    PollingServer,
    PollOptions,
    connect_long_poll,
    connect_poll,
)
from transports.resume import ResumeToken, start_seq
from transports.settings import Settings

QUICK = Settings(dead_after_s=2.0, connect_timeout_s=2.0)
POLL_OPTIONS = PollOptions(interval_s=0.01)
#: Also the server's: it holds a long poll up to 30 s.
LONG_OPTIONS = LongPollOptions(wait_s=30.0)


def _pairs(query: str) -> list[tuple[str, str]]:
    """Decode a query string the way a server does (blank values kept)."""
    return parse_qsl(query, keep_blank_values=True)


# -- which samples answer a poll (pure) -------------------------------------------------------


def test_no_token_answers_the_newest_sample_only() -> None:
    assert answer_range(None, EPOCH, oldest=0, next_seq=10, batch=1_000) == range(9, 10)
    assert answer_range(None, EPOCH, oldest=500, next_seq=600, batch=5) == range(599, 600)


def test_no_token_before_the_first_sample_answers_nothing() -> None:
    assert answer_range(None, EPOCH, oldest=0, next_seq=0, batch=1_000) == range(0, 0)


def test_same_epoch_continues_after_since() -> None:
    token = ResumeToken(EPOCH, 4)
    assert answer_range(token, EPOCH, oldest=0, next_seq=10, batch=1_000) == range(5, 10)


def test_same_epoch_caught_up_answers_nothing() -> None:
    token = ResumeToken(EPOCH, 9)
    assert answer_range(token, EPOCH, oldest=0, next_seq=10, batch=1_000) == range(10, 10)


def test_since_no_longer_held_continues_at_the_oldest_held() -> None:
    token = ResumeToken(EPOCH, 3)
    assert answer_range(token, EPOCH, oldest=50, next_seq=60, batch=1_000) == range(50, 60)


def test_other_epoch_starts_at_the_oldest_held() -> None:
    token = ResumeToken("fff", 70)
    assert answer_range(token, EPOCH, oldest=20, next_seq=30, batch=1_000) == range(20, 30)
    assert answer_range(token, EPOCH, oldest=0, next_seq=0, batch=1_000) == range(0, 0)


def test_answer_is_bounded_by_the_batch() -> None:
    token = ResumeToken(EPOCH, -1)
    assert answer_range(token, EPOCH, oldest=0, next_seq=5_000, batch=1_000) == range(0, 1_000)


@given(
    epoch=st.sampled_from([EPOCH, "fff"]),
    since=st.integers(-1, 3_000),
    oldest=st.integers(0, 2_000),
    held=st.integers(0, 1_000),
    batch=st.integers(1, 300),
    with_token=st.booleans(),
)
def test_answer_lies_within_the_held_samples_and_the_batch(
    epoch: str, since: int, oldest: int, held: int, batch: int, with_token: bool
) -> None:
    token = ResumeToken(epoch, since) if with_token else None
    next_seq = oldest + held
    answer = answer_range(token, EPOCH, oldest, next_seq, batch)
    assert len(answer) <= batch
    assert not answer or (oldest <= answer.start and answer.stop <= next_seq)
    if token is not None:
        assert answer.start == start_seq(token, EPOCH, oldest, next_seq)
    else:
        assert len(answer) == min(1, held)
    # A long poll waits exactly when the answer is empty for want of newer samples.
    assert bool(answer) == (next_seq > max(wanted_seq(token, EPOCH), answer.start))


def test_wanted_seq_is_the_first_sample_the_poller_lacks() -> None:
    assert wanted_seq(ResumeToken(EPOCH, 41), EPOCH) == 42
    assert wanted_seq(ResumeToken("fff", 41), EPOCH) == 0
    assert wanted_seq(None, EPOCH) == 0


# -- the query (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", PollQuery(None)),
        ("epoch=abc&since=7", PollQuery(ResumeToken("abc", 7))),
        ("since=-1&epoch=abc", PollQuery(ResumeToken("abc", -1))),
        ("wait=2.5", PollQuery(None, 2.5)),
        ("epoch=abc&since=0&wait=0", PollQuery(ResumeToken("abc", 0), 0.0)),
        ("epoch=abc&since=0&wait=9999", PollQuery(ResumeToken("abc", 0), 30.0)),
        # Unknown parameters are ignored (the rule of every HTTP transport): a browser's
        # cache buster, a misspelling (which then asks without a token).
        ("_=1700000000&epoch=abc&since=7", PollQuery(ResumeToken("abc", 7))),
        ("sinse=4", PollQuery(None)),
        ("x=1&x=2", PollQuery(None)),
    ],
)
def test_well_formed_queries(query: str, expected: PollQuery) -> None:
    assert parse_poll_query(_pairs(query), max_wait_s=30.0) == expected


MALFORMED = [
    ("epoch=XYZ&since=1", BadResumeToken, "epoch must be 1-64 lowercase hex"),
    ("epoch=&since=1", BadResumeToken, "epoch must be"),
    # A full match: re.match with "$" would take the epoch with its trailing newline.
    ("epoch=abc%0a&since=1", BadResumeToken, "epoch must be"),
    (f"epoch={'a' * 65}&since=1", BadResumeToken, "epoch must be"),
    ("epoch=abc", BadResumeToken, "give both epoch and since"),
    ("since=3", BadResumeToken, "give both epoch and since"),
    ("epoch=abc&since=1.5", BadResumeToken, "since must be an integer"),
    ("epoch=abc&since=%2B5", BadResumeToken, "since must be an integer"),
    ("epoch=abc&since=", BadResumeToken, "since must be an integer"),
    ("epoch=abc&since=-2", BadResumeToken, "since must be a seq >= -1"),
    ("epoch=abc&since=99999999999999999999999", BadResumeToken, "since must be"),
    ("wait=-1", ProtocolError, "wait must be a non-negative number"),
    ("wait=nan", ProtocolError, "wait must be a non-negative number"),
    ("wait=1e3", ProtocolError, "wait must be a non-negative number"),
    ("wait=", ProtocolError, "wait must be a non-negative number"),
    ("wait=%201", ProtocolError, "wait must be a non-negative number"),
    ("epoch=abc&epoch=abc&since=1", ProtocolError, "'epoch' given more than once"),
    ("wait=1&wait=2", ProtocolError, "'wait' given more than once"),
]


@pytest.mark.parametrize(("query", "error", "reason"), MALFORMED)
def test_malformed_queries_are_refused_with_a_reason(
    query: str, error: type[ProtocolError], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        parse_poll_query(_pairs(query), max_wait_s=30.0)


@given(
    token=st.none()
    | st.builds(
        ResumeToken, st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True), st.integers(-1, 2**63 - 1)
    ),
    wait=st.none() | st.integers(0, 100_000).map(lambda ms: ms / 1000),
)
def test_the_client_query_parses_back(token: ResumeToken | None, wait: float | None) -> None:
    query = format_poll_query(token, wait)
    assert query == "" or query.startswith("?")
    assert parse_poll_query(_pairs(query[1:]), max_wait_s=1e9) == PollQuery(token, wait or 0.0)


# -- the server on a real socket ----------------------------------------------------------------


@asynccontextmanager
async def _serving(
    settings: Settings = QUICK, hub: Hub | None = None, options: Options = LONG_OPTIONS
) -> AsyncIterator[tuple[Hub, PollingServer, str]]:
    async with serving(PollingServer, settings, options, hub=hub) as server:
        yield server.hub, server, f"http://127.0.0.1:{server.port}/samples"


async def _get(url: str, timeout: float = 10.0) -> tuple[int, str, bytes]:
    async with (
        asyncio.timeout(timeout),
        aiohttp.ClientSession() as session,
        session.get(url) as response,
    ):
        return response.status, response.content_type, await response.read()


@pytest.mark.parametrize(("query", "error", "reason"), MALFORMED)
async def test_bad_queries_get_400_with_the_reason(
    query: str, error: type[ProtocolError], reason: str
) -> None:
    async with _serving() as (_, _, url):
        status, content_type, body = await _get(f"{url}?{query}")
    assert (status, content_type) == (400, "text/plain")
    assert reason in body.decode()


@pytest.mark.parametrize("path", ["/index.html", "/samples/", "/samplesx", "/events"])
async def test_other_paths_get_404(path: str) -> None:
    async with _serving() as (_, server, _):
        status, _, _ = await _get(f"http://127.0.0.1:{server.port}{path}")
    assert status == 404


async def test_a_browser_cache_buster_is_ignored_and_a_bad_known_parameter_is_not() -> None:
    async with _serving() as (hub, _, url):
        hub.publish(_samples(0, 10))
        status, _, body = await _get(f"{url}?epoch={EPOCH}&since=4&_=1700000000123")
        assert status == 200 and decode_samples(body) == _samples(5, 10)
        status, _, body = await _get(f"{url}?_=1&epoch={EPOCH}&since=4x")
        assert status == 400 and b"since must be an integer" in body


@pytest.mark.parametrize(
    ("options", "transport", "knob"),
    # The page holds each long poll as the transport's own client does: the wait (30 s)
    # capped at the heartbeat (5 s by default), so its dead-peer deadline matches.
    [(POLL_OPTIONS, "poll", '"interval_s":0.01'), (LONG_OPTIONS, "long-poll", '"wait_s":5.0')],
)
async def test_the_live_page_polls_as_the_server_says(
    options: Options, transport: str, knob: str
) -> None:
    async with _serving(options=options) as (_, server, _):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                page = await response.text()
    assert f'"transport":"{transport}"' in page and knob in page
    assert "fetch(url" in page


async def test_origins_get_cors_answers_or_403() -> None:
    allowed = {"Origin": "http://127.0.0.1:5173"}
    refused = {"Origin": "https://evil.test"}
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x"}
    async with _serving() as (hub, _, url), aiohttp.ClientSession() as session:
        hub.publish(_samples(0, 3))
        async with session.get(url, headers=allowed) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
            assert response.headers["Vary"] == "Origin"
        async with session.get(url + "?since=1", headers=allowed) as response:
            assert response.status == 400  # an error a page can read too
            assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
        async with session.get(url, headers=refused) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
            assert (await response.text()).startswith("origin not allowed")
        async with session.options(url, headers={**allowed, **ask}) as response:
            assert response.status == 204
            assert "Last-Event-ID" in response.headers["Access-Control-Allow-Headers"]
        async with session.options(url, headers={**refused, **ask}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        async with session.get(url) as response:  # no Origin: not a browser, always served
            assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers
    configured = QUICK.with_changes(allow_origins=("https://evil.test",))
    async with _serving(configured) as (_, _, url), aiohttp.ClientSession() as session:
        async with session.get(url, headers=refused) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://evil.test"


async def test_fresh_poll_gets_nothing_then_the_newest_sample() -> None:
    async with _serving() as (hub, _, url):
        assert await _get(url) == (200, "application/json", b"[]")
        hub.publish(_samples(0, 5))
        status, content_type, body = await _get(url)
    assert (status, content_type) == (200, "application/json")
    assert decode_samples(body) == _samples(4, 5)


async def test_resume_answers_over_http() -> None:
    settings = QUICK.with_changes(history=100, batch=30)
    async with _serving(settings) as (hub, _, url):
        hub.publish(_samples(0, 250))
        same = decode_samples((await _get(f"{url}?epoch={EPOCH}&since=200"))[2])
        too_old = decode_samples((await _get(f"{url}?epoch={EPOCH}&since=5"))[2])
        other = decode_samples((await _get(f"{url}?epoch=fff&since=900"))[2])
    assert same == _samples(201, 231)
    assert too_old == other == _samples(150, 180)


async def test_long_poll_answers_as_soon_as_a_sample_is_published() -> None:
    async with _serving() as (hub, _, url):
        hub.publish(_samples(0, 3))
        request = asyncio.create_task(_get(f"{url}?epoch={EPOCH}&since=2&wait=30"))
        # The handler notes the poller's position right before it starts waiting.
        async with asyncio.timeout(5):
            while hub.lowest_reader() is None:
                await asyncio.sleep(0.005)
        assert not request.done()
        hub.publish(_samples(3, 4))
        async with asyncio.timeout(5):  # far below the 30 s wait: the sample ended it
            status, _, body = await request
    assert status == 200
    assert decode_samples(body) == _samples(3, 4)


async def test_long_poll_answers_empty_when_the_wait_ends() -> None:
    short = LongPollOptions(wait_s=0.2)
    async with _serving(options=short) as (hub, _, url):
        hub.publish(_samples(0, 3))
        # Asked for 1,000 s, capped at the server's 0.2 s: the 10 s timeout is never reached.
        assert await _get(f"{url}?epoch={EPOCH}&since=2&wait=1000") == (
            200,
            "application/json",
            b"[]",
        )
        # Without a token the long poll waits for the first sample of an empty hub too.
        empty = Hub(EPOCH, QUICK)
    async with _serving(QUICK, empty, short) as (_, _, url):
        assert (await _get(f"{url}?wait=5"))[2] == b"[]"


async def test_connection_limit_gets_503_and_the_others_go_on() -> None:
    async with _serving(QUICK.with_changes(max_connections=1)) as (hub, _, url):
        hub.publish(_samples(0, 1))
        async with aiohttp.ClientSession() as first, asyncio.timeout(10):
            async with first.get(url) as response:  # its keep-alive connection stays open
                assert response.status == 200
                await response.read()
            status, _, body = await _get(url)
            assert (status, body) == (503, b"server full: connection limit 1 reached\n")
            async with first.get(url) as response:
                assert response.status == 200


# -- a poller that stops costs the server nothing -----------------------------------------------


async def test_a_stopped_poller_leaves_nothing_behind() -> None:
    settings = QUICK.with_changes(history=100, batch=40)
    async with _serving(settings) as (hub, _, url):
        hub.publish(_samples(0, 10))
        first = decode_samples((await _get(f"{url}?epoch={EPOCH}&since=-1"))[2])
        # The poller stops while the stream runs on for ten times the history.
        for start in range(10, 1_010, 100):
            hub.publish(_samples(start, start + 100))
        assert hub.subscriber_count == 0
        back = decode_samples((await _get(f"{url}?epoch={EPOCH}&since={first[-1].seq}"))[2])
    assert back == _samples(910, 950)  # the oldest held: the gap is real loss


async def test_a_peer_that_stops_reading_is_not_answered_ahead(
    small_receive_buffer_socket: socket.socket,
) -> None:
    settings = QUICK.with_changes(batch=1_000)
    hub = Hub(EPOCH, settings)
    hub.publish(_samples(0, 1_000))
    answer_bytes = len(encode_samples(_samples(0, 1_000)))
    pipelined = 300
    async with _serving(settings, hub) as (_, server, url):
        sock = small_receive_buffer_socket
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        request = f"GET /samples?epoch={EPOCH}&since=-1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        await asyncio.get_running_loop().sock_sendall(sock, request * pipelined)
        # Another poller is served meanwhile, many times over.
        for _ in range(30):
            assert len(decode_samples((await _get(f"{url}?epoch={EPOCH}&since=-1"))[2])) == 1_000
        stopped_peer_answers = server.polls_answered - 30
    # Answers wait for the peer to read: at most what socket buffers hold (the server's send
    # buffer grows to tcp_wmem's maximum) plus aiohttp's 64 KiB, never all 300 (16 MB).
    assert 1 <= stopped_peer_answers <= _largest_send_buffer() // answer_bytes + 3


def _largest_send_buffer() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as limits:
            return int(limits.read().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20  # Linux's default maximum


# -- the clients ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connect", "options"),
    [(connect_poll, POLL_OPTIONS), (connect_long_poll, LONG_OPTIONS)],
    ids=["poll", "long-poll"],
)
async def test_client_follows_the_stream_from_its_token(connect: Connect, options: Options) -> None:
    async with _serving() as (hub, server, _):
        hub.publish(_samples(0, 10))
        received: list[Sample] = []
        token = ResumeToken(EPOCH, 4)
        async with (
            asyncio.timeout(10),
            connect("127.0.0.1", server.port, token, QUICK, options) as stream,
        ):
            async for sample in stream:
                received.append(sample)
                if sample.seq == 9:  # caught up: the next poll finds nothing until this
                    hub.publish(_samples(10, 12))
                if sample.seq == 11:
                    break
    assert received == _samples(5, 12)


async def test_poll_asks_again_at_once_after_a_full_batch() -> None:
    # A minute between polls: only the full-batch rule can bring 35 samples within the timeout.
    settings = QUICK.with_changes(batch=10)
    slow = PollOptions(interval_s=60.0)
    async with _serving(settings) as (hub, server, _):
        hub.publish(_samples(0, 35))
        received: list[Sample] = []
        token = ResumeToken(EPOCH, -1)
        async with (
            asyncio.timeout(10),
            connect_poll("127.0.0.1", server.port, token, settings, slow) as stream,
        ):
            async for sample in stream:
                received.append(sample)
                if sample.seq == 34:
                    break
    assert received == _samples(0, 35)


async def test_fresh_client_starts_at_the_newest_sample() -> None:
    async with _serving() as (hub, server, _):
        hub.publish(_samples(0, 50))
        async with (
            asyncio.timeout(10),
            connect_long_poll("127.0.0.1", server.port, None, QUICK, LONG_OPTIONS) as stream,
        ):
            iterator = aiter(stream)
            assert await anext(iterator) == _samples(49, 50)[0]
            hub.publish(_samples(50, 51))
            assert await anext(iterator) == _samples(50, 51)[0]


async def test_nobody_listening_is_server_unavailable(unused_port: int) -> None:
    with pytest.raises(ServerUnavailable, match="no polling server"):
        async with (
            asyncio.timeout(10),
            connect_poll("127.0.0.1", unused_port, None, QUICK, POLL_OPTIONS),
        ):
            pass


async def test_server_gone_after_the_handshake_is_connection_lost() -> None:
    async with _serving() as (hub, server, _):
        hub.publish(_samples(0, 1))
        async with (
            asyncio.timeout(10),
            connect_poll("127.0.0.1", server.port, None, QUICK, POLL_OPTIONS) as stream,
        ):
            iterator = aiter(stream)
            assert (await anext(iterator)).seq == 0
            await server.stop()
            # aiohttp would quietly open a new TCP connection; the session refuses to.
            with pytest.raises(ConnectionLost, match="closed or reset between polls"):
                await anext(iterator)


@asynccontextmanager
async def _fake_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[int]:
    """A bare aiohttp server answering /samples with ``handler``."""
    app = web.Application()
    app.router.add_get("/samples", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()


async def _server_error(request: web.Request) -> web.Response:
    return web.Response(status=500, text="database on fire")


async def _not_samples(request: web.Request) -> web.Response:
    return web.Response(body=b'[{"epoch":"abc","seq":-1}]', content_type="application/json")


async def test_http_error_status_is_a_protocol_error_with_status_and_reason() -> None:
    async with _fake_server(_server_error) as port:
        with pytest.raises(ProtocolError, match="HTTP 500 Internal Server Error: database on fire"):
            async with (
                asyncio.timeout(10),
                connect_poll("127.0.0.1", port, None, QUICK, POLL_OPTIONS),
            ):
                pass


async def test_malformed_body_is_malformed_sample() -> None:
    async with _fake_server(_not_samples) as port:
        with pytest.raises(MalformedSample):
            async with (
                asyncio.timeout(10),
                connect_long_poll("127.0.0.1", port, None, QUICK, LONG_OPTIONS),
            ):
                pass
