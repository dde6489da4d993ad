"""What a server must survive (issue 15, server side): hostile peers on real sockets.

Servers run for real, in this process or through ``python -m transports serve`` when the
measure is the process (its CPU, its memory, its file-descriptor limit); ports come from port
0 and every wait has a timeout. The pure rules behind them (frames, close codes, the query
rule, the connection cap) are tested first, without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiohttp
import psutil
import pytest

from experiments.faults.hostile import (
    Target,
    answer,
    endless_head,
    non_readers,
    request_head,
    slowloris,
    target_of,
    upgrade,
    ws_frame,
)
from model.errors import ProtocolError
from model.source import BernoulliSource
from tests.support import FAST, Receiver, running_server, wait_until
from transports.client import Disconnected
from transports.limits import HEADROOM, fit_connections
from transports.registry import TRANSPORTS
from transports.resume import query_parameters
from transports.settings import Settings
from transports.ws_frames import frame_violation, text_frames, valid_close_code

#: One transport per server implementation (long-poll and the seed share theirs).
SERVERS = ["tornado-ws", "sse", "tcp", "poll", "websockets", "aiohttp-ws", "http-stream"]
CLI = [sys.executable, "-m", "transports"]


# -- the pure rules -----------------------------------------------------------------------------


def _parse_frames(data: bytes) -> list[bytes]:
    """Payloads of unmasked final text frames, checking each header."""
    payloads, i = [], 0
    while i < len(data):
        assert data[i] == 0x81
        n, i = data[i + 1], i + 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        payloads.append(data[i : i + n])
        i += n
    return payloads


def test_a_batch_is_one_buffer_of_text_frames() -> None:
    messages = [b"", b"x" * 125, b"y" * 126, b"z" * 65_535, b"w" * 65_536]
    assert _parse_frames(text_frames(messages)) == messages
    assert text_frames([]) == b""


@pytest.mark.parametrize(
    ("opcode", "payload", "expected"),
    [
        (0x1, b'{"ok":1}', None),
        (0x1, b"\xff\xfe", 1007),
        (0x1, "é".encode()[:1], 1007),  # a sequence cut short
        (0x2, b"\xff", None),  # binary: any bytes
        (0x8, b"", None),  # a close without a code is allowed
        (0x8, b"\x03", 1002),  # one byte: half a code
        (0x8, struct.pack("!H", 1000) + b"bye", None),
        (0x8, struct.pack("!H", 1000) + b"\xff", 1007),
        (0x8, struct.pack("!H", 999), 1002),
        (0x8, struct.pack("!H", 1005), 1002),
        (0x8, struct.pack("!H", 5000), 1002),
    ],
)
def test_frame_violations(opcode: int, payload: bytes, expected: int | None) -> None:
    violation = frame_violation(opcode, payload)
    assert (violation[0] if violation else None) == expected


def test_close_codes_a_peer_may_send() -> None:
    valid = [c for c in range(0, 6000) if valid_close_code(c)]
    assert valid == [
        *range(1000, 1004),
        *range(1007, 1015),
        *range(3000, 5000),
    ]


def test_the_query_rule_ignores_unknown_and_refuses_repeated_known() -> None:
    names = ("epoch", "since")
    assert query_parameters([("_", "1"), ("epoch", "ab"), ("_", "2")], names) == {"epoch": "ab"}
    with pytest.raises(ProtocolError, match="'since' given more than once"):
        query_parameters([("since", "1"), ("since", "1")], names)


def test_max_connections_is_capped_below_the_descriptor_limit() -> None:
    settings = Settings(max_connections=10_000)
    capped, warning = fit_connections(settings, 1024)
    assert capped.max_connections == 1024 - HEADROOM
    assert warning is not None and "10000" in warning and "1024" in warning
    assert fit_connections(settings, 1_048_576) == (settings, None)
    assert fit_connections(settings, None) == (settings, None)


# -- servers in this process --------------------------------------------------------------------


def _settings(**changes: object) -> Settings:
    return FAST.with_changes(**changes)


async def _closed_after(target: Target, timeout: float) -> float:
    """Connect, send nothing, and time the server's close (EOF or reset)."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionError):
                while await reader.read(1 << 16):
                    pass  # tcp says why in a last line first
    finally:
        writer.close()
    return time.monotonic() - started


