"""sse specifics: the event format, Last-Event-ID, HTTP answers, pings, slow and silent peers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from model.errors import (
    BadResumeToken,
    FrameTooLarge,
    MalformedSample,
    PeerSilent,
    ProtocolError,
    ServerUnavailable,
)
from model.sample import Sample
from tests.conftest import FakeServer
from tests.support import EPOCH, FAST, serving, wait_until
from tests.support import make_samples as _make_samples
from transports.hub import Hub
from transports.options import NoOptions
from transports.resume import ResumeToken, parse_event_id
from transports.settings import Settings, SettingsError
from transports.sse import SSE, SampleEvents, SSEOptions, SSEServer, retry_hint_s
from transports.sse import connect as _connect
from transports.sse_wire import (
    format_events,
    format_retry,
    retry_ms,
    sample_of,
    token_from_header,
)


def _samples(first: int, count: int, epoch: str = EPOCH) -> list[Sample]:
    return _make_samples(first, first + count, epoch)


def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings
) -> contextlib.AbstractAsyncContextManager[SampleEvents]:
    return _connect(host, port, token, settings, NoOptions())


# -- no sockets: format, and read back through httpx-sse's public EventSource -----------------


def _response(pieces: list[bytes]) -> httpx.Response:
    """An event-stream response whose body arrives in ``pieces``, as from the network."""

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


async def _decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    return [event async for event in EventSource(_response(pieces)).aiter_sse()]


STREAM_SAMPLES = _samples(7, 3)
STREAM = (
    format_retry(0.25)
    + format_events(STREAM_SAMPLES[:2])
    + b": ping\n\n"
    + format_events(STREAM_SAMPLES[2:])
)


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
async def test_stream_reads_back_split_at_every_offset(cut: int) -> None:
    events = await _decode([STREAM[:cut], STREAM[cut:]])
    assert [sample_of(e) for e in events if sample_of(e) is not None] == STREAM_SAMPLES
    assert [e.retry for e in events if e.retry is not None] == [250]
    # The ping comes out as a data-less event carrying the last id: skipped, not a sample.
    assert sum(sample_of(e) is None for e in events) == 2  # the retry event and the ping


async def test_stream_reads_back_one_byte_at_a_time() -> None:
    events = await _decode([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert [s for e in events if (s := sample_of(e)) is not None] == STREAM_SAMPLES


async def test_the_client_yields_only_the_samples_of_a_stream() -> None:
    """Our reader (deadline, line limit, sample decoding) over a byte-by-byte body."""
    source = EventSource(_response([STREAM[i : i + 1] for i in range(len(STREAM))]))
    events = SampleEvents(source, FAST)
    assert [sample async for sample in events] == STREAM_SAMPLES
    assert events.retry_ms == 250


async def test_event_id_is_the_resume_token_of_its_sample() -> None:
    sample = _samples(41, 1)[0]
    (event,) = await _decode([format_events([sample])])
    assert parse_event_id(event.id) == ResumeToken(EPOCH, 41)
    assert event.event == "message"
    assert format_events([]) == b""


def test_retry_field_is_whole_milliseconds() -> None:
    assert format_retry(0.1) == b"retry: 100\n\n"
    assert retry_ms(3.0) == 3000
    assert retry_ms(0) == 0
    with pytest.raises(ValueError):
        retry_ms(-1)


def test_last_event_id_header_parses_or_is_refused() -> None:
    assert token_from_header(None) is None
    assert token_from_header("") is None
    assert token_from_header("ab12:5") == ResumeToken("ab12", 5)
    for bad in ("E:5", "ab12", "ab12:", "ab12:five", "ab12: 5", "ab12:+5", "ab12:" + "9" * 200):
        with pytest.raises(BadResumeToken):
            token_from_header(bad)


def test_malformed_data_is_refused() -> None:
    with pytest.raises(MalformedSample):
        sample_of(ServerSentEvent(data='{"epoch":"ab","seq":-1,"value":1,"sent_ns":0}'))
    assert sample_of(ServerSentEvent(data="", id="ab:1")) is None


# -- on sockets -----------------------------------------------------------------------------


def _server(settings: Settings = FAST) -> contextlib.AbstractAsyncContextManager[SSEServer]:
    """An SSE server on port 0 whose hub the test publishes into by hand."""
    return serving(SSEServer, settings, NoOptions())


def _publish(hub: Hub, count: int) -> None:
    hub.publish(_samples(hub.next_seq, count))


def _url(server: SSEServer, path: str = "/events") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def _read_raw(url: str, until: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The body received until ``until`` occurs in it."""
    body = b""
    async with asyncio.timeout(10), httpx.AsyncClient() as client:
        async with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for chunk in response.aiter_raw():
                body += chunk
                if until in body:
                    return body
    raise AssertionError(f"stream ended before {until!r}")


