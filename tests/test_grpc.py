"""grpc specifics: the generated code, the wire mapping, keepalive, limits, hostile HTTP/2 peers.

The pure pieces (messages, tokens, status codes, channel arguments, the HTTP/2 answer reader)
are tested without sockets; the rest on real loopback sockets, servers on port 0. What every
transport must do (resume, restart, black hole, hostile bytes) is the contract suite's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import hpack
import psutil
import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, SettingsFrame

from experiments.faults.hostile import (
    describe_answer,
    endless_head,
    is_refusal,
    request_head,
    slowloris,
    target_of,
)
from experiments.faults.http2_peers import grpc_message, request, subscribe
from experiments.faults.proxy import FaultProxy
from model.errors import (
    BadResumeToken,
    ConnectionLost,
    FrameTooLarge,
    MalformedSample,
    NotThisProtocol,
    PeerSilent,
    ProtocolError,
    ServerRefused,
    ServerUnavailable,
    StreamError,
    SubscriberOverflow,
    TooManyConnections,
)
from model.sample import Sample
from tests.support import EPOCH, FAST, make_samples, running_server, serving, wait_until
from transports.grpc_stream import GRPC, GrpcServer, connect
from transports.grpc_wire import (
    PATH,
    SHUTDOWN,
    channel_args,
    read_request,
    refusal,
    sample_message,
    sample_of,
    server_args,
    stream_error,
    token_message,
)
from transports.limits import HEADROOM
from transports.options import NoOptions
from transports.proto import transportbench_pb2 as pb
from transports.proto import transportbench_pb2_grpc as pb_grpc
from transports.proto.regenerate import GENERATED, ROOT, generate
from transports.registry import TRANSPORTS
from transports.resume import ResumeToken
from transports.settings import Settings

OPTIONS = NoOptions()
#: No keepalive unless a test asks for it: a test's connections live as long as it says.
QUIET = Settings(heartbeat_s=0, dead_after_s=None, connect_timeout_s=2.0)
StatusCode = grpc.StatusCode


# -- the generated code -------------------------------------------------------------------------


def test_the_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """Stale generated code fails here: run ``nox -s proto`` and commit what it writes."""
    try:
        written = generate(tmp_path)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"protoc failed: {exc.stderr}")
    for fresh, path in zip(written, GENERATED, strict=True):
        committed = ROOT / path
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"{path} is stale: regenerate with `nox -s proto` (grpcio-tools and mypy-protobuf "
            "at the versions pyproject's test extra pins)"
        )


def test_the_service_is_the_one_the_design_names() -> None:
    method = pb.DESCRIPTOR.services_by_name["Stream"].methods_by_name["Subscribe"]
    assert PATH == "/transportbench.Stream/Subscribe"
    assert (method.input_type.name, method.output_type.name) == ("ResumeToken", "Sample")
    assert method.server_streaming and not method.client_streaming
    # The same four fields as the model's sample, by name.
    assert [f.name for f in pb.Sample.DESCRIPTOR.fields] == list(Sample.__struct_fields__)


# -- messages and tokens (pure) -----------------------------------------------------------------


def test_samples_round_trip_through_their_message() -> None:
    for sample in [*make_samples(0, 3), Sample("ab" * 32, 2**63 - 1, 1, 2**64 - 1)]:
        assert sample_of(pb.Sample.FromString(sample_message(sample).SerializeToString())) == (
            sample
        )


@pytest.mark.parametrize(
    "message",
    [
        pb.Sample(epoch=EPOCH, seq=1, value=2, sent_ns=1),
        pb.Sample(epoch="", seq=1, value=1, sent_ns=1),
        pb.Sample(epoch="C0FFEE", seq=1, value=1, sent_ns=1),
        pb.Sample(epoch="a" * 65, seq=1, value=1, sent_ns=1),
        pb.Sample(epoch=EPOCH, seq=2**63, value=0, sent_ns=1),
    ],
    ids=["value 2", "no epoch", "upper-case epoch", "long epoch", "seq past int64"],
)
def test_a_malformed_sample_message_is_refused(message: pb.Sample) -> None:
    with pytest.raises(MalformedSample):
        sample_of(message)


@pytest.mark.parametrize("token", [None, ResumeToken(EPOCH, -1), ResumeToken(EPOCH, 42)])
def test_the_resume_token_travels_in_the_request(token: ResumeToken | None) -> None:
    got = read_request(token_message(token).SerializeToString())
    assert (got.token, got.error) == (token, None)


def test_no_token_is_the_empty_request() -> None:
    assert token_message(None).SerializeToString() == b""


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (pb.ResumeToken(since=7).SerializeToString(), BadResumeToken),
        (pb.ResumeToken(epoch="zz", since=1).SerializeToString(), BadResumeToken),
        (pb.ResumeToken(epoch=EPOCH, since=-2).SerializeToString(), BadResumeToken),
        (b"\xff" * 8, ProtocolError),
    ],
    ids=["since without epoch", "epoch not hex", "since below -1", "not protobuf"],
)
def test_a_malformed_request_is_read_as_an_error_not_raised(
    data: bytes, error: type[ProtocolError]
) -> None:
    got = read_request(data)
    assert got.token is None and isinstance(got.error, error)


# -- status codes (pure) ------------------------------------------------------------------------


def test_refusals_carry_the_shared_texts() -> None:
    assert refusal(TooManyConnections("connection limit 3 reached")) == (
        StatusCode.RESOURCE_EXHAUSTED,
        "server full: connection limit 3 reached",
    )
    assert refusal(SubscriberOverflow("fell behind"))[0] is StatusCode.RESOURCE_EXHAUSTED
    assert refusal(BadResumeToken("no"))[0] is StatusCode.INVALID_ARGUMENT
    assert refusal(StreamError("?"))[0] is StatusCode.INTERNAL
    assert SHUTDOWN == (StatusCode.UNAVAILABLE, "server shutting down")


@pytest.mark.parametrize(
    ("code", "details", "connecting", "expected"),
    [
        (StatusCode.RESOURCE_EXHAUSTED, "server full: connection limit 3 reached", True,
         ServerRefused),
        (StatusCode.RESOURCE_EXHAUSTED, "slow consumer: fell behind", False, ServerRefused),
        (StatusCode.INVALID_ARGUMENT, "bad resume token: epoch must be hex", True,
         ServerRefused),
        (StatusCode.UNAVAILABLE, "server shutting down", False, ConnectionLost),
        (StatusCode.UNAVAILABLE, "Stream removed (ping timeout)", False, PeerSilent),
        (StatusCode.UNAVAILABLE, "keepalive watchdog timeout", False, PeerSilent),
        (StatusCode.UNAVAILABLE, "failed to connect to all addresses", True, ServerUnavailable),
        (StatusCode.UNAVAILABLE, "Socket closed", False, ConnectionLost),
        (StatusCode.CANCELLED, "Received RST_STREAM with error code 8", False, ConnectionLost),
        (StatusCode.RESOURCE_EXHAUSTED, "CLIENT: Received message larger than max (9 vs. 8)",
         False, FrameTooLarge),
        (StatusCode.UNIMPLEMENTED, "Method not found!", True, NotThisProtocol),
        (StatusCode.UNAVAILABLE, "Trying to connect an http1.x server (HTTP status 400)", True,
         NotThisProtocol),
        (StatusCode.UNAVAILABLE,
         "Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, got frame type "
         "114)", True, NotThisProtocol),
        (StatusCode.INTERNAL, "Received RST_STREAM with error code 1", False, ProtocolError),
        (StatusCode.PERMISSION_DENIED, "not you", True, ServerRefused),
    ],
)  # fmt: skip
def test_a_status_is_sorted_into_the_shared_errors(
    code: StatusCode, details: str, connecting: bool, expected: type[StreamError]
) -> None:
    error = stream_error(code, details, connecting=connecting)
    assert type(error) is expected, error
    assert details in str(error)


def test_channel_arguments_carry_the_shared_settings() -> None:
    settings = Settings(heartbeat_s=2.0, dead_after_s=6.0, header_timeout_s=3.0)
    server, client = dict(server_args(settings)), dict(channel_args(settings))
    for args in (server, client):
        assert args["grpc.keepalive_time_ms"] == 2000
        assert args["grpc.keepalive_timeout_ms"] == args["grpc.http2.ping_timeout_ms"] == 6000
        assert args["grpc.keepalive_permit_without_calls"] == 1
        assert args["grpc.http2.max_pings_without_data"] == 0
        assert args["grpc.max_receive_message_length"] == settings.max_message_bytes
    assert server["grpc.http2.min_ping_interval_without_data_ms"] == 1000
    assert server["grpc.server_handshake_timeout_ms"] == 3000
    assert server["grpc.so_reuseport"] == 0
    assert client["grpc.use_local_subchannel_pool"] == 1
    quiet = dict(channel_args(Settings(heartbeat_s=0)))
    assert not [key for key in quiet if "keepalive" in key or "ping" in key]


# -- what a hostile peer gets back, in words (pure) ---------------------------------------------


def _server_frames(*fields: tuple[str, str], goaway: bytes | None = None) -> bytes:
    frames = SettingsFrame(0).serialize()
    if fields:
        block = hpack.Encoder().encode(list(fields))
        frames += HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    if goaway is not None:
        frames += GoAwayFrame(0, error_code=11, additional_data=goaway).serialize()
    return frames


def test_an_http2_answer_is_read_back_into_words() -> None:
    full = _server_frames(
        (":status", "200"),
        ("grpc-status", "8"),
        ("grpc-message", "server full: connection limit 64 reached"),
    )
    described = describe_answer(full, "left open after 1 s")
    assert described == (
        "HTTP/2 grpc-status 8 RESOURCE_EXHAUSTED 'server full: connection limit 64 reached'; "
        "left open after 1 s"
    )
    assert is_refusal(described)
    calm = describe_answer(_server_frames(goaway=b"too_many_pings"), "closed")
    assert calm == "HTTP/2 GOAWAY ENHANCE_YOUR_CALM 'too_many_pings'; closed"
    assert not is_refusal(calm)
    assert describe_answer(_server_frames(), "closed") == "HTTP/2 SETTINGS only; closed"
    # Cut mid-frame by the read limit: what arrived whole is still read.
    assert describe_answer(full[:-3], "closed") == "HTTP/2 SETTINGS only; closed"


# -- on sockets ---------------------------------------------------------------------------------


def _server(
    settings: Settings = QUIET, held: int = 0
) -> contextlib.AbstractAsyncContextManager[GrpcServer]:
    return serving(GrpcServer, settings, OPTIONS, held=held)


async def _first(port: int, settings: Settings = QUIET, token: ResumeToken | None = None) -> Sample:
    async with asyncio.timeout(10), connect("127.0.0.1", port, token, settings, OPTIONS) as s:
        return await anext(aiter(s))


async def _raw(port: int, payload: bytes, wait_s: float = 2.0) -> str:
    """Send ``payload`` on a plain socket; what came back within ``wait_s``, in words."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data, ending = b"", f"left open after {wait_s:g} s"
    try:
        writer.write(payload)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                while chunk := await reader.read(65536):
                    data += chunk
                ending = "closed"
    except ConnectionResetError:
        ending = "reset"
    finally:
        writer.close()
    return describe_answer(data, ending)