@pytest.mark.parametrize("name", SERVERS)
async def test_idle_and_dripping_connections_are_cut_at_the_header_timeout(name: str) -> None:
    transport = TRANSPORTS[name]
    # dead_after_s well past it: poll's keep-alive timer would otherwise close idle ones first.
    settings = _settings(header_timeout_s=1.0, dead_after_s=30.0)
    async with running_server(transport, settings, rate_hz=50) as server:
        target = target_of(transport, "127.0.0.1", server.port)
        idle_s = await _closed_after(target, timeout=5.0)
        head = endless_head(transport.bad_input_family, target)
        # A byte every 0.1 s: the 1 s deadline must not restart with each byte.
        dripped = await slowloris(target, head, drip_s=0.1, give_up_s=5.0)
    assert 0.9 <= idle_s < 2.5
    assert dripped.startswith(("closed after", "reset after")), dripped
    cut_s = float(dripped.split(" after ")[1].split(" s")[0])
    assert 0.9 <= cut_s < 2.5, dripped


@pytest.mark.parametrize(
    "name", ["tornado-ws", "sse", "poll", "websockets", "aiohttp-ws", "http-stream"]
)
async def test_idle_sockets_do_not_lock_out_a_newcomer(name: str) -> None:
    transport = TRANSPORTS[name]
    settings = _settings(max_connections=5, header_timeout_s=30.0)
    async with running_server(transport, settings, rate_hz=200) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        try:
            async with (
                asyncio.timeout(10),
                transport.connect("127.0.0.1", server.port, None, settings, transport.options) as s,
            ):
                assert await anext(aiter(s))
        finally:
            for sock in idle:
                sock.close()