async def test_last_event_id_places_the_stream() -> None:
    async with _server() as server:
        _publish(server.hub, 50)
        same_epoch = await _read_raw(
            _url(server), b"id: c0ffee:12\n", {"Last-Event-ID": "c0ffee:9"}
        )
        assert same_epoch.startswith(b"retry: 100\n\nid: c0ffee:10\ndata: {")
        other_epoch = await _read_raw(_url(server), b"id: c0ffee:0\n", {"Last-Event-ID": "beef:99"})
        assert other_epoch.startswith(b"retry: 100\n\nid: c0ffee:0\n")
        # Through the client: it sends the header itself.
        async with connect("127.0.0.1", server.port, ResumeToken(EPOCH, 44), FAST) as stream:
            got = [await anext(stream) for _ in range(5)]
        assert got == _samples(45, 5)


async def test_a_last_event_id_query_resumes_where_no_header_can() -> None:
    # A new EventSource cannot set headers: the live page sends its position in the query.
    async with _server() as server:
        _publish(server.hub, 50)
        body = await _read_raw(_url(server, "/events?lastEventId=c0ffee:30"), b"id: c0ffee:32\n")
        assert body.startswith(b"retry: 100\n\nid: c0ffee:31\n")
        # The browser's own reconnect sends the header, newer than the query: it wins.
        newer = await _read_raw(
            _url(server, "/events?lastEventId=c0ffee:30"),
            b"id: c0ffee:42\n",
            {"Last-Event-ID": "c0ffee:40"},
        )
        assert newer.startswith(b"retry: 100\n\nid: c0ffee:41\n")
        async with httpx.AsyncClient() as client:
            bad = await client.get(_url(server, "/events?lastEventId=nope"))
        assert bad.status_code == 400
        assert bad.text.startswith("bad resume token: lastEventId: event id must be EPOCH:SEQ")


@pytest.mark.parametrize(
    ("settings", "options", "retry"),
    [
        # By default the backoff cap: a crowd of browsers retries at a pace a server survives.
        (Settings(), SSEOptions(), b"retry: 5000\n\n"),
        (Settings(backoff_cap_s=30.0), SSEOptions(), b"retry: 30000\n\n"),
        (Settings(), SSEOptions(retry_s=2.5), b"retry: 2500\n\n"),
    ],
)
async def test_the_retry_hint_comes_from_the_settings(
    settings: Settings, options: SSEOptions, retry: bytes
) -> None:
    assert retry_hint_s(settings, options) * 1000 == int(retry[7:-2])
    assert SSE.keepalive_in_force(settings, options)["browser_retry_s"] == int(retry[7:-2]) / 1000
    async with serving(SSEServer, settings, options) as server:
        assert (await _read_raw(_url(server), b"\n\n")).startswith(retry)


async def test_the_retry_option_is_checked() -> None:
    with pytest.raises(SettingsError, match="retry_s"):
        SSE.with_options({"retry_s": 0})


