"""The client against servers that refuse, speak something else, storm or bomb it (issue 15).

Fake servers are asyncio servers on port 0 in this process; ``listen`` runs as the real
command line in a subprocess, several at once, each wait bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import struct
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from model.errors import NotThisProtocol
from model.posterior import MAX_GAPS, RECENT_EPOCHS, BetaBinomial
from model.sample import Sample
from model.seqset import SeqSet
from tests.support import FAST, running_server, wait_until
from transports.client import ClientEvent, Connected, ConnectFailed, Disconnected, StreamClient
from transports.failures import printable
from transports.registry import get

CLI = [sys.executable, "-m", "transports"]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: Quick retries, quick handshakes: a listen with --wait 1 makes several attempts.
QUICK = ["--set", "backoff_base_s=0.02", "--set", "backoff_cap_s=0.2"]
QUICK += ["--set", "connect_timeout_s=0.5"]
#: ESC [2J clears a terminal; a server's text must never reach one raw.
ESCAPE = "\x1b[2J"


@contextlib.asynccontextmanager
async def fake(handle: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


def answering(response: bytes) -> Handler:
    """Read an HTTP request head, send ``response``, close."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await _head(reader)
            writer.write(response)
            await writer.drain()
        writer.close()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer (a handshake that never completes)."""
    with contextlib.suppress(Exception):
        await reader.read()
    writer.close()


def tcp_error_line(text: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readline(), 10)
            writer.write(json.dumps({"error": text}).encode() + b"\n")
            await writer.drain()
        writer.close()

    return handle


async def ws_close_1013(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Complete a WebSocket handshake, then close with 1013 and a hostile reason."""
    with contextlib.suppress(Exception):
        head = (await _head(reader)).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(key.encode() + guid).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        payload = struct.pack("!H", 1013) + f"server full{ESCAPE}".encode()
        writer.write(bytes([0x88, len(payload)]) + payload)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
    writer.close()


def http(status: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True)
class Listened:
    code: int | None
    out: str
    err: str
    seconds: float


