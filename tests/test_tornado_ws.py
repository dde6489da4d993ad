"""tornado-ws specifics: close codes, limits, and a third-party client (websockets)."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from model.sample import decode_sample
from tests.support import running_server
from transports.registry import get
from transports.settings import Settings
from transports.tornado_ws import ping_timeout

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


@pytest.mark.parametrize("query", ["?epoch=zz&since=1", "?epoch=abcd", "?epoch=abcd&since=one"])
async def test_bad_resume_token_closes_with_1008(query: str) -> None:
    async with running_server(WS) as server:
        code, reason = await _close_of(f"ws://127.0.0.1:{server.port}/websocket/{query}")
    assert code == 1008
    assert "bad resume token" in reason


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


def test_ping_timeout_in_force_is_capped_at_the_interval() -> None:
    seed = get("tornado-ws-seed").settings()
    assert (seed.heartbeat_s, seed.dead_after_s) == (10.0, 30.0)  # as the original design wrote
    assert ping_timeout(seed) == 10.0  # what tornado >= 6.5 enforces
    assert ping_timeout(Settings(heartbeat_s=0)) is None