async def test_origins_get_cors_answers_or_403() -> None:
    allowed = {"Origin": "http://localhost:5173"}
    refused = {"Origin": "http://evil.test"}
    async with _server(FAST.with_changes(heartbeat_s=0.05)) as server:
        # An allowed page: its origin echoed, on the stream and on an error answer alike.
        body = await _read_raw(_url(server), b": ping\n\n", allowed)
        assert body.startswith(b"retry: ")
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", _url(server), headers=allowed) as response:
                assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
                assert response.headers["vary"] == "Origin"
            bad = await client.get(_url(server), headers={**allowed, "Last-Event-ID": "x"})
            assert bad.status_code == 400
            assert bad.headers["access-control-allow-origin"] == "http://localhost:5173"
            # A refused page: 403, never an Access-Control-Allow-Origin, nothing subscribed.
            no = await client.get(_url(server), headers=refused)
            assert no.status_code == 403
            assert "access-control-allow-origin" not in no.headers
            assert no.text.startswith("origin not allowed: 'http://evil.test'")
            assert server.hub.subscriber_count == 0
            # Preflights: 204 with what a page may send (Last-Event-ID among it), or 403.
            ask = {"Access-Control-Request-Method": "GET"}
            yes = await client.options(_url(server), headers={**allowed, **ask})
            assert yes.status_code == 204
            assert "Last-Event-ID" in yes.headers["access-control-allow-headers"]
            assert yes.headers["access-control-allow-origin"] == "http://localhost:5173"
            nope = await client.options(_url(server), headers={**refused, **ask})
            assert nope.status_code == 403
            assert "access-control-allow-origin" not in nope.headers
    configured = FAST.with_changes(allow_origins=("http://evil.test",))
    async with _server(configured) as server, httpx.AsyncClient() as client:
        async with client.stream("GET", _url(server), headers=refused) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "http://evil.test"


async def test_the_live_page_is_served_at_the_root() -> None:
    async with _server() as server, httpx.AsyncClient() as client:
        page = await client.get(_url(server, "/"))
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "new EventSource(" in page.text
    assert '"transport":"sse"' in page.text and '"backoff_cap_s":0.1' in page.text


async def test_bad_last_event_id_gets_400_with_the_reason() -> None:
    async with _server() as server, httpx.AsyncClient() as client:
        response = await client.get(_url(server), headers={"Last-Event-ID": "not-a-token"})
        assert response.status_code == 400
        assert response.text.startswith("bad resume token: Last-Event-ID")
        assert "EPOCH:SEQ" in response.text
        with_body = await client.post(_url(server), content=b"x")  # not GET at all
        assert with_body.status_code == 405
        response = await client.request("GET", _url(server), content=b"hello")
        assert response.status_code == 400
        assert "no request body" in response.text


async def test_other_paths_get_404_and_full_server_503() -> None:
    settings = FAST.with_changes(max_connections=1)
    async with _server(settings) as server:
        async with httpx.AsyncClient() as client:
            assert (await client.get(_url(server, "/nothing"))).status_code == 404
            assert (await client.get(_url(server, "/events/x"))).status_code == 404
        # uvicorn counts every open connection, an idle keep-alive one too: that one is closed.
        async with connect("127.0.0.1", server.port, None, settings) as stream:
            _publish(server.hub, 1)
            await anext(stream)
            async with httpx.AsyncClient() as client:
                assert (await client.get(_url(server))).status_code == 503
            with pytest.raises(ProtocolError, match="HTTP 503"):
                async with connect("127.0.0.1", server.port, None, settings):
                    pass


async def test_comment_pings_arrive_and_the_client_skips_them() -> None:
    settings = FAST.with_changes(heartbeat_s=0.05)
    async with _server(settings) as server:
        body = await _read_raw(_url(server), b": ping\n\n: ping\n\n")
        assert body.startswith(b"retry: 100\n\n")
        async with connect("127.0.0.1", server.port, None, settings) as stream:
            _publish(server.hub, 1)
            first = await anext(stream)
            # A later connection saw a ping, so this one (whose timer started first) did too.
            await _read_raw(_url(server), b": ping\n\n")
            _publish(server.hub, 1)
            second = await anext(stream)
        assert [first.seq, second.seq] == [0, 1]
        assert stream.retry_ms == 100


async def test_silent_server_raises_peer_silent() -> None:
    quiet = FAST.with_changes(heartbeat_s=0.0)  # no pings, no samples: nothing ever arrives
    async with _server(quiet) as server:
        async with connect(
            "127.0.0.1", server.port, None, FAST.with_changes(dead_after_s=0.2)
        ) as s:
            with pytest.raises(PeerSilent):
                await anext(s)  # the retry event arrives, then silence


async def test_stopping_server_ends_the_stream_cleanly() -> None:
    async with _server() as server:
        async with connect("127.0.0.1", server.port, None, FAST) as stream:
            _publish(server.hub, 3)
            assert (await anext(stream)).seq == 0
            await server.stop()
            rest = [sample async for sample in stream]
        assert [s.seq for s in rest] == [1, 2]