async def listen(name: str, port: int, *args: str, timeout: float = 30) -> Listened:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "listen",
        name,
        "--port",
        str(port),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Listened(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


# (transport, the fake server, what stderr says once)
REFUSALS: dict[str, tuple[str, Handler, str]] = {
    "ws-503": (
        "tornado-ws",
        answering(http("503 Service Unavailable", "text/plain", b"server full\n")),
        "refuses",
    ),
    "ws-1013": ("tornado-ws", ws_close_1013, "refuses"),
    "ws-no-handshake": ("tornado-ws", silent, "no server at"),
    "sse-503": (
        "sse",
        answering(http("503 Service Unavailable", "text/plain", f"full{ESCAPE}".encode())),
        "refuses",
    ),
    "poll-404": ("poll", answering(http("404 Not Found", "text/plain", b"nope")), "refuses"),
    "tcp-full": ("tcp", tcp_error_line(f"server full{ESCAPE}"), "refuses"),
}


async def test_listen_says_once_what_fails_and_gives_up_after_wait() -> None:
    """Each failure kind is said once (not per attempt), then exit 2 at --wait, no traceback.

    Before: everything but a refused TCP connect was retried forever as "no server ... yet",
    and server text (close reasons, bodies, error lines) reached the terminal raw."""
    async with contextlib.AsyncExitStack() as stack:
        runs = []
        for name, handle, _ in REFUSALS.values():
            port = await stack.enter_async_context(fake(handle))
            runs.append(listen(name, port, "--wait", "1.5", *QUICK))
        results = await asyncio.gather(*runs)
    for (case, (_, _, said)), got in zip(REFUSALS.items(), results, strict=True):
        assert got.code == 2, (case, got)
        assert "Traceback" not in got.err, (case, got.err)
        lines = got.err.splitlines()
        assert sum(said in line for line in lines) == 1, (case, got.err)  # once, not per try
        assert "no sample from" in lines[-1] and "within 1.5 s" in lines[-1], (case, got.err)
        assert "\x1b" not in got.err, (case, got.err)
        assert got.seconds < 15, (case, got.seconds)
    assert "\\x1b[2J" in results[list(REFUSALS).index("ws-1013")].err


async def test_not_this_protocol_fails_fast_in_one_line() -> None:
    """A 200 to the upgrade (a 29-line traceback before), another Content-Type, tcp at the
    SSE port, sse at the tcp port, poll at a line server: exit 2 at once, one line."""
    html = http("200 OK", "text/html", b"<html>hello</html>")
    async with contextlib.AsyncExitStack() as stack:
        sse = await stack.enter_async_context(running_server(get("sse"), FAST, rate_hz=10))
        tcp = await stack.enter_async_context(running_server(get("tcp"), FAST, rate_hz=10))
        ws_200 = await stack.enter_async_context(fake(answering(html)))
        sse_html = await stack.enter_async_context(fake(answering(html)))
        poll_lines = await stack.enter_async_context(fake(tcp_error_line("no")))
        cases = {
            "ws-200": listen("tornado-ws", ws_200, "--wait", "20"),
            "sse-html": listen("sse", sse_html, "--wait", "20"),
            "tcp-at-sse": listen("tcp", sse.port, "--wait", "20"),
            "sse-at-tcp": listen("sse", tcp.port, "--wait", "20"),
            "poll-at-lines": listen("poll", poll_lines, "--wait", "20"),
        }
        results = dict(zip(cases, await asyncio.gather(*cases.values()), strict=True))
    for case, got in results.items():
        assert got.code == 2, (case, got)
        assert "Traceback" not in got.err, (case, got.err)
        (line,) = got.err.splitlines()
        assert "does not speak" in line, (case, line)
        assert got.seconds < 10, (case, got.seconds)  # not the 20 s wait


async def test_accept_and_close_is_retried_on_the_backoff_schedule() -> None:
    """A server that accepts and closes at once: attempts stay bounded by the backoff.

    Before: the backoff reset after every handshake, ~19 reconnects a second forever."""

    async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    events: list[ClientEvent] = []
    settings = FAST.with_changes(backoff_base_s=0.05, backoff_cap_s=0.8)
    window_s = 2.0
    async with fake(accept_and_close) as port:
        client = StreamClient(get("tcp"), "127.0.0.1", port, settings, on_event=events.append)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(window_s), contextlib.aclosing(client.__aiter__()) as it:
                async for _ in it:
                    raise AssertionError("no sample was sent")
    attempts = [e.attempt for e in events if isinstance(e, Connected | ConnectFailed)]
    # Full jitter, ceilings 0.05, 0.1, 0.2, 0.4, 0.8, 0.8 ...: about 8 attempts in 2 s.
    assert 3 <= len(attempts) <= 20, attempts
    assert attempts == list(range(1, len(attempts) + 1))
    assert client.attempts == len(attempts)
    ends = [e for e in events if isinstance(e, Disconnected)]
    assert ends and all(e.samples == 0 and e.kind == "lost" for e in ends)
    print(f"accept-and-close: {len(attempts) / window_s:.1f} attempts/s")


async def test_a_healthy_connection_resets_the_backoff() -> None:
    """After a stream that ran, a restart is retried from the base delay again (the storm
    rule above must not slow down recovery from real faults)."""
    events: list[ClientEvent] = []
    async with running_server(get("tcp"), FAST, rate_hz=500) as server:
        client = StreamClient(get("tcp"), "127.0.0.1", server.port, FAST, on_event=events.append)
        received = 0
        async with asyncio.timeout(20), contextlib.aclosing(client.__aiter__()) as samples:
            async for _ in samples:
                received += 1
                if received in (50, 100):
                    await server.restart()
                if received == 150:
                    break
    assert client.connection >= 3
    assert client._backoff.attempt <= 1


async def test_the_wait_bounds_a_server_that_accepts_and_sends_nothing() -> None:
    """Connected but no sample: --wait still ends it (WaitExpired), long before the
    dead-peer timeout."""
    async with fake(silent) as port:
        got = await listen("tcp", port, "--wait", "1", "--set", "dead_after_s=30")
    assert got.code == 2 and "Traceback" not in got.err
    assert "no sample from" in got.err.splitlines()[-1]
    assert got.seconds < 10


def _bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzip-compressed (about a thousandth of the size)."""
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [gz.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(parts) + gz.flush()


#: Runs a command and prints its exit code and peak RSS (KiB on Linux). A small process of its
#: own: a child forked from pytest counts pytest's pages in its ru_maxrss until it execs.
_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


async def _peak_rss(name: str, port: int) -> tuple[int, int]:
    """Run ``listen`` to its end; its exit code and peak RSS (bytes)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _MEASURE,
        *CLI,
        "listen",
        name,
        "--port",
        str(port),
        "--wait",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()  # the child dies with its parent's pipe, or at the fake's close
            await proc.wait()
    code, kib = out.split()
    return int(code), int(kib) * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")
async def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    """256 MiB of zeros in 256 KB of gzip, sent although identity was asked for: refused,
    client memory bounded. Before: the SSE client reached 1.2 GiB and the poller 2.1 GiB on
    a 1 GiB bomb."""
    bomb = _bomb(256 << 20)
    asked: list[bytes] = []

    def bombing(content_type: str) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                asked.append(await _head(reader))
                writer.write(http("200 OK", content_type, bomb, "Content-Encoding: gzip\r\n"))
                await writer.drain()
            writer.close()

        return handle

    async with fake(bombing("text/event-stream")) as sse, fake(bombing("application/json")) as poll:
        (sse_code, sse_rss), (poll_code, poll_rss) = await asyncio.gather(
            _peak_rss("sse", sse), _peak_rss("poll", poll)
        )
    print(f"peak RSS under a 256 MiB gzip bomb: sse {sse_rss >> 20} MiB, poll {poll_rss >> 20} MiB")
    assert (sse_code, poll_code) == (2, 2)  # not this protocol: one line, exit 2
    assert sse_rss < 150 << 20 and poll_rss < 150 << 20
    assert asked and all(b"accept-encoding: identity" in head.lower() for head in asked)


async def test_the_clients_refuse_a_compressed_answer() -> None:
    body = zlib.compress(b"[]")
    for name, content_type in (("sse", "text/event-stream"), ("poll", "application/json")):
        response = http("200 OK", content_type, body, "Content-Encoding: deflate\r\n")
        async with fake(answering(response)) as port:
            transport = get(name)
            settings = transport.settings(FAST)
            with pytest.raises(NotThisProtocol, match="deflate"):
                async with transport.connect("127.0.0.1", port, None, settings, transport.options):
                    pass


async def test_a_refusal_before_any_sample_is_reported_with_its_kind() -> None:
    events: list[ClientEvent] = []
    response = http("503 Service Unavailable", "text/plain", b"server full")
    async with fake(answering(response)) as port:
        client = StreamClient(get("sse"), "127.0.0.1", port, FAST, on_event=events.append)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5), contextlib.aclosing(client.__aiter__()) as it:
                async for _ in it:
                    pass
    failed = [e for e in events if isinstance(e, ConnectFailed)]
    assert failed and {e.kind for e in failed} == {"refused"}
    assert "HTTP 503" in failed[0].reason


