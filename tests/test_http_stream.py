"""The http-stream transport: its query token, what its server answers on the wire, and how its
client sorts what a server (or something else) answers.

What every transport does (resume, faults, limits) is the contract suite's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip

import pytest

from experiments.faults.hostile import Target, answer, non_readers, request_head, target_of
from model.errors import (
    BadResumeToken,
    FrameTooLarge,
    NotThisProtocol,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
)
from model.sample import decode_sample
from tests.conftest import FakeServer
from tests.support import FAST, Receiver, running_server, serving, wait_until
from tests.test_hardening_client import answering, http, tcp_error_line
from transports.http_stream import HTTP_STREAM, NDJSON, HttpStreamServer, token_of_query
from transports.resume import ResumeToken

# -- the token, pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "token"),
    [
        ("", None),
        ("epoch=ab12&since=7", ResumeToken("ab12", 7)),
        ("_=1700000000&since=-1&epoch=ab12", ResumeToken("ab12", -1)),  # others ignored
    ],
)
def test_the_token_is_read_from_the_query(query: str, token: ResumeToken | None) -> None:
    assert token_of_query(query) == token


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("epoch=ab12", BadResumeToken),
        ("epoch=zz&since=1", BadResumeToken),
        ("epoch=ab12&since=%207", BadResumeToken),  # " 7" is no seq
        ("epoch=ab12&since=1&since=2", ProtocolError),
    ],
)
def test_a_bad_token_is_refused(query: str, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        token_of_query(query)


# -- the server on the wire ---------------------------------------------------------------------


def _get(t: Target, path_and_query: str, method: str = "GET", *extra: str) -> bytes:
    lines = [f"{method} {path_and_query} HTTP/1.1", f"Host: {t.host}:{t.port}", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def _head_and_body(t: Target, request: bytes, until: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``request`` and read until ``until`` has arrived (or the connection ends)."""
    reader, writer = await asyncio.open_connection(t.host, t.port)
    data = b""
    try:
        writer.write(request)
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(timeout_s):
                while until not in data and (chunk := await reader.read(1 << 16)):
                    data += chunk
    finally:
        writer.close()
    return data


async def test_the_stream_is_chunked_ndjson_unbuffered_with_heartbeat_lines_when_idle() -> None:
    settings = FAST.with_changes(heartbeat_s=0.2)
    async with serving(HttpStreamServer, settings, HTTP_STREAM.options, held=5) as server:
        t = target_of(HTTP_STREAM, "127.0.0.1", server.port)
        data = await _head_and_body(t, _get(t, "/stream?epoch=c0ffee&since=1"), b"heartbeat")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 200 ok"
    assert f"content-type: {NDJSON}" in lines
    assert "x-accel-buffering: no" in lines and "transfer-encoding: chunked" in lines
    samples = [decode_sample(line) for line in body.split(b"\n") if b'"seq"' in line]
    assert [s.seq for s in samples] == [2, 3, 4]  # resumed after since=1, nothing more yet
    assert b'{"heartbeat":' in body


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        pytest.param(("GET", "/stream?epoch=zz&since=1"), "400", id="bad-token"),
        pytest.param(("GET", "/stream?since=1&since=2"), "400", id="repeated-parameter"),
        pytest.param(("GET", "/nowhere"), "404", id="elsewhere"),
        pytest.param(("POST", "/stream"), "405", id="another-method"),
        pytest.param(("HEAD", "/stream"), "200", id="head"),
    ],
)
async def test_the_server_answers_each_request_as_http_says(
    request_line: tuple[str, str], status: str
) -> None:
    method, path = request_line
    async with running_server(HTTP_STREAM, rate_hz=100) as server:
        t = target_of(HTTP_STREAM, "127.0.0.1", server.port)
        got = await answer(t, _get(t, path, method), timeout_s=1.0)
        assert server.hub.subscriber_count == 0  # none of these subscribed
    assert got.startswith(f"HTTP/1.1 {status} "), got


async def test_a_request_body_and_a_full_server_are_refused() -> None:
    settings = FAST.with_changes(max_connections=1)
    async with running_server(HTTP_STREAM, settings, rate_hz=100) as server:
        t = target_of(HTTP_STREAM, "127.0.0.1", server.port)
        body = await _head_and_body(
            t, _get(t, "/stream", "GET", "Content-Length: 2") + b"{}", b"\n\n"
        )
        async with Receiver(HTTP_STREAM, server.port, server.source, settings) as rx:
            await rx.receive(5)
            full = await _head_and_body(t, _get(t, "/stream"), b"reached")
    assert body.startswith(b"HTTP/1.1 400 ") and b"takes no request body" in body
    assert full.startswith(b"HTTP/1.1 503 ") and b"server full" in full