@pytest.mark.parametrize(
    ("token", "first_seq"),
    [(None, 10), (ResumeToken(EPOCH, 3), 4), (ResumeToken("beef", 3), 0)],
    ids=["none: live only", "same epoch: next seq", "other epoch: oldest held"],
)
async def test_the_request_token_places_the_stream(
    token: ResumeToken | None, first_seq: int
) -> None:
    async with _server(held=10) as server:
        if token is None:
            async with (
                asyncio.timeout(10),
                connect("127.0.0.1", server.port, None, QUIET, OPTIONS) as samples,
            ):
                server.hub.publish(make_samples(10, 12))
                assert await anext(aiter(samples)) == make_samples(10, 11)[0]
        else:
            assert (await _first(server.port, token=token)).seq == first_seq


async def test_the_generated_stub_reads_the_transport() -> None:
    """Any gRPC client of the .proto reads the server: here the stub protoc generated."""
    async with _server(held=5) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = pb_grpc.StreamStub(channel).Subscribe(pb.ResumeToken(epoch=EPOCH, since=1))
            got = [sample_of(await anext(aiter(call))) for _ in range(3)]
            call.cancel()
    assert got == make_samples(2, 5)


async def test_a_request_over_the_message_limit_is_refused() -> None:
    settings = QUIET.with_changes(max_message_bytes=4096)
    async with _server(settings) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = pb_grpc.StreamStub(channel).Subscribe(pb.ResumeToken(epoch="a" * 5000))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await anext(aiter(call))
    assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED
    error = stream_error(caught.value.code(), caught.value.details() or "", connecting=True)
    assert isinstance(error, FrameTooLarge)


