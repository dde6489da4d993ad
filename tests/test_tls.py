"""TLS contexts from files: what works, and one clear line for each way the files are wrong."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from experiments.faults.proxy import FaultProxy
from model.errors import CertificateInvalid
from tests.support import FAST, Receiver, running_server, wait_until
from transports.certs import authority_certificate
from transports.client import ClientEvent, ConnectFailed, StreamClient
from transports.contract import Transport
from transports.registry import TRANSPORTS
from transports.tls import TlsConfigError, TlsSettings, client_context, server_context


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    cert = authority_certificate(tmp_path_factory.mktemp("tls"))
    return TlsSettings(
        certfile=str(cert.certfile), keyfile=str(cert.keyfile), cafile=str(cert.cafile)
    )


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """A real TLS handshake over loopback: what the client read from the server."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello over tls\n")
        await w.drain()
        w.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1"), 10
        )
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return line.decode()


def test_a_server_and_a_client_context_complete_a_handshake(files: TlsSettings) -> None:
    text = asyncio.run(_handshake(server_context(files), client_context(files)))
    assert text == "hello over tls\n"
    assert client_context(files) is client_context(files)  # one context per settings


def test_a_client_refuses_a_server_signed_by_another_ca(
    files: TlsSettings, tmp_path: Path
) -> None:
    stranger = authority_certificate(tmp_path)
    other = TlsSettings(cafile=str(stranger.cafile))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_handshake(server_context(files), client_context(other)))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"certfile": None}, "TLS needs --certfile"),
        ({"certfile": "/nonexistent/cert.pem"}, "--certfile /nonexistent/cert.pem: no such file"),
        ({"keyfile": "/nonexistent/key.pem"}, "--keyfile /nonexistent/key.pem: no such file"),
        ({"keyfile": "other-key"}, "does not match --certfile"),
        ({"certfile": "garbage"}, "is not a PEM certificate/key"),
    ],
)
def test_unusable_server_files_are_one_clear_line(
    files: TlsSettings, tmp_path: Path, change: dict[str, str | None], expected: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("127.0.0.1").private_key_pem.write_to_path(str(other_key))
    named = {"garbage": str(garbage), "other-key": str(other_key)}
    fields = {"certfile": files.certfile, "keyfile": files.keyfile}
    fields |= {k: named.get(v, v) if v else v for k, v in change.items()}
    with pytest.raises(TlsConfigError) as caught:
        server_context(TlsSettings(certfile=fields["certfile"], keyfile=fields["keyfile"]))
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "ca.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(TlsConfigError, match=r"--cafile .*ca\.pem: no certificate in it"):
        client_context(TlsSettings(cafile=str(empty)))
    with pytest.raises(TlsConfigError, match="no such file"):
        client_context(TlsSettings(cafile=str(tmp_path / "missing.pem")))


# -- every transport over TLS --------------------------------------------------------------


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    """A CA that signed nothing the servers hold."""
    return TlsSettings(cafile=str(authority_certificate(tmp_path_factory.mktemp("other")).cafile))


@pytest.mark.parametrize("transport", list(TRANSPORTS.values()), ids=list(TRANSPORTS))
async def test_every_transport_streams_over_tls_and_resumes_across_a_reset(
    transport: Transport, files: TlsSettings
) -> None:
    settings = FAST.with_changes(tls=files)
    async with running_server(transport, settings, rate_hz=1_000) as server:
        if transport.features.transport_protocol != "tcp":  # QUIC: TLS built in, no TCP proxy
            async with Receiver(transport, server.port, server.source, settings) as rx:
                await rx.receive(200)
            assert rx.ledger.counts().lost == 0
            return
        proxy = FaultProxy("127.0.0.1", server.port)
        await proxy.start()
        try:
            async with Receiver(transport, proxy.port, server.source, settings) as rx:
                await rx.receive(200)
                proxy.reset_peer()
                await wait_until(lambda: rx.client.connection >= 2, 10, "a second connection")
                await rx.receive(300)
        finally:
            await proxy.stop()
    counts = rx.ledger.counts()
    assert counts.delivered >= 500
    if transport.features.resume:
        assert (counts.lost, counts.duplicated) == (0, 0), counts


@pytest.mark.parametrize("transport", list(TRANSPORTS.values()), ids=list(TRANSPORTS))
async def test_a_certificate_from_an_unknown_ca_is_refused_once_not_retried(
    transport: Transport, files: TlsSettings, stranger: TlsSettings
) -> None:
    async with running_server(transport, FAST.with_changes(tls=files), rate_hz=100) as server:
        events: list[ClientEvent] = []
        client = StreamClient(
            transport, "127.0.0.1", server.port, FAST.with_changes(tls=stranger),
            on_event=events.append, initial_wait_s=20,
        )  # fmt: skip
        with pytest.raises(CertificateInvalid):
            async with asyncio.timeout(15):
                async for _ in client:
                    pytest.fail("a sample through a certificate the client refused")
    assert [e.kind for e in events if isinstance(e, ConnectFailed)] == ["certificate"]
    assert client.attempts == 1
