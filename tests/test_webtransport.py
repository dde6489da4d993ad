"""The webtransport transport: its pure HTTP/3 exchange, then real QUIC on loopback.

The registry-driven suites cover what every transport shares; these cover what is QUIC's
own: the CONNECT verdicts, capsules split at every byte, refusals read by real QUIC peers,
the header timeout, the inbound limit, reader-paced flow control, certificates, and a black
hole through the UDP relay.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from experiments.faults.hostile import CASES, is_refusal, target_of
from experiments.faults.quic_peers import (
    connect_request,
    datagrams,
    garbage_datagrams,
    h3_exchange,
    handshake_ok,
)
from experiments.faults.udp_relay import NotApplicable, UdpFaultProxy
from experiments.network import NetworkPath
from experiments.run.processes import ServerProcess, udp_port_bound
from experiments.run.profiles import EXPERIMENT_SETTINGS
from model.errors import (
    CertificateInvalid,
    FrameTooLarge,
    NotThisProtocol,
    ServerRefused,
)
from tests.support import FAST, NEEDS_NETWORK_PATHS, Receiver, running_server, wait_until
from transports.certs import authority_certificate
from transports.client import Connected, Disconnected
from transports.failures import failure_kind
from transports.origins import OriginPolicy
from transports.resume import ResumeToken
from transports.settings import Settings, SettingsError
from transports.webtransport import WEBTRANSPORT, WebTransportOptions
from transports.webtransport_wire import (
    CapsuleReader,
    Refusal,
    check_response,
    close_capsule,
    connect_headers,
    decode_varint,
    encode_varint,
    judge_connect,
)

HOST = "127.0.0.1"


# -- the pure exchange ------------------------------------------------------------------------


def _request(
    path: str, method: bytes = b"CONNECT", protocol: bytes | None = b"webtransport"
) -> list[tuple[bytes, bytes]]:
    headers = [(b":method", method), (b":scheme", b"https"), (b":authority", b"h:1")]
    headers.append((b":path", path.encode()))
    if protocol is not None:
        headers.append((b":protocol", protocol))
    return headers


def test_connect_headers_round_trip_through_the_judge() -> None:
    for token in (None, ResumeToken("9f2c", 17), ResumeToken("ab", -1)):
        assert judge_connect(connect_headers("h:1", token)) == token


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        (_request("/nowhere"), 404, "not found"),
        (_request("/webtransport", method=b"GET", protocol=None), 405, "method not allowed"),
        (_request("/webtransport", protocol=None), 400, ":protocol must be webtransport"),
        (_request("/webtransport", protocol=b"websocket"), 400, "got b'websocket'"),
        (_request("/webtransport?epoch=zz&since=1"), 400, "bad resume token"),
        (_request("/webtransport?epoch=ab"), 400, "give both epoch and since"),
        (_request("/webtransport?since=1&since=2&epoch=ab"), 400, "more than once"),
    ],
)
def test_bad_requests_are_refused_with_a_status_and_a_reason(
    headers: list[tuple[bytes, bytes]], status: int, says: str
) -> None:
    verdict = judge_connect(headers)
    assert isinstance(verdict, Refusal)
    assert verdict.status == status and says in verdict.text and verdict.text.endswith("\n")


def test_unknown_query_parameters_are_ignored() -> None:
    assert judge_connect(_request("/webtransport?_=1&epoch=ab&since=3")) == ResumeToken("ab", 3)


def test_the_origin_policy_of_every_browser_transport_applies_to_a_connect() -> None:
    """A browser's CONNECT names its page in ``origin``: loopback pages and programs that
    send none are served, others refused with 403 unless ``--allow-origin`` lists them."""
    policy = OriginPolicy.from_settings(Settings())
    token = ResumeToken("ab", 3)

    def judged(origin: str | None, origins: OriginPolicy = policy) -> object:
        headers = connect_headers("127.0.0.1:8896", token)
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        return judge_connect(headers, origins)

    assert judged(None) == token
    assert judged("http://127.0.0.1:8889") == token
    assert judged("https://localhost:5173") == token
    refused = judged("https://evil.example")
    assert isinstance(refused, Refusal) and refused.status == 403
    assert "origin not allowed: 'https://evil.example'" in refused.text
    allowed = OriginPolicy.from_settings(Settings(allow_origins=("https://evil.example",)))
    assert judged("https://evil.example", allowed) == token


def test_scheme_must_be_https() -> None:
    headers = [(k, b"http" if k == b":scheme" else v) for k, v in _request("/webtransport")]
    assert isinstance(judge_connect(headers), Refusal)


@pytest.mark.parametrize(
    ("status", "body", "webtransport", "error"),
    [
        (200, b"", True, None),
        (503, b"server full: connection limit 1 reached\n", True, ServerRefused),
        (404, b"", True, ServerRefused),
        (200, b"", False, NotThisProtocol),
        (301, b"", True, NotThisProtocol),
    ],
)
def test_the_client_reads_the_answer(
    status: int, body: bytes, webtransport: bool, error: type[Exception] | None
) -> None:
    if error is None:
        check_response(status, body, webtransport)
        return
    with pytest.raises(error) as caught:
        check_response(status, body, webtransport)
    if body:
        assert "server full" in str(caught.value)


@pytest.mark.parametrize("value", [0, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**62 - 1])
def test_varints_round_trip_at_every_size_boundary(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))
    assert decode_varint(encoded[:-1]) is None
    with pytest.raises(ValueError):
        encode_varint(2**62)


def test_a_close_capsule_survives_every_split() -> None:
    data = close_capsule(503, "slow consumer: fell behind") + close_capsule(400, "é" * 600)
    for cut in range(len(data) + 1):
        reader = CapsuleReader(4096)
        capsules = reader.feed(data[:cut]) + reader.feed(data[cut:])
        reasons = [c.close_reason() for c in capsules]
        assert reasons[0] == (503, "slow consumer: fell behind")
        code, text = reasons[1] or (0, "")
        # Cut to 1,024 bytes, never inside a UTF-8 sequence.
        assert code == 400 and text == "é" * 512


def test_a_capsule_over_the_bound_is_refused_before_it_is_held() -> None:
    reader = CapsuleReader(100)
    with pytest.raises(FrameTooLarge):
        reader.feed(encode_varint(0x2843) + encode_varint(10_000))


def test_options_take_certfile_and_keyfile_together() -> None:
    with pytest.raises(SettingsError, match="together"):
        WEBTRANSPORT.with_options({"certfile": "a.pem"})
    assert WEBTRANSPORT.with_options({"cafile": "ca.pem"}) == WebTransportOptions(cafile="ca.pem")


def test_the_quic_family_has_its_own_peers() -> None:
    cases = CASES["quic"]
    assert all(case.peer is not None for case in cases)
    target = target_of(WEBTRANSPORT, HOST, 1)
    assert target.transport_protocol == "udp" and target.path == "/webtransport"


# -- real QUIC on loopback --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _reading(
    settings: Settings = FAST, rate_hz: float = 1_000
) -> AsyncIterator[tuple[int, Receiver]]:
    async with running_server(WEBTRANSPORT, settings, rate_hz=rate_hz) as server:
        async with Receiver(WEBTRANSPORT, server.port, server.source, settings) as rx:
            await rx.receive(50)
            yield server.port, rx


async def test_the_throwaway_certificate_covers_the_address_served_on() -> None:
    # 127.0.0.2 is this machine's (all of 127/8 is loopback) but not one of the defaults.
    async with (
        running_server(WEBTRANSPORT, FAST, rate_hz=1_000, host="127.0.0.2") as server,
        Receiver(WEBTRANSPORT, server.port, server.source, FAST, host="127.0.0.2") as rx,
    ):
        await rx.receive(20)


def _unharmed(rx: Receiver) -> None:
    counts = rx.ledger.counts()
    assert (counts.lost, counts.duplicated, counts.corrupted) == (0, 0, 0)
    assert rx.client.connection == 1


async def test_bad_connects_get_their_status_and_others_keep_reading() -> None:
    async with _reading() as (port, rx):
        asked = {
            "/nowhere": 404,
            "/webtransport?epoch=zz&since=-1": 400,
        }
        for path, status in asked.items():
            got = await h3_exchange(
                HOST, port, connect_request(HOST, port, path, b"webtransport"), 5
            )
            assert got.startswith(f"HTTP/3 {status};"), got
        got = await h3_exchange(HOST, port, connect_request(HOST, port, "/webtransport", None), 5)
        assert got.startswith("HTTP/3 400; protocol error"), got
        get = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"),
               (b":path", b"/webtransport")]  # fmt: skip
        got = await h3_exchange(HOST, port, get, 5)
        assert got.startswith("HTTP/3 405;"), got
        got = await datagrams(HOST, port, garbage_datagrams(), 0.3)
        assert got.endswith("nothing back"), got
        assert await handshake_ok(HOST, port, 5)
        await rx.receive(200)
    _unharmed(rx)


async def test_a_full_server_answers_503_and_the_client_says_refused() -> None:
    settings = FAST.with_changes(max_connections=1)
    async with _reading(settings) as (port, rx):
        with pytest.raises(ServerRefused, match="HTTP 503: server full") as caught:
            async with WEBTRANSPORT.connect(HOST, port, None, settings, WEBTRANSPORT.options):
                pass
        assert failure_kind(caught.value) == "refused"
        got = await h3_exchange(
            HOST, port, connect_request(HOST, port, "/webtransport", b"webtransport"), 5
        )
        assert is_refusal(got), got
        await rx.receive(100)
    _unharmed(rx)


async def test_a_connection_without_connect_is_closed_at_the_header_timeout() -> None:
    settings = FAST.with_changes(header_timeout_s=0.5)
    async with _reading(settings) as (port, rx):
        got = await h3_exchange(HOST, port, (), 5)
        assert "peer silent: no WebTransport CONNECT within 0.5 s" in got, got
        await rx.receive(100)
    _unharmed(rx)


async def test_over_the_inbound_limit_from_a_peer_ends_its_session_saying_why() -> None:
    # A 64 KiB limit (the default is 1 MiB): the mechanism, without a slow upload. A slow rate,
    # so the peer, busy uploading, is not cut as a slow consumer first.
    settings = FAST.with_changes(max_message_bytes=64 * 1024)
    async with _reading(settings, rate_hz=100) as (port, rx):
        headers = connect_request(HOST, port, "/webtransport", b"webtransport")
        got = await h3_exchange(HOST, port, headers, 20, body=b"x" * (128 * 1024))
        assert got.startswith("HTTP/3 200;") and "413 'too large: over 65536 bytes" in got, got
        await rx.receive(50)
    _unharmed(rx)


async def test_a_reader_that_stops_is_cut_by_the_server_and_holds_one_window() -> None:
    settings = FAST.with_changes(queue_size=2_000, heartbeat_s=1.0, dead_after_s=3.0)
    async with running_server(WEBTRANSPORT, settings, rate_hz=20_000) as server:
        async with WEBTRANSPORT.connect(HOST, server.port, None, settings, WEBTRANSPORT.options):
            # Entered, never iterated: its window fills, the server's pump stalls, the hub
            # cuts it for falling queue_size behind.
            await wait_until(lambda: server.hub.cut_count >= 1, 15, "the stuck reader's cut")


async def test_a_client_trusting_another_ca_says_certificate(tmp_path: Path) -> None:
    other = authority_certificate(tmp_path / "other")
    async with running_server(WEBTRANSPORT, FAST, rate_hz=100) as server:
        options = WebTransportOptions(cafile=str(other.cafile))
        with pytest.raises(CertificateInvalid) as caught:
            async with WEBTRANSPORT.connect(HOST, server.port, None, FAST, options):
                pass
        assert failure_kind(caught.value) == "certificate"


async def test_given_certificate_files_serve_a_client_given_their_ca(tmp_path: Path) -> None:
    cert = authority_certificate(tmp_path / "given")
    server_options = WebTransportOptions(certfile=str(cert.certfile), keyfile=str(cert.keyfile))
    async with running_server(WEBTRANSPORT, FAST, rate_hz=500, options=server_options) as server:
        assert server.server.certificate_sha256 == cert.sha256  # type: ignore[attr-defined]
        options = WebTransportOptions(cafile=str(cert.cafile))
        async with WEBTRANSPORT.connect(HOST, server.port, None, FAST, options) as samples:
            first = await anext(aiter(samples))
    assert first.epoch == server.hub.epoch


async def test_a_black_hole_through_the_udp_relay_is_noticed_and_resumed() -> None:
    settings = FAST
    async with running_server(WEBTRANSPORT, settings, rate_hz=1_000) as server:
        relay = UdpFaultProxy(HOST, server.port)
        await relay.start()
        try:
            async with Receiver(WEBTRANSPORT, relay.port, server.source, settings) as rx:
                await rx.receive(100)
                relay.blackhole()
                await wait_until(
                    lambda: any(isinstance(e, Disconnected) for e in rx.events),
                    (settings.dead_after_s or 0) + settings.heartbeat_s + 5,
                    "the client to notice the silence",
                )
                # The server's QUIC idle timeout (dead_after_s) drops its side too.
                await wait_until(lambda: server.hub.subscriber_count == 0, 10, "the server drop")
                relay.heal()
                await wait_until(
                    lambda: sum(isinstance(e, Connected) for e in rx.events) >= 2,
                    15,
                    "a reconnection after healing",
                )
                await rx.receive(200)
        finally:
            await relay.stop()
    counts = rx.ledger.counts()
    assert (counts.lost, counts.duplicated) == (0, 0), counts


async def test_the_relay_says_a_reset_is_not_applicable() -> None:
    relay = UdpFaultProxy(HOST, 9)
    with pytest.raises(NotApplicable, match="skipped: not applicable: UDP"):
        relay.reset_peer()


# -- on an emulated network path -------------------------------------------------------------


def test_a_bound_udp_port_is_seen_in_the_process_tables() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert udp_port_bound(os.getpid(), port)
    assert not udp_port_bound(os.getpid(), port)


@pytest.mark.network
@NEEDS_NETWORK_PATHS
@pytest.mark.timeout(90)
async def test_a_server_in_its_namespace_is_found_ready() -> None:
    """The readiness probe of a UDP server on an emulated path: its socket is in the server's
    namespace, which this process's socket tables (and psutil's) do not show."""
    async with NetworkPath("lan") as path:
        ns = path.client_ns[0]
        server = ServerProcess(
            "webtransport",
            rate_hz=10.0,
            settings=EXPERIMENT_SETTINGS,
            host=path.server_addr,
            exec_prefix=path.exec_prefix(path.server_ns),
            connect=lambda host, port: path.open_connection(ns, host, port),
        )
        await server.start()
        try:
            assert udp_port_bound(server.pid, server.port)
        finally:
            await server.stop()