@asynccontextmanager
async def _poller(port: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A session on one keep-alive connection (a new socket would be a newcomer)."""
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
        yield session


async def _poll(session: aiohttp.ClientSession) -> tuple[int, str]:
    async with asyncio.timeout(5), session.get("/samples") as response:
        return response.status, await response.text()


async def test_poll_limit_refuses_newcomers_never_the_pollers_being_served() -> None:
    poll = TRANSPORTS["poll"]
    settings = _settings(max_connections=3, header_timeout_s=30.0, dead_after_s=30.0)
    async with running_server(poll, settings, rate_hz=100) as server:
        async with _poller(server.port) as first, _poller(server.port) as second:
            assert [(await _poll(first))[0], (await _poll(second))[0]] == [200, 200]
            idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
            try:
                # 12 open sockets against a limit of 3: those being served go on.
                for _ in range(3):
                    assert [(await _poll(first))[0], (await _poll(second))[0]] == [200, 200]
                async with _poller(server.port) as third, _poller(server.port) as fourth:
                    assert (await _poll(third))[0] == 200
                    status, text = await _poll(fourth)
                    assert (status, text.split(":")[0]) == (503, "server full")
                assert [(await _poll(first))[0], (await _poll(second))[0]] == [200, 200]
            finally:
                for sock in idle:
                    sock.close()


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (ws_frame(0x1, b"\xff\xfe"), "close 1007"),
        (ws_frame(0x1, b"{}", rsv=0x40), "close 1002"),
        (ws_frame(0x3, b""), "close 1002"),
        (ws_frame(0xB, b""), "close 1002"),
        (ws_frame(0x8, struct.pack("!H", 999)), "close 1002"),
        (ws_frame(0x8, struct.pack("!H", 1005)), "close 1002"),
        (ws_frame(0x8, struct.pack("!H", 5000)), "close 1002"),
        (ws_frame(0x8, b"\x03"), "close 1002"),
        (ws_frame(0x8, struct.pack("!H", 1000) + b"\xff"), "close 1007"),
        # A valid close code is still echoed (RFC 6455 5.5.1).
        (ws_frame(0x8, struct.pack("!H", 1000)), "close 1000"),
        (ws_frame(0x8, struct.pack("!H", 4001)), "close 4001"),
    ],
)
async def test_websocket_protocol_violations_get_their_close_code(
    frame: bytes, expected: str
) -> None:
    ws = TRANSPORTS["tornado-ws"]
    async with running_server(ws, _settings(), rate_hz=0.1) as server:
        target = target_of(ws, "127.0.0.1", server.port)
        got = await answer(target, upgrade(target) + frame, timeout_s=5.0)
    assert f"; {expected} " in got, got
    assert got.endswith(("; closed", "; reset")), got


async def test_tornado_answers_an_oversized_head_with_431() -> None:
    ws = TRANSPORTS["tornado-ws"]
    async with running_server(ws, _settings(), rate_hz=1) as server:
        target = target_of(ws, "127.0.0.1", server.port)
        head = upgrade(target).replace(b"\r\n\r\n", b"\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n")
        got = await answer(target, head, timeout_s=5.0)
    assert got.startswith("HTTP/1.1 431 Request Header Fields Too Large"), got


async def test_poll_logs_an_oversized_head_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    poll = TRANSPORTS["poll"]
    caplog.set_level(logging.DEBUG, logger="transports.polling")
    async with running_server(poll, _settings(), rate_hz=1) as server:
        target = target_of(poll, "127.0.0.1", server.port)
        head = b"GET /samples HTTP/1.1\r\nX-Big: " + b"x" * 20_000 + b"\r\n\r\n"
        for _ in range(3):
            assert (await answer(target, head, timeout_s=5.0)).startswith("HTTP/1.0 400")
    records = [r for r in caplog.records if r.name.startswith("transports.polling")]
    assert len(records) == 3
    for record in records:
        assert record.exc_info is None and record.exc_text is None
        assert "\n" not in record.getMessage() and "LineTooLong" in record.getMessage()


async def test_unknown_query_parameters_are_ignored_and_repeated_ones_refused() -> None:
    ws, poll = TRANSPORTS["tornado-ws"], TRANSPORTS["poll"]
    # No pings: the raw peer below never answers them.
    async with running_server(ws, _settings(heartbeat_s=0), rate_hz=200) as server:
        target = target_of(ws, "127.0.0.1", server.port)
        await wait_until(lambda: server.hub.next_seq > 5, 5, "samples")
        query = f"?_=123&epoch={server.hub.epoch}&since=2&x"
        resumed = await answer(target, upgrade(target, query), timeout_s=0.5)
        repeated = await answer(target, upgrade(target, "?since=1&since=1"), timeout_s=5.0)
    assert resumed.startswith("HTTP/1.1 101") and "no close frame" in resumed, resumed
    assert "close 1008" in repeated and "given more than once" in repeated, repeated
    async with running_server(poll, _settings(), rate_hz=200) as server:
        async with _poller(server.port) as session:
            assert (await _poll(session))[0] == 200
            async with session.get("/samples?_=1700000000") as response:
                assert response.status == 200
            async with session.get("/samples?epoch=ab&since=1&since=2") as response:
                assert response.status == 400
                assert "given more than once" in await response.text()


# -- servers in their own process ---------------------------------------------------------------


@contextmanager
def _serve(
    name: str, *args: str, nofile: tuple[int, int] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``serve NAME`` in a subprocess (with ``nofile`` as its RLIMIT_NOFILE); its start line.

    The limit is set by a small Python that then execs the server, not by a ``preexec_fn``:
    forking this test process, which may hold grpc's threads from other tests, runs grpc's
    fork handlers in the child, and their complaints landed in the server's stderr."""
    prefix: list[str] = []
    if nofile is not None:
        soft, hard = nofile
        prefix = [
            sys.executable,
            "-c",
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
        ]
    proc = subprocess.Popen(
        [
            *prefix,
            *(CLI[1:] if prefix else CLI),
            "serve",
            name,
            "--port",
            "0",
            "--ready-json",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        start = proc.stdout.readline()
        assert start.startswith("serving "), (start, proc.stderr and proc.stderr.read())
        proc.stdout.readline()  # the ready line
        yield proc, start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            proc.kill()


def _port(start: str) -> int:
    return int(start.split(" on ")[1].split()[0].rsplit(":", 1)[1])


@pytest.mark.parametrize("name", SERVERS)
async def test_out_of_descriptors_the_server_rests_then_serves_again(name: str) -> None:
    transport = TRANSPORTS[name]
    # Soft 128, hard 256: serve raises the soft limit and caps max_connections below it.
    args = ("--rate", "50", "--set", "header_timeout_s=60")
    with _serve(name, *args, nofile=(128, 256)) as (proc, start):
        assert "fds=256" in start and f"max_connections={256 - HEADROOM}" in start, start
        server = psutil.Process(proc.pid)
        port = _port(start)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        try:
            # tcp refuses past its limit itself; the others accept until none is left.
            await wait_until(lambda: server.num_fds() >= 250 or name == "tcp", 10, "no fds left")
            server.cpu_percent(None)
            await asyncio.sleep(2.0)  # a measuring window, not a synchronisation
            cpu = server.cpu_percent(None)
        finally:
            for sock in idle:
                sock.close()
        settings = Settings(backoff_base_s=0.05, backoff_cap_s=0.2)
        async with (
            asyncio.timeout(15),
            transport.connect("127.0.0.1", port, None, settings, transport.options) as samples,
        ):
            assert await anext(aiter(samples))
        proc.terminate()
        assert proc.stderr is not None
        log = proc.stderr.read()
    print(f"{name}: server CPU {cpu:.0f}% while out of descriptors; stderr {len(log)} bytes:")
    print(log)
    assert cpu < 30, f"{name} spun at {cpu:.0f}% CPU while out of descriptors"
    assert "Traceback" not in log, log[:2000]
    lines = log.splitlines()
    assert lines and "max_connections lowered from 10000 to 192" in lines[0], log[:2000]
    assert len(lines) <= 5, log[:2000]


def _rss(process: psutil.Process) -> int:
    return int(process.memory_info().rss)


async def test_tornado_readers_that_never_read_hold_little_and_disturb_nobody() -> None:
    ws = TRANSPORTS["tornado-ws"]
    stuck = 120
    with _serve("tornado-ws", "--rate", "5000") as (proc, start):
        server, port = psutil.Process(proc.pid), _port(start)
        target = target_of(ws, "127.0.0.1", port)
        settings = Settings(backoff_base_s=0.05, backoff_cap_s=0.2)
        async with Receiver(ws, port, BernoulliSource(0.72, seed=0), settings) as healthy:
            await healthy.receive(5_000, timeout=10)
            before = _rss(server)
            peers = await non_readers(target, request_head("websocket", target), stuck)
            try:
                peak = before
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:  # sample the peak while they pile up
                    peak = max(peak, _rss(server))
                    await asyncio.sleep(0.05)
                await healthy.receive(5_000, timeout=10)
            finally:
                for sock in peers:
                    sock.close()
    per_reader = (peak - before) / stuck
    print(
        f"tornado-ws: RSS {before / 1e6:.1f} MB -> peak {peak / 1e6:.1f} MB, "
        f"{per_reader / 1e3:.0f} kB per reader that never reads"
    )
    assert per_reader < 200_000
    cuts = [e for e in healthy.events if isinstance(e, Disconnected)]
    assert not cuts, cuts
    assert healthy.ledger.counts().lost == 0