async def test_the_connection_limit_refuses_a_newcomer_in_words() -> None:
    settings = QUIET.with_changes(max_connections=2)
    async with _server(settings, held=1) as server, contextlib.AsyncExitStack() as held:
        for _ in range(2):
            await held.enter_async_context(
                connect("127.0.0.1", server.port, None, settings, OPTIONS)
            )
        with pytest.raises(ServerRefused, match="RESOURCE_EXHAUSTED: server full"):
            await _first(server.port, settings)
        # The same refusal as a raw HTTP/2 peer reads it (the bad-input scenario's newcomer).
        assert is_refusal(await _raw(server.port, subscribe("127.0.0.1", server.port, PATH), 1))


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        (
            subscribe("127.0.0.1", 1, PATH, pb.ResumeToken(epoch="zz").SerializeToString()),
            'grpc-status 3 INVALID_ARGUMENT "bad resume token:',
        ),
        (subscribe("127.0.0.1", 1, PATH, b"\xff" * 8), 'INVALID_ARGUMENT "protocol error:'),
        (subscribe("127.0.0.1", 1, "/transportbench.Stream/Nope"), "UNIMPLEMENTED"),
        (
            request("127.0.0.1", 1, PATH, grpc_message(b"x", 2 << 20)),
            "RESOURCE_EXHAUSTED 'SERVER: Received message larger than max",
        ),
    ],
    ids=["bad token", "not protobuf", "unknown method", "message prefix over the limit"],
)
async def test_a_bad_request_gets_a_status_in_words_and_others_go_on(
    payload: bytes, answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(GRPC, QUIET, rate_hz=500) as server:
        async with connect("127.0.0.1", server.port, None, QUIET, OPTIONS) as samples:
            stream = aiter(samples)
            await anext(stream)
            assert answer in await _raw(server.port, payload, 1.0)
            async with asyncio.timeout(10):
                for _ in range(20):
                    await anext(stream)
    # A peer's bytes never make grpc log a traceback ("Unexpected ... raised by servicer").
    assert not [r for r in caplog.records if r.exc_info], caplog.text


async def test_a_client_of_another_protocol_is_told_so_at_once() -> None:
    for name in ("tcp", "sse"):
        async with running_server(TRANSPORTS[name], FAST, rate_hz=50) as other:
            with pytest.raises(NotThisProtocol):
                await _first(other.port)


async def test_nobody_there_is_server_unavailable(unused_port: int) -> None:
    with pytest.raises(ServerUnavailable):
        await _first(unused_port)


async def test_stop_ends_every_call_with_unavailable_shutting_down() -> None:
    async with _server(held=3) as server:
        async with connect("127.0.0.1", server.port, ResumeToken(EPOCH, -1), QUIET, OPTIONS) as s:
            stream = aiter(s)
            await anext(stream)
            await server.stop()
            with pytest.raises(ConnectionLost, match="server shutting down"):
                async with asyncio.timeout(10):
                    while True:
                        await anext(stream)


async def test_a_second_server_on_the_same_port_fails_to_bind() -> None:
    async with _server() as server:
        second = GrpcServer(server.hub, "127.0.0.1", server.port, QUIET, OPTIONS)
        with pytest.raises(OSError) as caught:
            await second.start()
    assert caught.value.errno == errno.EADDRINUSE


async def test_keepalive_notices_a_black_hole_on_both_sides() -> None:
    settings = Settings(heartbeat_s=0.3, dead_after_s=1.0, connect_timeout_s=2.0)
    limit = settings.heartbeat_s + (settings.dead_after_s or 0) + 2.0
    async with running_server(GRPC, settings, rate_hz=200) as server:
        proxy = FaultProxy("127.0.0.1", server.port)
        await proxy.start()
        try:
            async with connect("127.0.0.1", proxy.port, None, settings, OPTIONS) as samples:
                stream = aiter(samples)
                await anext(stream)
                proxy.blackhole()
                started = time.monotonic()
                with pytest.raises(PeerSilent, match="ping timeout"):
                    async with asyncio.timeout(limit + 5):
                        while True:
                            await anext(stream)
                client_s = time.monotonic() - started
            # The server's own pings go unanswered too: it closes its side of the proxy.
            await wait_until(lambda: bool(proxy.upstream_closed_ns), limit + 5, "server side")
        finally:
            await proxy.stop()
    assert client_s < limit


async def test_idle_and_dripping_connections_are_cut_at_the_header_timeout() -> None:
    # No keepalive: its pings would close an idle peer first.
    settings = QUIET.with_changes(header_timeout_s=1.0)
    async with _server(settings) as server:
        target = target_of(GRPC, "127.0.0.1", server.port)
        started = time.monotonic()
        assert (await _raw(server.port, b"", 5.0)).endswith("closed")
        idle_s = time.monotonic() - started
        dripped = await slowloris(target, endless_head("grpc", target), 0.1, 5.0)
    assert 0.9 <= idle_s < 2.5
    assert dripped.startswith(("closed after", "reset after")), dripped
    assert 0.9 <= float(dripped.split(" after ")[1].split(" s")[0]) < 2.5, dripped


async def test_a_raw_subscriber_gets_samples() -> None:
    """The bad-input scenario's well-formed opening really subscribes."""
    async with running_server(GRPC, QUIET, rate_hz=500) as server:
        target = target_of(GRPC, "127.0.0.1", server.port)
        answered = await _raw(server.port, request_head("grpc", target), 1.0)
    assert answered.startswith("HTTP/2 :status 200, ") and "DATA frames" in answered


@contextlib.contextmanager
def _serve_with_few_descriptors() -> Iterator[tuple[subprocess.Popen[str], int]]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    proc = subprocess.Popen(
        [sys.executable, "-m", "transports", "serve", "grpc", "--port", "0", "--rate", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    try:
        assert proc.stdout is not None
        start = proc.stdout.readline()
        assert start.startswith("serving grpc"), start
        assert f"max_connections={256 - HEADROOM}" in start, start
        yield proc, int(start.split(" on ")[1].split()[0].rsplit(":", 1)[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            proc.kill()


async def test_out_of_descriptors_grpc_rests_then_serves_again() -> None:
    """grpc accepts in its own core: out of fds it retries once a second, one line each."""
    with _serve_with_few_descriptors() as (proc, port):
        server = psutil.Process(proc.pid)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        try:
            await wait_until(lambda: server.num_fds() >= 250, 10, "no fds left")
            server.cpu_percent(None)
            await asyncio.sleep(2.0)  # a measuring window, not a synchronisation
            cpu = server.cpu_percent(None)
        finally:
            for sock in idle:
                sock.close()
        assert (await _first(port, Settings(connect_timeout_s=5.0))).epoch
        proc.terminate()
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert cpu < 30, f"grpc spun at {cpu:.0f}% CPU while out of descriptors"
    assert "Traceback" not in log, log[:2000]
    assert len(log.splitlines()) <= 8, log[:2000]


#: A stub channel with a small, fixed receive window: it buffers little for a call it does
#: not read (grpc's default grows the window to megabytes).
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16_384)]


@contextlib.asynccontextmanager
async def _stub_call(
    port: int,
) -> AsyncIterator[grpc.aio.UnaryStreamCall[pb.ResumeToken, pb.Sample]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=SMALL_WINDOW) as channel:
        call = pb_grpc.StreamStub(channel).Subscribe(pb.ResumeToken())
        try:
            yield call
        finally:
            call.cancel()


async def test_a_subscriber_the_hub_cuts_is_told_slow_consumer() -> None:
    # A stub that never reads: grpc's flow control stops the server's writes once the
    # stream's window is full, the hub cuts the subscriber, and the status follows the
    # write that was pending.
    settings = QUIET.with_changes(queue_size=200)
    async with running_server(GRPC, settings, rate_hz=5_000) as server:
        async with _stub_call(server.port) as call:
            await call.initial_metadata()
            await wait_until(lambda: server.hub.cut_count >= 1, 20, "the hub to cut it")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(20):
                    async for _ in call:
                        pass
    assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED
    assert (caught.value.details() or "").startswith("slow consumer:")
