"""TLS session resumption and the ``reconnect-cost`` scenario: real servers, real sockets."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import msgspec
import pytest

from experiments.faults.proxy import FaultProxy
from experiments.faults.tls_hello import client_hello, resumed, server_hello
from experiments.faults.wire_log import WireLog
from experiments.report.reconnect_cost import reconnect_cost_section
from experiments.results import Results
from experiments.run import cli
from experiments.run.processes import settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS, PROFILES
from experiments.run.runner import run_suite
from experiments.run.security import run_certificate
from experiments.scenarios.reconnect_cost import ReconnectCostKnobs, ReconnectCostScenario
from tests.support import ENVIRONMENT, FAST, Receiver, running_server, wait_until
from transports.certs import authority_certificate
from transports.registry import TRANSPORTS
from transports.tls import HTTP1, TlsSettings, client_context
from transports.tls_sessions import ResumingContext, SessionCounts


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    cert = authority_certificate(tmp_path_factory.mktemp("tls"))
    return TlsSettings(
        certfile=str(cert.certfile), keyfile=str(cert.keyfile), cafile=str(cert.cafile)
    )


def _resuming(files: TlsSettings) -> TlsSettings:
    return msgspec.structs.replace(files, resume_sessions=True)


def _delta(after: SessionCounts, before: SessionCounts) -> SessionCounts:
    return SessionCounts(
        after.handshakes - before.handshakes,
        after.resumed - before.resumed,
        after.offered - before.offered,
    )


async def _tcp_hello(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    """One connection to a tcp transport server: hello, one line back, then a reset."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"), 10
    )
    writer.write(b"{}\n")
    await asyncio.wait_for(reader.readline(), 10)
    tls = writer.get_extra_info("ssl_object")
    assert isinstance(tls, ssl.SSLObject)
    writer.transport.abort()
    return tls


async def test_the_resuming_context_resumes_after_a_reset_and_a_plain_one_does_not(
    files: TlsSettings,
) -> None:
    resuming = client_context(_resuming(files))
    plain = client_context(files)
    assert isinstance(resuming, ResumingContext) and not isinstance(plain, ResumingContext)
    assert resuming.verify_mode == plain.verify_mode == ssl.CERT_REQUIRED
    assert resuming.check_hostname and resuming.verify_flags == plain.verify_flags
    transport = TRANSPORTS["tcp"]
    async with running_server(transport, FAST.with_changes(tls=files), rate_hz=1_000) as server:
        before = resuming.counts()
        # The connection ends by an abort (RST): the session it left is still resumable.
        reused = [(await _tcp_hello(server.port, resuming)).session_reused for _ in range(3)]
        assert reused == [False, True, True]
        assert _delta(resuming.counts(), before) == SessionCounts(3, 2, 2)
        assert [(await _tcp_hello(server.port, plain)).session_reused for _ in range(2)] == [
            False,
            False,
        ]


async def _reset_and_reconnect(rx: Receiver, proxy: FaultProxy) -> None:
    made = rx.client.connection
    proxy.reset_peer()
    await wait_until(lambda: rx.client.connection > made, 10, "a reconnect")
    await rx.receive(20)


#: The ALPN each transport's client context is made with (None: not a Python ``ssl`` client).
_ALPN: dict[str, tuple[str, ...] | None] = {
    "tcp": (),
    "sse": HTTP1,
    "tornado-ws": HTTP1,
    "grpc": None,
}


@pytest.mark.parametrize("name", list(_ALPN))
async def test_a_transport_client_resumes_across_resets_as_the_wire_shows(
    name: str, files: TlsSettings
) -> None:
    """Resets through the proxy: with ``resume_sessions`` the new connections resume (the
    ServerHello accepts the PSK, and the Python clients' context counts it); without, none
    does."""
    transport = TRANSPORTS[name]
    async with running_server(transport, FAST.with_changes(tls=files), rate_hz=1_000) as server:
        for resume in (False, True):
            tls = _resuming(files) if resume else files
            alpn = _ALPN[name]
            context = None if alpn is None else client_context(tls, alpn)
            before = context.counts() if isinstance(context, ResumingContext) else None
            log = WireLog()
            proxy = FaultProxy("127.0.0.1", server.port)
            proxy.tap = log
            await proxy.start()
            try:
                settings = FAST.with_changes(tls=tls)
                # grpc keys its session cache by SNI, which it sends for a DNS name only.
                host = "localhost" if name == "grpc" else "127.0.0.1"
                async with Receiver(transport, proxy.port, server.source, settings, host) as rx:
                    await rx.receive(20)
                    for _ in range(2):
                        await _reset_and_reconnect(rx, proxy)
            finally:
                await proxy.stop()
            connections = sorted({c.connection for c in log.chunks})
            hellos = [
                (client_hello(log.head(c, False)), server_hello(log.head(c, True)))
                for c in connections
            ]
            assert all(h is not None and s is not None for h, s in hellos), hellos
            wire = [resumed(h, s) for h, s in hellos]
            assert wire == [False] + [resume] * (len(wire) - 1), wire
            if isinstance(context, ResumingContext) and before is not None:
                counted = _delta(context.counts(), before)
                assert counted.resumed >= 2 and counted.handshakes >= 3, counted


