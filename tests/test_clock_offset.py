"""The clock offset between a client's host and the server's (issue 14, item 3).

The pure parts (the wire form, choosing the exchange, the offset and its bound) without
sockets; then the endpoint and the estimator on real UDP sockets, ``serve --clock-port`` as a
process, and a client worker whose job names the clock endpoint. On one machine every estimate
must come out within its bound of zero: one clock serves both sides.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest

from experiments.clock_offset import (
    ClockOffset,
    Exchange,
    NoClockReply,
    best_exchange,
    bound_of,
    clock_granularity_ns,
    estimate_offset,
    offset_of,
    summarise,
)
from experiments.histogram import merge, summarize
from experiments.network import NetworkPath
from experiments.run.processes import ServerProcess, settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS
from experiments.worker.process import ClientProcess
from experiments.worker.schema import ClientGroup, ClientJob, WorkerResult, decode_line, encode
from tests.support import NEEDS_NETWORK_PATHS, clocked_tcp_server_on
from transports.announce import Announcement, Ready, parse_announcement
from transports.clock_endpoint import (
    REPLY_SIZE,
    REQUEST_SIZE,
    decode_reply,
    encode_request,
    reply_to,
    start_clock_endpoint,
)

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "transports"]


# -- the wire form (pure) --------------------------------------------------------------------


def test_a_request_is_echoed_with_the_arrival_stamp() -> None:
    request = encode_request(123_456_789)
    assert len(request) == REQUEST_SIZE == 8
    assert request == (123_456_789).to_bytes(8, "big")
    reply = reply_to(request, 2**64 - 1)
    assert reply is not None and len(reply) == REPLY_SIZE == 16
    assert reply[:8] == request
    assert decode_reply(reply) == (123_456_789, 2**64 - 1)
    # The server echoes whatever 8 bytes came: it interprets nothing.
    assert reply_to(b"\xff" * 8, 5) == b"\xff" * 8 + (5).to_bytes(8, "big")


@pytest.mark.parametrize("size", [0, 1, 7, 9, 15, 16, 17, 1200])
def test_a_datagram_of_any_other_size_gets_no_reply(size: int) -> None:
    assert reply_to(b"\x01" * size, 42) is None


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_a_reply_of_the_wrong_size_is_refused(size: int) -> None:
    assert decode_reply(b"\x01" * size) is None


# -- the estimate (pure) ---------------------------------------------------------------------


def test_the_exchange_with_the_shortest_round_trip_is_chosen() -> None:
    slow = Exchange(sent_ns=0, server_ns=900, received_ns=1_000)
    fast = Exchange(sent_ns=2_000, server_ns=2_050, received_ns=2_100)
    equally_fast = Exchange(sent_ns=5_000, server_ns=5_001, received_ns=5_100)
    assert best_exchange([slow, fast, equally_fast]) is fast
    assert best_exchange([equally_fast, slow, fast]) is equally_fast  # the first of equals
    with pytest.raises(ValueError, match="no exchange"):
        best_exchange([])


def test_offset_is_the_stamp_less_the_middle_and_bound_half_the_round_trip() -> None:
    # The server's clock reads 5,000 ns ahead of ours; it stamped the probe 40 ns after it
    # left (the path is asymmetric: 40 ns out, 60 ns back).
    skew, t0 = 5_000, 1_000
    exchange = Exchange(sent_ns=t0, server_ns=t0 + 40 + skew, received_ns=t0 + 100)
    assert exchange.rtt_ns == 100
    assert offset_of(exchange) == skew - 10  # the asymmetry is the error ...
    assert bound_of(exchange, granularity_ns=0) == 50  # ... and half the round trip bounds it
    assert bound_of(exchange, granularity_ns=1) == 51
    # Behind us: a negative offset.
    behind = Exchange(sent_ns=10_000, server_ns=10_050 - 7_000, received_ns=10_100)
    assert offset_of(behind) == -7_000


def test_the_bound_holds_and_is_tight_wherever_the_server_read_its_clock() -> None:
    # One clock on both sides (offset 0): the server's stamp falls anywhere in the round trip.
    for t0 in range(0, 4):
        for rtt in range(0, 9):
            t3 = t0 + rtt
            errors = [abs(offset_of(Exchange(t0, s, t3))) for s in range(t0, t3 + 1)]
            bound = bound_of(Exchange(t0, t0, t3), granularity_ns=0)
            assert max(errors) == bound, (t0, t3)  # holds, and no smaller bound would


def test_summarise_counts_exchanges_and_refuses_none() -> None:
    exchanges = [Exchange(0, 70, 100), Exchange(200, 235, 260), Exchange(300, 390, 400)]
    estimate = summarise(exchanges, asked=5, granularity_ns=1)
    assert estimate == ClockOffset(offset_ns=5, bound_ns=31, rtt_ns=60, exchanges=5, replies=3)
    with pytest.raises(NoClockReply, match="none of 4"):
        summarise([], asked=4, granularity_ns=1)


def test_the_clock_granularity_is_a_positive_number_of_ns() -> None:
    assert clock_granularity_ns() >= 1


# -- the endpoint and the estimator on real sockets -----------------------------------------


def _within_its_bound_of_zero(estimate: ClockOffset) -> None:
    assert abs(estimate.offset_ns) <= estimate.bound_ns, estimate
    assert estimate.bound_ns >= (estimate.rtt_ns + 1) // 2 > 0


async def test_one_machine_estimates_within_its_bound_of_zero() -> None:
    endpoint = await start_clock_endpoint("127.0.0.1", 0)
    try:
        assert endpoint.port > 0
        estimate = await estimate_offset("127.0.0.1", endpoint.port)
    finally:
        endpoint.close()
    _within_its_bound_of_zero(estimate)
    assert estimate.exchanges == estimate.replies == 32
    assert estimate.rtt_ns < 50_000_000  # loopback: well under 50 ms even on a busy machine


async def test_the_endpoint_answers_only_well_formed_requests() -> None:
    endpoint = await start_clock_endpoint("127.0.0.1", 0)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        probe.connect(("127.0.0.1", endpoint.port))
        for junk in (b"", b"\x00" * 7, b"\x00" * 9, b"\x00" * 16):
            await loop.sock_sendall(probe, junk)
        before = time.monotonic_ns()
        await loop.sock_sendall(probe, encode_request(before))
        async with asyncio.timeout(5):
            data = await loop.sock_recv(probe, 64)
        after = time.monotonic_ns()
        # Loopback keeps order: had any junk been answered, that answer would come first.
        reply = decode_reply(data)
        assert reply is not None and reply[0] == before
        assert before <= reply[1] <= after
        with pytest.raises(TimeoutError):  # and nothing else follows
            async with asyncio.timeout(0.2):
                await loop.sock_recv(probe, 64)
    finally:
        probe.close()
        endpoint.close()


class _Replies(asyncio.DatagramProtocol):
    """A clock endpoint on a host whose clock runs ``skew_ns`` ahead of ours; with ``junk``,
    each answer is preceded by datagrams the estimator must skip (a stale reply to another
    probe, a truncated one, an oversize one); with ``silent``, it answers nothing."""

    def __init__(self, skew_ns: int = 0, *, junk: bool = False, silent: bool = False) -> None:
        self.skew_ns, self.junk, self.silent = skew_ns, junk, silent
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not derive from DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.requests += 1
        now = time.monotonic_ns() + self.skew_ns
        if self.silent or self.transport is None:
            return
        if self.junk:
            stale = int.from_bytes(data, "big") - 1
            self.transport.sendto(encode_request(stale) + encode_request(now), addr)
            self.transport.sendto(data + b"\x00" * 7, addr)
            self.transport.sendto(data + encode_request(now) + b"\x00", addr)
        reply = reply_to(data, now)
        assert reply is not None
        self.transport.sendto(reply, addr)


@asynccontextmanager
async def _replying(protocol: _Replies) -> AsyncIterator[int]:
    """``protocol`` on a UDP port of 127.0.0.1; yields the port."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_stale_and_malformed_replies_are_skipped() -> None:
    replies = _Replies(junk=True)
    async with _replying(replies) as port:
        estimate = await estimate_offset("127.0.0.1", port, exchanges=4)
    assert replies.requests == 4 and estimate.replies == 4
    _within_its_bound_of_zero(estimate)


