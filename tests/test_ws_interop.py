"""Any WebSocket client reads any WebSocket server: every pair of the registered WebSocket
transports on real loopback sockets, and the same answers from every WebSocket server and
client where the protocol leaves a choice (close codes, refusals, failed handshakes).

The transports come from the registry (protocol family ``websocket``, resuming), so a new
WebSocket transport is paired with the others here without touching this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pytest

from experiments.faults.hostile import (
    Target,
    answer,
    describe_answer,
    target_of,
    upgrade,
    ws_frame,
)
from model.errors import (
    BadResumeToken,
    ConnectionLost,
    FrameTooLarge,
    NotThisProtocol,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    TooManyConnections,
)
from tests.conftest import FakeServer
from tests.support import FAST, Receiver, running_server, wait_until
from tests.test_hardening_client import answering, http, tcp_error_line, ws_close_1013
from transports.registry import TRANSPORTS, get
from transports.resume import ResumeToken
from transports.ws_wire import close_error, refusal, ws_url

WEBSOCKET = [
    t for t in TRANSPORTS.values() if t.bad_input_family == "websocket" and t.features.resume
]
NAMES = [t.name for t in WEBSOCKET]


def test_the_websocket_transports_are_found() -> None:
    assert {"tornado-ws", "websockets", "aiohttp-ws"} <= set(NAMES)


# -- what they share, pure -----------------------------------------------------------------------


def test_the_url_carries_the_token_and_brackets_ipv6() -> None:
    assert ws_url("::1", 8892, None) == "ws://[::1]:8892/websocket/"
    assert ws_url("h", 1, ResumeToken("ab", 7)) == "ws://h:1/websocket/?epoch=ab&since=7"


@pytest.mark.parametrize(
    ("received", "sent", "expected"),
    [
        (None, None, ConnectionLost),  # the TCP connection just ended
        (1000, None, ConnectionLost),
        (1001, None, ConnectionLost),  # a server stopping
        (1006, None, ConnectionLost),
        (1008, None, ServerRefused),  # bad token, a message, cut
        (1013, None, ServerRefused),  # full
        (4001, None, ServerRefused),
        (None, 1009, FrameTooLarge),  # the client's own limit
        (None, 1002, ProtocolError),
        (None, 1011, ConnectionLost),  # the client's keepalive gave up
    ],
)
def test_what_a_close_means_to_a_client(
    received: int | None, sent: int | None, expected: type[StreamError]
) -> None:
    assert type(close_error(received, "why", sent)) is expected


def test_a_refusal_is_a_code_and_a_reason_that_fits_a_close_frame() -> None:
    assert refusal(TooManyConnections("limit 3")) == (1013, "server full: limit 3")
    code, reason = refusal(BadResumeToken("é" * 200))
    assert code == 1008 and len(reason.encode()) <= 123


@pytest.mark.parametrize("server_name", NAMES)
@pytest.mark.parametrize("client_name", NAMES)
async def test_any_client_reads_any_server_and_resumes_across_a_restart(
    client_name: str, server_name: str
) -> None:
    client, server_transport = get(client_name), get(server_name)
    async with running_server(server_transport, rate_hz=1_000) as server:
        async with Receiver(client, server.port, server.source) as rx:
            await rx.receive(300)
            old_epoch = server.hub.epoch
            await server.restart()
            await wait_until(lambda: rx.ledger.epochs[-1] == server.hub.epoch, 15, "new epoch")
            await rx.receive(300)
    new_epoch = server.hub.epoch
    assert rx.ledger.epochs == [old_epoch, new_epoch]
    first = [s.seq for s in rx.samples if s.epoch == old_epoch]
    assert first == list(range(first[0], first[0] + len(first)))
    for epoch in (old_epoch, new_epoch):
        counts = rx.ledger.counts(epoch)
        assert (counts.lost, counts.duplicated, counts.reordered, counts.corrupted) == (
            0,
            0,
            0,
            0,
        ), (epoch, counts)
    # The token named the old epoch: the new run starts it at its oldest sample.
    assert next(s.seq for s in rx.samples if s.epoch == new_epoch) == 0
    assert rx.ledger.posterior_error().mean_error == 0


# -- every server answers a peer the same way ---------------------------------------------------


async def _until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """What the server sends until its close frame or EOF (tornado waits 5 s for the peer's
    close frame before it closes the socket: the frame is the answer)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(timeout_s):
            while close_frame(data) is None and (chunk := await reader.read(1 << 16)):
                data += chunk
    return data


def close_frame(data: bytes) -> tuple[int, bytes] | None:
    """The first close frame in server frames: its code and reason."""
    i = 0
    while i + 2 <= len(data):
        opcode, n, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if n == 126:
            n, j = struct.unpack("!H", data[j : j + 2])[0], j + 2
        elif n == 127:
            n, j = struct.unpack("!Q", data[j : j + 8])[0], j + 8
        if j + n > len(data):
            return None
        if opcode == 0x8 and n >= 2:
            return struct.unpack("!H", data[j : j + 2])[0], data[j + 2 : j + n]
        i = j + n
    return None