def test_a_hello_split_anywhere_reads_as_incomplete_or_whole(files: TlsSettings) -> None:
    """The parser never misreads a prefix: at every cut it says nothing, or the whole hello."""

    async def capture() -> tuple[bytes, bytes]:
        transport = TRANSPORTS["tcp"]
        async with running_server(transport, FAST.with_changes(tls=files)) as server:
            log = WireLog()
            proxy = FaultProxy("127.0.0.1", server.port)
            proxy.tap = log
            await proxy.start()
            try:
                await _tcp_hello(proxy.port, client_context(files))
                await wait_until(lambda: bool(log.head(1, True)), 10, "the server's answer")
            finally:
                await proxy.stop()
        return log.head(1, False), log.head(1, True)

    up, down = asyncio.run(capture())
    whole_client, whole_server = client_hello(up), server_hello(down)
    assert whole_client is not None and not whole_client.offers_session
    assert whole_server is not None and whole_server.version == "TLSv1.3"
    assert not resumed(whole_client, whole_server)
    for cut in range(len(up)):
        assert client_hello(up[:cut]) in (None, whole_client)
    for cut in range(len(down)):
        assert server_hello(down[:cut]) in (None, whole_server)
    assert client_hello(b"GET / HTTP/1.1\r\n\r\n") is None  # not TLS at all
    assert server_hello(b"") is None


#: A short run: three reconnects per way, a short settle.
_SHORT = ReconnectCostScenario()
_SHORT.knobs = {"quick": ReconnectCostKnobs(3, 1000.0, settle_s=0.2, recover_timeout_s=8.0)}


@pytest.mark.xdist_group("cpu-heavy")
@pytest.mark.timeout(60)
async def test_a_quick_run_measures_plain_full_and_resumed_tls(tmp_path: Path) -> None:
    transports = [TRANSPORTS["tcp"], TRANSPORTS["sse"]]
    profile = PROFILES["quick"]
    records = []
    started = time.monotonic()
    with run_certificate() as certificate:
        for security in ("plain", "tls"):
            records += await run_suite(
                profile, transports, [_SHORT], 1, EXPERIMENT_SETTINGS, tmp_path,
                security=security, securities=("plain", "tls"), certificate=certificate,
            )  # fmt: skip
    await settle_teardowns()  # the servers' background teardown, before the loop closes
    by = {(r.transport, r.params["security"], r.params.get("tls_resumption")): r for r in records}
    assert set(by) == {
        (t, s, m)
        for t in ("tcp", "sse")
        for s, m in (("plain", None), ("tls", "off"), ("tls", "on"))
    }
    for r in records:
        assert r.error is None, r.error
        # A reset before a busy client took its first sample leaves that round unmeasured.
        assert (r.metric("reconnects") or 0) >= 2, r.metrics
    for t in ("tcp", "sse"):
        plain, full, resumed_ = (
            by[(t, "plain", None)],
            by[(t, "tls", "off")],
            by[(t, "tls", "on")],
        )
        b = [r.metric("reconnect_bytes") or 0.0 for r in (plain, full, resumed_)]
        assert 0 < b[0] < b[2] < b[1], (t, b)  # resumed: no certificate resent
        assert plain.metrics["handshakes"] == 0
        assert (
            full.metrics["resumed"] == 0
            and full.metrics["handshakes"] == full.metrics["reconnects"]
        )
        assert (
            resumed_.metrics["resumed"]
            == resumed_.metrics["handshakes"]
            == resumed_.metrics["reconnects"]
        )
        assert (r.metric("reconnect_ms_p50") or 0.0) > 0
    results = Results(
        schema=2, created="", profile="quick", environment=ENVIRONMENT,
        settings=EXPERIMENT_SETTINGS, records=records,
    )  # fmt: skip
    section = reconnect_cost_section(results)
    assert section.startswith("## What a reconnect costs")
    assert "| tcp | " in section and "| sse | " in section and "| yes (" in section
    assert time.monotonic() - started < 60


def test_a_run_with_tls_measures_what_a_reconnect_costs_by_default() -> None:
    def names(*argv: str) -> list[str]:
        return cli._scenario_names(cli._parser().parse_args(list(argv)))

    assert "reconnect-cost" not in names("--profile", "default")
    assert "reconnect-cost" in names("--profile", "default", "--security", "plain,tls")
    assert names("--scenarios", "reconnect-cost") == ["reconnect-cost"]