async def test_connect_errors_are_converted(unused_port: int, fake_server: FakeServer) -> None:
    with pytest.raises(ServerUnavailable):
        async with connect("127.0.0.1", unused_port, None, FAST):
            pass

    async def not_sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        )
        await writer.drain()
        writer.close()

    port = await fake_server(not_sse)
    with pytest.raises(ProtocolError, match=r"text/plain.*hello"):
        async with connect("127.0.0.1", port, None, FAST):
            pass


async def _stalled_peer(
    server: SSEServer, stalled: socket.socket
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A peer that asks for the stream and then reads nothing (until the test reads)."""
    await asyncio.get_running_loop().sock_connect(stalled, ("127.0.0.1", server.port))
    stalled.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    subscribers = server.hub.subscriber_count + 1
    await wait_until(lambda: server.hub.subscriber_count == subscribers, 5, "the subscriber")
    return await asyncio.open_connection(sock=stalled)


async def _rest_of(reader: asyncio.StreamReader) -> bytes:
    """What is left to read until the server's end; a reset (an aborted connection, which is
    how a dropped peer may end) ends it as well: it is never a clean chunked end."""
    received = b""
    async with asyncio.timeout(10):
        try:
            while chunk := await reader.read(1 << 20):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def test_client_that_stops_reading_is_cut_and_others_keep_receiving(
    small_receive_buffer_socket: socket.socket,
) -> None:
    settings = FAST.with_changes(queue_size=300, history=100_000)
    async with _server(settings) as server:
        reader, writer = await _stalled_peer(server, small_receive_buffer_socket)

        got: list[Sample] = []
        async with connect("127.0.0.1", server.port, None, settings) as stream:

            async def collect() -> None:
                async for sample in stream:
                    got.append(sample)

            collector = asyncio.create_task(collect())
            await wait_until(lambda: server.hub.subscriber_count == 2, 5, "the reading client")
            try:
                # Publish in steps the reader takes in full, until the stalled one is cut.
                async with asyncio.timeout(15):
                    while server.hub.cut_count == 0:
                        _publish(server.hub, 200)
                        await wait_until(lambda: len(got) == server.hub.next_seq, 5, "a step")
                # Its connection is dropped, not left to a graceful close it would never read.
                await wait_until(lambda: server.open_connections == 1, 5, "the connection freed")
                received = await _rest_of(reader)
                assert received.startswith(b"HTTP/1.1 200 OK")
                assert not received.endswith(b"0\r\n\r\n")  # no end of the chunked body
                _publish(server.hub, 200)
                await wait_until(lambda: len(got) == server.hub.next_seq, 5, "samples after")
            finally:
                collector.cancel()
                await asyncio.wait({collector}, timeout=5)
                writer.close()
        assert server.hub.cut_count == 1
        assert [s.seq for s in got] == list(range(server.hub.next_seq))


async def test_send_stalled_past_the_dead_peer_timeout_drops_the_peer(
    small_receive_buffer_socket: socket.socket,
) -> None:
    # A queue too long to cut it: sse-starlette's send timeout is what notices this peer.
    settings = FAST.with_changes(queue_size=1_000_000, history=200_000, dead_after_s=0.3)
    async with _server(settings) as server:
        reader, writer = await _stalled_peer(server, small_receive_buffer_socket)
        try:
            for _ in range(100):  # ~10 MB: more than the socket buffers between us hold
                _publish(server.hub, 1_000)
                await asyncio.sleep(0)  # let the server write
            await wait_until(lambda: server.open_connections == 0, 5, "the connection dropped")
            assert not (await _rest_of(reader)).endswith(b"0\r\n\r\n")
        finally:
            writer.close()
        assert (server.hub.cut_count, server.hub.subscriber_count) == (0, 0)


async def test_endless_line_from_a_server_is_refused(fake_server: FakeServer) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 5\n\n")
        writer.write(b"data: " + b"x" * 5_000)  # never ends the line
        await writer.drain()
        await reader.read()  # hold the connection until the client leaves

    port = await fake_server(endless)
    settings = FAST.with_changes(max_message_bytes=1_024)
    async with connect("127.0.0.1", port, None, settings) as stream:
        with pytest.raises(FrameTooLarge, match="1024 bytes"):
            await anext(stream)