async def test_an_offset_is_measured_with_its_sign() -> None:
    ahead = _Replies(skew_ns=3_000_000_000)
    async with _replying(ahead) as port:
        estimate = await estimate_offset("127.0.0.1", port, exchanges=8)
    assert abs(estimate.offset_ns - 3_000_000_000) <= estimate.bound_ns, estimate


async def test_a_silent_endpoint_is_a_clear_error() -> None:
    silent = _Replies(silent=True)
    async with _replying(silent) as port:
        with pytest.raises(NoClockReply, match=r"answered none of 3 exchanges \(no reply within"):
            await estimate_offset("127.0.0.1", port, exchanges=3, timeout_s=0.05)
    assert silent.requests == 3  # one after another, each with its own timeout


async def test_the_socket_comes_from_the_factory_given() -> None:
    made: list[socket.socket] = []

    def make() -> socket.socket:
        made.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))  # blocking: made non-
        return made[-1]

    endpoint = await start_clock_endpoint("127.0.0.1", 0)
    try:
        estimate = await estimate_offset("127.0.0.1", endpoint.port, exchanges=4, sock=make)
    finally:
        endpoint.close()
    _within_its_bound_of_zero(estimate)
    assert len(made) == 1 and made[0].fileno() == -1  # used, then closed


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="exchanges"):
        await estimate_offset("127.0.0.1", 9, exchanges=0)
    with pytest.raises(ValueError, match="timeout_s"):
        await estimate_offset("127.0.0.1", 9, timeout_s=0.0)
    with pytest.raises(NoClockReply, match="cannot resolve"):
        await estimate_offset("no-such-host.invalid", 9, exchanges=1)


