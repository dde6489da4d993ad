"""tornado-ws specifics: close codes, limits, and a third-party client (websockets)."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from model.sample import decode_sample
from tests.support import FAST, running_server, serving
from transports.options import NoOptions
from transports.registry import get
from transports.settings import Settings
from transports.tornado_ws import TornadoServer

WS = get("tornado-ws")


async def _close_of(url: str, send: str | bytes | None = None) -> tuple[int | None, str]:
    async with asyncio.timeout(10), websockets.connect(url, max_size=None) as ws:
        if send is not None:
            await ws.send(send)
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason


async def test_third_party_client_receives_valid_samples_and_resumes() -> None:
    async with running_server(WS, rate_hz=1_000) as server:
        url = f"ws://127.0.0.1:{server.port}/websocket/"
        async with websockets.connect(url) as ws:
            first = [decode_sample(await ws.recv()) for _ in range(20)]
        assert [s.seq for s in first] == list(range(first[0].seq, first[0].seq + 20))
        token = first[-1]
        async with websockets.connect(f"{url}?epoch={token.epoch}&since={token.seq}") as ws:
            resumed = decode_sample(await ws.recv())
        assert (resumed.epoch, resumed.seq) == (token.epoch, token.seq + 1)


@pytest.mark.parametrize(
    "query",
    [
        "?epoch=zz&since=1",
        "?epoch=abcd",
        "?epoch=abcd&since=one",
        "?epoch=abcd%0a&since=1",  # a trailing newline is not part of an epoch
    ],
)
async def test_bad_resume_token_closes_with_1008(query: str) -> None:
    async with running_server(WS) as server:
        code, reason = await _close_of(f"ws://127.0.0.1:{server.port}/websocket/{query}")
    assert code == 1008
    assert reason.startswith("bad resume token: ")


async def test_client_message_closes_that_client_with_1008() -> None:
    async with running_server(WS) as server:
        code, reason = await _close_of(f"ws://127.0.0.1:{server.port}/websocket/", "hello?")
    assert code == 1008
    assert "only sends" in reason


async def test_oversized_message_closes_with_1009() -> None:
    settings = Settings(max_message_bytes=1024)
    async with running_server(WS, settings) as server:
        code, _ = await _close_of(f"ws://127.0.0.1:{server.port}/websocket/", b"x" * 4096)
    assert code == 1009


async def test_connection_limit_closes_with_1013() -> None:
    async with running_server(WS, Settings(max_connections=1)) as server:
        url = f"ws://127.0.0.1:{server.port}/websocket/"
        async with websockets.connect(url) as first:
            await first.recv()
            code, _ = await _close_of(url)
    assert code == 1013


async def _frames_until_close(reader: asyncio.StreamReader) -> list[int]:
    """The opcodes of the frames a server sends, up to and including its close frame."""
    opcodes: list[int] = []
    while not opcodes or opcodes[-1] != 0x8:
        head = await reader.readexactly(2)
        length = head[1] & 0x7F  # a server's frames are unmasked
        if length >= 126:
            length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8))
        await reader.readexactly(length)
        opcodes.append(head[0] & 0x0F)
    return opcodes


async def test_a_peer_that_never_answers_pings_is_closed_after_the_capped_timeout() -> None:
    # Asked for a 30 s ping timeout with 0.2 s pings: tornado >= 6.5 holds 0.2 s (what the
    # report shows as ws_ping_timeout_s), so the silent peer is closed long before 30 s.
    settings = FAST.with_changes(heartbeat_s=0.2, dead_after_s=30.0)
    assert WS.keepalive_in_force(settings)["ws_ping_timeout_s"] == 0.2
    async with serving(TornadoServer, settings, NoOptions()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /websocket/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            async with asyncio.timeout(10):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
                opened = time.monotonic()
                opcodes = await _frames_until_close(reader)  # never answering a ping
            elapsed = time.monotonic() - opened
        finally:
            writer.close()
    assert opcodes[0] == 0x9 and opcodes[-1] == 0x8  # pinged, then closed
    assert 0.2 <= elapsed < 5.0


async def test_the_origin_policy_judges_the_handshake() -> None:
    # A slow stream: these clients read one sample, and close without a backlog to drain.
    async with running_server(WS, rate_hz=20) as server:
        url = f"ws://127.0.0.1:{server.port}/websocket/"
        # A refused page: 403 to the handshake, so its WebSocket never opens.
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url, origin=Origin("http://evil.test"))
        assert refused.value.response.status_code == 403
        # Loopback pages, the server's own page and non-browsers (no Origin) are served.
        for origin in ("http://localhost:3000", f"http://127.0.0.1:{server.port}", None):
            sent = None if origin is None else Origin(origin)
            async with asyncio.timeout(10), websockets.connect(url, origin=sent) as ws:
                decode_sample(await ws.recv())
    allowed = FAST.with_changes(allow_origins=("http://evil.test",))
    async with running_server(WS, allowed, rate_hz=20) as server:
        url = f"ws://127.0.0.1:{server.port}/websocket/"
        async with asyncio.timeout(10):
            async with websockets.connect(url, origin=Origin("http://evil.test")) as ws:
                decode_sample(await ws.recv())


@pytest.mark.parametrize("name", ["tornado-ws", "tornado-ws-seed"])
async def test_the_live_page_is_served_at_the_root(name: str) -> None:
    async with running_server(get(name)) as server:
        async with httpx.AsyncClient() as client:
            page = await client.get(f"http://127.0.0.1:{server.port}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "new WebSocket(" in page.text
    # The seed's page keeps the seed's ways: its name, a fixed 3 s retry, no resume.
    assert f'"transport":"{name}"' in page.text
    if name == "tornado-ws-seed":
        assert '"resume":false' in page.text and '"backoff_jitter":false' in page.text
