"""tcp specifics on real loopback sockets: hello, error lines, limits, heartbeats, slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from model.errors import (
    ConnectionLost,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
)
from model.sample import Sample, encode_sample
from tests.conftest import FakeServer
from tests.support import EPOCH, serving, wait_until
from tests.support import make_samples as _samples
from transports.ndjson import (
    Heartbeat,
    ServerError,
    ServerLine,
    decode_server_line,
    encode_heartbeat,
    encode_hello,
)
from transports.resume import ResumeToken
from transports.sample_stream import BatchedSampleStream
from transports.settings import Settings
from transports.tcp import TcpOptions, TcpServer
from transports.tcp import connect as _connect

#: No heartbeats unless a test asks: a test's lines are then exactly what it published.
QUIET = Settings(heartbeat_s=0, dead_after_s=2.0, connect_timeout_s=2.0)
OPTIONS = TcpOptions(hello_timeout_s=2.0)


def connect(
    host: str, port: int, token: ResumeToken | None, settings: Settings
) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Sample]]:
    return _connect(host, port, token, settings, OPTIONS)


def _server(
    settings: Settings = QUIET, hello_timeout_s: float = 2.0, held: int = 0
) -> contextlib.AbstractAsyncContextManager[TcpServer]:
    options = TcpOptions(hello_timeout_s=hello_timeout_s)
    return serving(TcpServer, settings, options, held=held)


async def _raw_exchange(port: int, payload: bytes) -> tuple[list[ServerLine], bytes]:
    """Send ``payload`` on a plain socket; return the lines received until EOF, and the rest."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        received = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
    finally:
        writer.close()
    *lines, rest = received.split(b"\n")
    return [decode_server_line(line) for line in lines], rest


async def _first(stream: AsyncIterator[Sample], count: int) -> list[Sample]:
    async with asyncio.timeout(10):
        return [await anext(stream) for _ in range(count)]


@pytest.mark.parametrize(
    ("token", "first_seq"),
    [
        (ResumeToken(EPOCH, 4), 5),  # same epoch, held: continue right after
        (ResumeToken(EPOCH, -1), 0),  # same epoch, nothing received yet: from the start
        (ResumeToken("01d", 900), 0),  # another epoch (a restart): the oldest held
    ],
)
async def test_hello_token_places_the_stream(token: ResumeToken, first_seq: int) -> None:
    async with _server(held=10) as server, connect("127.0.0.1", server.port, token, QUIET) as s:
        got = await _first(s, 10 - first_seq)
    assert got == _samples(first_seq, 10)


async def test_empty_hello_gets_live_samples_only() -> None:
    async with _server(held=10) as server, connect("127.0.0.1", server.port, None, QUIET) as s:
        await wait_until(lambda: server.hub.subscriber_count == 1, 5, "the subscription")
        server.hub.publish(_samples(10, 13))
        assert await _first(s, 3) == _samples(10, 13)


async def test_hello_may_arrive_byte_by_byte_with_crlf() -> None:
    async with _server(held=3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for byte in encode_hello(ResumeToken(EPOCH, 0)).replace(b"\n", b"\r\n"):
                writer.write(bytes([byte]))
                await writer.drain()
            async with asyncio.timeout(10):
                lines = [await reader.readline() for _ in range(2)]
        finally:
            writer.close()
    assert [decode_server_line(line[:-1]) for line in lines] == _samples(1, 3)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "protocol error: hello must be"),
        (b'{"epoch":"c0ffee"}\n', "bad resume token: give both epoch and since"),
        (b'{"epoch":"NOT-HEX","since":1}\n', "hex"),
        # A trailing newline is not part of an epoch (re.match with $ would accept it).
        (b'{"epoch":"c0ffee\\n","since":1}\n', "bad resume token: epoch must be"),
        (b"{}\nmore\n", 'only {"heartbeat":NS} lines'),
    ],
)
async def test_malformed_hello_gets_an_error_line_and_close(payload: bytes, reason: str) -> None:
    async with _server(held=5) as server:
        lines, rest = await _raw_exchange(server.port, payload)
        assert server.hub.subscriber_count == 0
        # The server goes on: a good client still gets its samples.
        async with connect("127.0.0.1", server.port, ResumeToken(EPOCH, 3), QUIET) as s:
            assert await _first(s, 1) == _samples(4, 5)
    assert len(lines) == 1 and rest == b""
    assert isinstance(lines[0], ServerError) and reason in lines[0].message


async def test_oversized_hello_is_cut_at_the_limit() -> None:
    settings = QUIET.with_changes(max_message_bytes=1024)
    async with _server(settings) as server:
        # No newline ever: the server must not wait for one, nor buffer it all.
        lines, _ = await _raw_exchange(server.port, b"{" + b" " * (64 * 1024))
    assert len(lines) == 1 and isinstance(lines[0], ServerError)
    assert "longer than 1024 bytes" in lines[0].message