async def _after_upgrade(target: Target, frame: bytes, timeout_s: float = 5.0) -> str:
    """Upgrade, wait for the 101 (RFC 6455: a client sends frames only after it), send
    ``frame``, and describe what the server answered."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(upgrade(target))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        writer.write(frame)
        rest = await _until_closed(reader, timeout_s)
    finally:
        writer.close()
    return describe_answer(head + rest, "closing" if close_frame(rest) else "no close")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        pytest.param(ws_frame(0x1, b"\xff\xfe"), "close 1007", id="invalid-utf8"),
        pytest.param(ws_frame(0x1, b"{}", rsv=0x40), "close 1002", id="rsv-bits"),
        pytest.param(ws_frame(0x3, b""), "close 1002", id="reserved-opcode"),
        pytest.param(ws_frame(0x8, struct.pack("!H", 999)), "close 1002", id="close-999"),
        pytest.param(ws_frame(0x8, struct.pack("!H", 1005)), "close 1002", id="close-1005"),
        pytest.param(ws_frame(0x8, struct.pack("!H", 5000)), "close 1002", id="close-5000"),
        pytest.param(ws_frame(0x8, b"\x03"), "close 1002", id="close-1-byte"),
        pytest.param(ws_frame(0x8, struct.pack("!H", 4001)), "close 4001", id="close-echoed"),
        pytest.param(ws_frame(0x1, b'{"hello":1}'), "close 1008", id="a-message"),
        pytest.param(ws_frame(0x1, b"x" * (2 << 20)), "close 1009", id="too-big"),
    ],
)
async def test_every_server_answers_a_violation_with_the_code_rfc_6455_names(
    name: str, frame: bytes, expected: str
) -> None:
    transport = get(name)
    # No pings: the raw peer never answers them.
    async with running_server(transport, FAST.with_changes(heartbeat_s=0), rate_hz=0.1) as srv:
        got = await _after_upgrade(target_of(transport, "127.0.0.1", srv.port), frame)
    assert got.startswith("HTTP/1.1 101 ") and f"; {expected} " in got, got


@pytest.mark.parametrize("name", NAMES)
async def test_every_server_refuses_with_the_shared_close_codes(name: str) -> None:
    transport = get(name)
    settings = FAST.with_changes(heartbeat_s=0, max_connections=1)
    async with running_server(transport, settings, rate_hz=100) as server:
        target = target_of(transport, "127.0.0.1", server.port)
        bad_token = await _after_upgrade(
            Target(target.host, target.port, target.path + "?epoch=zz&since=1"), b""
        )
        async with Receiver(transport, server.port, server.source, settings) as rx:
            await rx.receive(10)
            full = await _after_upgrade(target, b"")
        # The one subscriber gone, the next is served; the server's stop says "going away".
        await wait_until(lambda: server.hub.subscriber_count == 0, 5, "the receiver to leave")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade(target))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await wait_until(lambda: server.hub.subscriber_count == 1, 5, "the raw subscriber")
        stopping = asyncio.create_task(server.stop())
        stopped = await _until_closed(reader, 5.0)
        writer.close()
        await stopping
        await server.start()  # running_server stops it once more
    assert 'close 1008 "bad resume token' in bad_token, bad_token
    assert "close 1013 'server full" in full, full
    assert close_frame(stopped) == (1001, b"server shutting down"), stopped


# -- every client sorts a failed handshake the same way ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(
            http("503 Service Unavailable", "text/plain", b"full"), ServerRefused, id="503"
        ),
        pytest.param(http("200 OK", "text/html", b"<html>hi</html>"), NotThisProtocol, id="200"),
        pytest.param(None, NotThisProtocol, id="an-error-line"),
        pytest.param(b"", ServerUnavailable, id="closed-without-answer"),
    ],
)
async def test_every_client_sorts_a_failed_handshake(
    name: str, response: bytes | None, expected: type[StreamError], fake_server: FakeServer
) -> None:
    transport = get(name)
    handler = tcp_error_line("not a websocket") if response is None else answering(response)
    if response is None and name == "tornado-ws":
        # Tornado logs the bytes it could not parse and reports only the close: it cannot
        # tell them from no answer (see transports.tornado_ws.connect).
        expected = ServerUnavailable
    port = await fake_server(handler)
    settings = transport.settings(FAST)
    with pytest.raises(StreamError) as raised:
        async with transport.connect("127.0.0.1", port, None, settings, transport.options):
            pass
    assert type(raised.value) is expected, raised.value


@pytest.mark.parametrize("name", NAMES)
async def test_every_client_takes_a_close_with_a_code_of_its_own_as_a_refusal(
    name: str, fake_server: FakeServer
) -> None:
    transport = get(name)
    port = await fake_server(ws_close_1013)
    settings = transport.settings(FAST)
    async with transport.connect("127.0.0.1", port, None, settings, transport.options) as samples:
        with pytest.raises(ServerRefused, match="1013"):
            await anext(aiter(samples))


@pytest.mark.parametrize("name", NAMES)
async def test_every_server_applies_the_shared_origin_policy(name: str) -> None:
    transport = get(name)
    settings = FAST.with_changes(heartbeat_s=0, allow_origins=("https://app.example",))
    async with running_server(transport, settings, rate_hz=10) as server:
        t = target_of(transport, "127.0.0.1", server.port)

        def asking_from(origin: str) -> bytes:
            return upgrade(t).replace(b"\r\n\r\n", f"\r\nOrigin: {origin}\r\n\r\n".encode())

        foreign = await answer(t, asking_from("https://evil.example"), timeout_s=1.0)
        listed = await answer(t, asking_from("https://app.example"), timeout_s=0.5)
        loopback = await answer(t, asking_from("http://localhost:5173"), timeout_s=0.5)
    assert foreign.startswith("HTTP/1.1 403 "), foreign
    assert listed.startswith("HTTP/1.1 101 ") and loopback.startswith("HTTP/1.1 101 ")