# -- serve --clock-port ----------------------------------------------------------------------


@asynccontextmanager
async def _serving(*extra: str) -> AsyncIterator[tuple[str, int, int]]:
    """``serve tcp --port 0 --ready-json`` plus ``extra``: (human line, clock port, pid)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "tcp", "--port", "0", "--ready-json", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        human = ""
        async with asyncio.timeout(30):
            while (announcement := parse_announcement(line := await _line(proc))) is None:
                human = human or line
        assert announcement.ready.pid == proc.pid
        assert announcement.ready.clock_port is not None
        yield human, announcement.ready.clock_port, proc.pid
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None and proc.stderr is not None
    line = (await proc.stdout.readline()).decode()
    assert line, (await proc.stderr.read()).decode()[-2000:]
    return line


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_serve_announces_its_clock_port_and_answers_on_it() -> None:
    async with _serving("--clock-port", "0") as (human, clock_port, _):
        assert human.startswith("serving tcp ") and human.rstrip().endswith(
            f" clock_port={clock_port}"
        )
        assert not _udp_port_free(clock_port)
        estimate = await estimate_offset("127.0.0.1", clock_port)
    _within_its_bound_of_zero(estimate)
    assert estimate.replies == 32
    assert _udp_port_free(clock_port)  # closed when serve stopped


def test_a_clock_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*CLI, "serve", "tcp", "--port", "0", "--clock-port", str(port), "--ready-json"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stdout == ""  # never announced
    assert done.stderr.splitlines() == [
        f"python -m transports: --clock-port: UDP port {port} on 127.0.0.1 is in use"
    ]


def test_a_clock_port_out_of_range_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [*CLI, "serve", "tcp", "--port", "0", "--clock-port", "70000"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "python -m transports: --clock-port must be 0-65535, got 70000"
    ]


def test_a_server_without_a_clock_port_announces_as_before() -> None:
    plain = Announcement(Ready("tcp", "127.0.0.1", 8890, "9f2c", 7)).encode()
    assert plain == (
        '{"ready":{"transport":"tcp","host":"127.0.0.1","port":8890,"epoch":"9f2c","pid":7}}'
    )
    clocked = Announcement(Ready("tcp", "127.0.0.1", 8890, "9f2c", 7, clock_port=9000))
    assert clocked.encode().endswith(',"pid":7,"clock_port":9000}}')
    assert parse_announcement(clocked.encode()) == clocked


# -- a client worker reading latencies on the server's clock --------------------------------


def _job(port: int, clock_port: int | None) -> ClientJob:
    return ClientJob(
        transport="tcp",
        host="127.0.0.1",
        port=port,
        groups=(ClientGroup(2),),
        settings=EXPERIMENT_SETTINGS,
        count=100,
        connect_timeout_s=10.0,
        clock_port=clock_port,
    )


def _p50_ms(result: WorkerResult) -> float:
    merged = merge(result.latency.values())
    assert merged is not None
    return summarize(merged).p50_ms


@pytest.mark.timeout(90)
async def test_a_worker_given_the_clock_port_reports_its_offset_within_bound_of_zero() -> None:
    server = ServerProcess("tcp", rate_hz=500.0, settings=EXPERIMENT_SETTINGS, clock=True)
    async with server:
        assert server.clock_port is not None
        async with ClientProcess(_job(server.port, server.clock_port)) as worker:
            result = await worker.result(timeout_s=30.0)
    await settle_teardowns()
    assert result.clock is not None
    _within_its_bound_of_zero(result.clock)
    assert result.clock.exchanges == result.clock.replies == 32
    assert [c.received for c in result.clients] == [100, 100]
    # The result crosses the process boundary with its offset.
    line = decode_line(encode(result))
    assert isinstance(line, WorkerResult) and line.clock == result.clock


@pytest.mark.timeout(90)
async def test_a_worker_reads_latencies_on_the_servers_clock() -> None:
    """A clock endpoint 2 s ahead of this host's clock stands for a server host whose clock
    is: every latency the worker records moves by the offset it measured."""
    skew_ns = 2_000_000_000
    server = ServerProcess("tcp", rate_hz=500.0, settings=EXPERIMENT_SETTINGS)
    async with server, _replying(_Replies(skew_ns)) as ahead:
        assert server.clock_port is None  # not asked for one
        async with ClientProcess(_job(server.port, ahead)) as worker:
            skewed = await worker.result(timeout_s=30.0)
        async with ClientProcess(_job(server.port, None)) as worker:
            plain = await worker.result(timeout_s=30.0)
    await settle_teardowns()
    assert plain.clock is None
    assert skewed.clock is not None
    assert abs(skewed.clock.offset_ns - skew_ns) <= skewed.clock.bound_ns, skewed.clock
    # Loopback latencies are well under a second: with the offset, each is 2 s more.
    assert _p50_ms(plain) < 1_000.0
    assert 2_000.0 <= _p50_ms(skewed) < 3_000.0


# -- across an emulated network path ---------------------------------------------------------


@pytest.mark.network
@NEEDS_NETWORK_PATHS
@pytest.mark.timeout(60)
async def test_across_an_emulated_wan_the_estimate_holds_within_its_wider_bound() -> None:
    """The server in its namespace, the probes from a client's (a socket made there): over
    the 40 ms path the bound widens to half its round trip, and zero stays within it."""
    async with NetworkPath("wan") as path:
        ns = path.client_ns[0]
        server = clocked_tcp_server_on(path, 100.0)
        await server.start()
        try:
            assert server.clock_port is not None
            estimate = await estimate_offset(
                path.server_addr,
                server.clock_port,
                exchanges=8,
                sock=lambda: path.socket(ns, kind=socket.SOCK_DGRAM),
            )
        finally:
            await server.stop()
    _within_its_bound_of_zero(estimate)
    assert estimate.replies == 8
    assert estimate.rtt_ns >= 36_000_000  # the path's 40 ms, less a tenth for the delay line