async def test_no_hello_in_time_gets_an_error_line() -> None:
    async with _server(hello_timeout_s=0.2) as server:
        lines, _ = await _raw_exchange(server.port, b"{")
    assert lines == [ServerError("peer silent: no hello within 0.2 s")]


async def test_bytes_after_the_hello_close_the_connection() -> None:
    async with _server(held=2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"{}\n")
            await wait_until(lambda: server.hub.subscriber_count == 1, 5, "the subscription")
            writer.write(encode_heartbeat(1))  # allowed
            writer.write(b"hello?\n")  # not allowed
            async with asyncio.timeout(10):
                received = await reader.read()
        finally:
            writer.close()
        assert server.hub.subscriber_count == 0
    assert received.startswith(b'{"error":') and b"hello?" in received


async def test_probe_costs_nothing_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with _server() as server:
        for _ in range(20):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
            await writer.wait_closed()
        await wait_until(lambda: not server._handlers, 5, "the probes' handlers to end")
        assert server.hub.subscriber_count == 0
    assert [r for r in caplog.records if r.name.startswith(("transports", "asyncio"))] == []


async def test_connection_limit_sends_server_full() -> None:
    settings = QUIET.with_changes(max_connections=1)
    async with _server(settings, held=1) as server:
        async with connect("127.0.0.1", server.port, ResumeToken(EPOCH, -1), settings) as first:
            await _first(first, 1)
            async with connect("127.0.0.1", server.port, None, settings) as second:
                with pytest.raises(ProtocolError, match="server full: connection limit 1"):
                    await _first(second, 1)


async def test_heartbeats_arrive_when_idle_and_keep_the_client_alive() -> None:
    settings = QUIET.with_changes(heartbeat_s=0.05, dead_after_s=0.25)
    async with _server(settings) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(b"{}\n")
            async with asyncio.timeout(10):
                lines = [decode_server_line((await reader.readline())[:-1]) for _ in range(3)]
        finally:
            writer.close()
        assert all(isinstance(line, Heartbeat) for line in lines), lines
        # A client kept waiting for 4x its dead-peer deadline survives on heartbeats alone.
        async with connect("127.0.0.1", server.port, None, settings) as stream:
            pending = asyncio.ensure_future(anext(stream))
            done, _ = await asyncio.wait({pending}, timeout=4 * 0.25)
            assert not done, pending
            server.hub.publish(_samples(0, 1))
            async with asyncio.timeout(10):
                assert await pending == _samples(0, 1)[0]


