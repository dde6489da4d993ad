"""The aiohttp WebSocket transport's own keepalive: pings on the writer's schedule, busy or not,
and a client that stops answering them dropped after ``dead_after_s``; a reader that stops
reading cut by the hub's bound, not by a pong timeout of aiohttp's.

What every transport does is the contract suite's; the wire, close codes and handshake errors
every WebSocket transport shares are ``test_ws_interop.py``'s.
"""

from __future__ import annotations

import asyncio
import time

from experiments.faults.hostile import non_readers, request_head, target_of, upgrade
from tests.support import FAST, Receiver, running_server, wait_until
from tests.test_ws_interop import close_frame
from transports.aiohttp_ws import AIOHTTP_WS, keepalive_params

PING = 0x9


def _opcodes(data: bytes) -> list[int]:
    """The opcodes of the unmasked server frames in ``data`` (whole frames only)."""
    found, i = [], 0
    while i + 2 <= len(data):
        n, j = data[i + 1] & 0x7F, i + 2
        if n == 126:
            n, j = int.from_bytes(data[j : j + 2], "big"), j + 2
        elif n == 127:
            n, j = int.from_bytes(data[j : j + 8], "big"), j + 8
        if j + n > len(data):
            break
        found.append(data[i] & 0x0F)
        i = j + n
    return found


async def test_a_busy_stream_is_pinged_and_a_client_that_never_pongs_is_dropped() -> None:
    settings = FAST.with_changes(heartbeat_s=0.2, dead_after_s=1.0)
    async with running_server(AIOHTTP_WS, settings, rate_hz=1_000) as server:
        target = target_of(AIOHTTP_WS, "127.0.0.1", server.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        writer.write(upgrade(target))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        data = b""
        try:
            async with asyncio.timeout(5):  # reads everything, answers nothing
                while chunk := await reader.read(1 << 16):
                    data += chunk
        finally:
            writer.close()
        lasted = time.monotonic() - started
    opcodes = _opcodes(data)
    assert opcodes.count(0x1) > 200  # samples flowed ...
    assert opcodes.count(PING) >= 3  # ... and pings went out among them
    close = close_frame(data)
    assert close is not None and close[0] == 1008 and close[1].startswith(b"peer silent"), close
    assert 1.0 <= lasted < 3.5, lasted


async def test_a_reader_that_stops_reading_is_cut_by_the_hub_not_by_a_pong_timeout() -> None:
    # Pings on, as in a real run: aiohttp's own heartbeat would drop this reader (its ping
    # stuck behind the backlog) before the hub's bound, without counting it as cut.
    settings = FAST.with_changes(heartbeat_s=1.0, dead_after_s=3.0, queue_size=2_000)
    async with running_server(AIOHTTP_WS, settings, rate_hz=4_000) as server:
        async with Receiver(AIOHTTP_WS, server.port, server.source, settings) as normal:
            await normal.receive(100)
            target = target_of(AIOHTTP_WS, "127.0.0.1", server.port)
            stuck = await non_readers(target, request_head("websocket", target), 3)
            try:
                await wait_until(lambda: server.hub.cut_count >= 3, 15, "three cuts")
                await normal.receive(2_000)
            finally:
                for sock in stuck:
                    sock.close()
    counts = normal.ledger.counts()
    assert (counts.lost, counts.duplicated) == (0, 0)
    assert normal.client.connection == 1


def test_the_keepalive_figures_say_what_is_in_force() -> None:
    figures = keepalive_params(
        FAST.with_changes(heartbeat_s=2.0, dead_after_s=6.0), AIOHTTP_WS.options
    )
    assert figures["ws_ping_interval_s"] == 2.0
    assert figures["client_pong_timeout_s"] == 1.0  # aiohttp's client: half its heartbeat
    assert figures["server_read_timeout_s"] == figures["read_timeout_s"] == 6.0
    off = keepalive_params(FAST.with_changes(heartbeat_s=0, dead_after_s=None), AIOHTTP_WS.options)
    assert off["ws_ping_interval_s"] is None and off["server_read_timeout_s"] is None