async def test_a_reader_that_stops_is_cut_and_dropped_alone() -> None:
    settings = FAST.with_changes(heartbeat_s=1.0, dead_after_s=3.0, queue_size=2_000)
    async with running_server(HTTP_STREAM, settings, rate_hz=4_000) as server:
        async with Receiver(HTTP_STREAM, server.port, server.source, settings) as normal:
            await normal.receive(100)
            t = target_of(HTTP_STREAM, "127.0.0.1", server.port)
            stuck = await non_readers(t, request_head("http-stream", t), 3)
            try:
                await wait_until(lambda: server.hub.cut_count >= 3, 15, "three cuts")
                # Aborted, not left holding its socket: only the normal stream stays.
                stream_server = server.server
                assert isinstance(stream_server, HttpStreamServer)
                await wait_until(lambda: stream_server.open_connections == 1, 5, "the drops")
                await normal.receive(2_000)
            finally:
                for sock in stuck:
                    sock.close()
    counts = normal.ledger.counts()
    assert (counts.lost, counts.duplicated) == (0, 0)
    assert normal.client.connection == 1


async def test_pages_are_judged_by_the_shared_origin_policy() -> None:
    settings = FAST.with_changes(allow_origins=("https://app.example",))
    async with running_server(HTTP_STREAM, settings, rate_hz=10) as server:
        t = target_of(HTTP_STREAM, "127.0.0.1", server.port)
        foreign = await _head_and_body(
            t, _get(t, "/stream", "GET", "Origin: https://x.example"), b"\n\n"
        )
        listed = await _head_and_body(
            t, _get(t, "/stream", "GET", "Origin: https://app.example"), b"\r\n\r\n"
        )
        preflight = await _head_and_body(
            t,
            _get(
                t,
                "/stream",
                "OPTIONS",
                "Origin: https://app.example",
                "Access-Control-Request-Method: GET",
            ),
            b"\r\n\r\n",
        )
    assert foreign.startswith(b"HTTP/1.1 403 ") and b"origin not allowed" in foreign
    assert listed.startswith(b"HTTP/1.1 200 ")
    assert b"access-control-allow-origin: https://app.example" in listed.lower()
    assert preflight.startswith(b"HTTP/1.1 204 ")
    assert b"access-control-allow-methods" in preflight.lower()


# -- the client ---------------------------------------------------------------------------------


def _streaming(body: bytes, content_type: str = NDJSON, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{extra}"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n" % (len(body), body)


@pytest.mark.parametrize(
    ("response", "expected", "said"),
    [
        pytest.param(
            http("503 Service Unavailable", "text/plain", b"server full: limit"),
            ServerRefused,
            "HTTP 503 Service Unavailable: server full",
            id="503",
        ),
        pytest.param(
            http("200 OK", "text/html", b"<html>hi</html>"),
            NotThisProtocol,
            "text/html",
            id="another-type",
        ),
        pytest.param(
            _streaming(gzip.compress(b"{}\n"), extra="Content-Encoding: gzip\r\n"),
            NotThisProtocol,
            "gzip",
            id="compressed",
        ),
        pytest.param(None, NotThisProtocol, "not an HTTP answer", id="an-error-line"),
        pytest.param(b"", ServerUnavailable, "without an answer", id="closed"),
    ],
)
async def test_the_client_sorts_what_answers(
    response: bytes | None, expected: type[StreamError], said: str, fake_server: FakeServer
) -> None:
    handler = tcp_error_line("not http") if response is None else answering(response)
    port = await fake_server(handler)
    with pytest.raises(StreamError) as raised:
        async with HTTP_STREAM.connect("127.0.0.1", port, None, FAST, HTTP_STREAM.options):
            pass
    assert type(raised.value) is expected and said in str(raised.value), raised.value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"x" * (2 << 20) + b"\n", FrameTooLarge, id="a-line-over-the-limit"),
        pytest.param(b'{"error":"slow consumer: cut"}\n', ServerRefused, id="an-error-line"),
        pytest.param(b"<html>\n", ProtocolError, id="not-a-sample"),
    ],
)
async def test_the_client_ends_a_stream_that_breaks_the_rules(
    body: bytes, expected: type[StreamError], fake_server: FakeServer
) -> None:
    port = await fake_server(answering(_streaming(body)))
    settings = FAST.with_changes(dead_after_s=5.0)
    async with HTTP_STREAM.connect("127.0.0.1", port, None, settings, HTTP_STREAM.options) as s:
        with pytest.raises(expected):
            await anext(aiter(s))