async def test_client_declares_a_silent_server_dead(fake_server: FakeServer) -> None:
    async def accept_and_say_nothing(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()  # until the client gives up

    port = await fake_server(accept_and_say_nothing)
    settings = QUIET.with_changes(dead_after_s=0.2)
    async with connect("127.0.0.1", port, None, settings) as stream:
        with pytest.raises(PeerSilent):
            await _first(stream, 1)


async def test_server_drops_a_client_whose_heartbeats_stop() -> None:
    settings = QUIET.with_changes(heartbeat_s=0.05, dead_after_s=0.3)
    async with _server(settings) as server:
        # A hand-made client: hello and one heartbeat, then silence, reading what comes.
        lines, _ = await _raw_exchange(server.port, b"{}\n" + encode_heartbeat(1))
    assert isinstance(lines[-1], ServerError), lines[-1:]
    assert lines[-1].message.startswith("peer silent: no heartbeat from the client")
    assert all(isinstance(line, Heartbeat) for line in lines[:-1])


@pytest.mark.parametrize("half_close", [False, True], ids=["stdin-open", "half-closed"])
async def test_a_read_only_client_keeps_receiving(half_close: bool) -> None:
    """``printf '{}\\n' | nc`` sends no heartbeat; ``nc -N`` and ``socat`` half-close as well."""
    settings = QUIET.with_changes(heartbeat_s=0.05, dead_after_s=0.3)
    async with _server(settings) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with sock, sock.makefile("rb") as reader:
            sock.sendall(b"{}\n")
            if half_close:
                sock.shutdown(socket.SHUT_WR)  # EOF on stdin: "no more lines from me"
            await wait_until(lambda: server.hub.subscriber_count == 1, 5, "the subscription")
            # Well past the dead-peer timeout, the stream goes on: heartbeats, then samples.
            loop = asyncio.get_running_loop()
            lines = [await loop.run_in_executor(None, reader.readline) for _ in range(12)]
            server.hub.publish(_samples(0, 3))
            lines += [await loop.run_in_executor(None, reader.readline) for _ in range(30)]
            assert server.hub.subscriber_count == 1
        # The client gone for good: the server's next writes fail and it lets go.
        await wait_until(lambda: server.hub.subscriber_count == 0, 5, "the server to let go")
    decoded = [decode_server_line(line.rstrip(b"\n")) for line in lines]
    assert not [line for line in decoded if isinstance(line, ServerError)]
    assert [line for line in decoded if isinstance(line, Sample)] == _samples(0, 3)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b'{"error":"go away"}\n', "go away"),
        (b'{"epoch":"c0ffee","seq":0,"value":7,"sent_ns":1}\n', "malformed"),
        (b'{"epoch":"c0ffee\\n","seq":0,"value":1,"sent_ns":1}\n', "malformed"),
        (b"x" * 4096, "longer than 1024"),
    ],
)
async def test_client_rejects_what_the_server_should_not_send(
    reply: bytes, error: str, fake_server: FakeServer
) -> None:
    async def reply_then_wait(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.write(reply)
        await r.read()

    port = await fake_server(reply_then_wait)
    settings = QUIET.with_changes(max_message_bytes=1024)
    async with connect("127.0.0.1", port, None, settings) as stream:
        with pytest.raises(ProtocolError, match=error):
            await _first(stream, 1)


async def test_stop_ends_every_stream_and_the_listener() -> None:
    async with _server(held=3) as server:
        async with connect("127.0.0.1", server.port, ResumeToken(EPOCH, -1), QUIET) as stream:
            assert await _first(stream, 3) == _samples(0, 3)
            await server.stop()
            with pytest.raises(ConnectionLost, match="closed by the server"):
                await _first(stream, 1)
        with pytest.raises(ServerUnavailable):
            async with connect("127.0.0.1", server.port, None, QUIET):
                pass


async def test_client_that_stops_reading_is_cut_while_another_keeps_receiving(
    small_receive_buffer_socket: socket.socket,
) -> None:
    settings = QUIET.with_changes(queue_size=500, history=100_000, send_buffer_bytes=8192)
    async with _server(settings) as server:
        hub = server.hub
        stalled = small_receive_buffer_socket
        loop = asyncio.get_running_loop()
        await loop.sock_connect(stalled, ("127.0.0.1", server.port))
        await loop.sock_sendall(stalled, b"{}\n")
        try:
            async with connect("127.0.0.1", server.port, None, settings) as stream:
                await wait_until(lambda: hub.subscriber_count == 2, 5, "both subscriptions")
                received: list[Sample] = []
                # Lockstep with the reading client, so only the stalled one can fall behind.
                async with asyncio.timeout(20):
                    while hub.subscriber_count == 2:
                        hub.publish(_samples(hub.next_seq, hub.next_seq + 200))
                        while len(received) < hub.next_seq:
                            received.append(await anext(stream))
                hub.publish(_samples(hub.next_seq, hub.next_seq + 200))
                received += await _first(stream, 200)
        finally:
            stalled.close()
    assert hub.subscriber_count == 0
    assert received == _samples(0, hub.next_seq)
    assert len(received) > 1_000  # the stalled client had to fill its buffers first


async def test_samples_before_an_error_line_arrive_before_the_refusal(
    fake_server: FakeServer,
) -> None:
    """One chunk holding samples, a heartbeat and an error line: the samples come out (in
    one list, read a chunk at a time), then the refusal."""
    chunk = b"".join(encode_sample(s) + b"\n" for s in _samples(0, 3))
    chunk += encode_heartbeat(1) + b'{"error":"go away"}\n'

    async def reply_then_wait(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.write(chunk)
        await r.read()

    port = await fake_server(reply_then_wait)
    async with connect("127.0.0.1", port, None, QUIET) as stream:
        assert isinstance(stream, BatchedSampleStream)
        batches = stream.batches()
        async with asyncio.timeout(10):
            assert list(await anext(batches)) == _samples(0, 3)
            with pytest.raises(ServerRefused, match="go away"):
                await anext(batches)


async def test_a_stream_of_samples_comes_a_chunk_at_a_time_and_flattens() -> None:
    async with _server() as server, connect("127.0.0.1", server.port, None, QUIET) as stream:
        await wait_until(lambda: server.hub.subscriber_count == 1, 5, "the subscription")
        server.hub.publish(_samples(0, 500))
        async with asyncio.timeout(10):
            assert await _first(stream, 500) == _samples(0, 500)  # async for: one by one
            server.hub.publish(_samples(500, 1000))
            assert isinstance(stream, BatchedSampleStream)
            got: list[Sample] = []
            async for batch in stream.batches():
                assert batch  # never an empty list
                got += batch
                if len(got) >= 500:
                    break
    assert got == _samples(500, 1000)