def test_the_posterior_remembers_a_bounded_number_of_epochs() -> None:
    """A server that changes epoch on every sample: memory stays flat.

    Before: one SeqSet per epoch, 70-100 MB for such a server over a run."""
    posterior = BetaBinomial()
    tracemalloc.start()
    try:
        posterior.update(Sample("a0", 0, 1, 0))
        base, _ = tracemalloc.get_traced_memory()
        for i in range(100_000):
            posterior.update(Sample(f"{i:x}", 0, i & 1, 0))
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"posterior growth over 100,000 epochs: {(grown - base) / 1024:.0f} KiB")
    assert posterior.epochs_remembered == RECENT_EPOCHS
    assert grown - base < 256 * 1024
    assert posterior.successes + posterior.failures == 100_001
    # The recent epochs still de-duplicate; the current one always does.
    assert not posterior.update(Sample(f"{99_999:x}", 0, 1, 0))
    # An evicted epoch is forgotten: its sample counts again (documented).
    assert posterior.update(Sample("a0", 0, 1, 0))


def test_a_return_to_a_recent_epoch_keeps_it_remembered() -> None:
    posterior = BetaBinomial()
    posterior.update(Sample("aa", 0, 1, 0))
    for i in range(RECENT_EPOCHS - 1):
        posterior.update(Sample(f"b{i:x}", 0, 1, 0))
        posterior.update(Sample("aa", i + 1, 1, 0))  # still in use: never the oldest
    posterior.update(Sample("cc", 0, 1, 0))
    assert not posterior.update(Sample("aa", 0, 1, 0))


def test_gaps_within_an_epoch_are_bounded() -> None:
    seen = SeqSet(MAX_GAPS)
    for seq in range(0, 4 * MAX_GAPS, 2):
        assert seen.add(seq)
    assert len(seen.intervals()) == MAX_GAPS
    assert 4 * MAX_GAPS - 2 in seen and 4 * MAX_GAPS - 3 not in seen
    assert 1 in seen  # the oldest gaps were filled: a late seq there reads as a duplicate


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("server full", "server full"),
        ("full\x1b[2J\x1b]0;pwned\x07", "full\\x1b[2J\\x1b]0;pwned\\x07"),
        ("a\rb\nc\x08", "a\\x0db\\x0ac\\x08"),
        ("right\u202eleft", "right\\u202eleft"),
        ("back\\slash", "back\\\\slash"),
        ("α β 🙂", "α β 🙂"),
        ("x" * 1000, "x" * 300 + "…"),
    ],
)
def test_server_text_is_printed_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


async def test_events_count_attempts_until_a_server_appears(unused_port: int) -> None:
    events: list[ClientEvent] = []
    transport = get("tcp")
    client = StreamClient(transport, "127.0.0.1", unused_port, FAST, on_event=events.append)
    samples = client.__aiter__()
    first = asyncio.ensure_future(anext(samples))
    try:
        await wait_until(lambda: len(events) >= 3, 10, "three failed attempts")
        async with running_server(transport, FAST, rate_hz=100) as server:
            # The fixed port is ours again only once the server binds it: move the client.
            client.port = server.port
            async with asyncio.timeout(10):
                await first
    finally:
        first.cancel()
        await samples.aclose()
    failed = [e for e in events if isinstance(e, ConnectFailed)]
    connected = [e for e in events if isinstance(e, Connected)]
    assert [e.attempt for e in failed] == list(range(1, len(failed) + 1))
    assert all(e.kind == "unavailable" for e in failed)
    assert connected[0].attempt == len(failed) + 1
