"""nginx in the path: rendered configs, nginx run by the harness, streams through it.

Every test here runs the real nginx (``/usr/sbin/nginx``, Debian package ``nginx``; ``.ci/run``
installs it). When it is missing the tests fail with the message saying so, never skip.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from experiments.run.cli import main as experiments_main
from experiments.run.processes import ServerProcess, settle_teardowns
from experiments.run.security import run_certificate
from experiments.via import (
    FrontedServer,
    NginxError,
    NginxProcess,
    check_config,
    front,
    not_applicable,
)
from experiments.via.__main__ import deployable_site
from experiments.via.nginx import BINARY_ENV, main_template, require_nginx, site_template
from experiments.via.paths import PROXIED as NGINX_PATHS
from experiments.via.paths import Via
from experiments.via.render import (
    Process,
    Site,
    TemplateError,
    Tls,
    fill,
    nginx_time,
    placeholders,
    read_timeout_s,
    render,
    render_site,
)
from model.errors import CertificateInvalid, ServerRefused
from model.source import BernoulliSource
from tests.support import FAST, Receiver, running_server, wait_until
from transports.client import Connected, Disconnected
from transports.contract import Transport
from transports.registry import TRANSPORTS
from transports.settings import Settings
from transports.tls import TlsSettings

#: Every transport nginx can carry (the registry says which) ...
PROXIED = [n for n, t in TRANSPORTS.items() if not_applicable("nginx", t) is None]
#: ... those whose stream can go quiet (a held connection, or a held long poll) ...
QUIETABLE = [
    n
    for n in PROXIED
    if TRANSPORTS[n].features.push or "long_poll_wait_s" in TRANSPORTS[n].keepalive_in_force()
]
#: ... and the WebSocket ones.
WEBSOCKETS = [n for n in PROXIED if TRANSPORTS[n].bad_input_family == "websocket"]

#: Test settings through nginx: FAST's quick heartbeats and reconnects.
SETTINGS = FAST


@pytest.fixture(scope="module", autouse=True)
def nginx_binary() -> str:
    """The nginx every test runs: a missing one fails each test naming the Debian package."""
    return require_nginx()


@asynccontextmanager
async def through(
    via: Via, port: int, transport: Transport, settings: Settings = SETTINGS
) -> AsyncIterator[NginxProcess]:
    """nginx configured as ``via`` in front of 127.0.0.1:``port``."""
    server = transport.settings(settings)
    timeout = read_timeout_s(server, _hold(transport, server)) if via == "nginx" else None
    nginx = NginxProcess(via, "127.0.0.1", port, read_timeout_s=timeout, connect_timeout_s=2.0)
    async with nginx:
        yield nginx


def _hold(transport: Transport, settings: Settings) -> float:
    return transport.keepalive_in_force(settings).get("long_poll_wait_s") or 0.0


# -- rendering (pure, and nginx -t on the result) ---------------------------------------------


def _site(**changes: Any) -> Site:
    site = Site("127.0.0.1", 18080, "127.0.0.1", 18081, read_timeout_s=9.0)
    return dataclasses.replace(site, **changes)


def _write(directory: Path, text: str) -> None:
    (directory / "temp").mkdir(exist_ok=True)
    (directory / "nginx.conf").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("via", NGINX_PATHS)
def test_rendered_config_passes_nginx_t(via: Via, tmp_path: Path) -> None:
    text = render(main_template(), site_template(via), _site(), Process(str(tmp_path)))
    assert not placeholders(text)
    _write(tmp_path, text)
    check_config(tmp_path)


def test_recommended_config_says_what_streams_need(tmp_path: Path) -> None:
    text = render(main_template(), site_template("nginx"), _site(), Process(str(tmp_path)))
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_buffering off;",
        "proxy_read_timeout 9s;",
        "client_header_timeout 10s;",
        "keepalive 16;",
        "server 127.0.0.1:18081;",
        "listen 127.0.0.1:18080;",
        f"pid {tmp_path}/nginx.pid;",
    ):
        assert directive in text


def test_defaults_config_is_proxy_pass_only(tmp_path: Path) -> None:
    site = _site(read_timeout_s=None)
    text = render(main_template(), site_template("nginx-defaults"), site, Process(str(tmp_path)))
    server_block = text[text.index("    server {") :]
    directives = [
        line.strip()
        for line in server_block.splitlines()
        if line.strip().endswith(";") and not line.strip().startswith("#")
    ]
    assert directives == ["listen 127.0.0.1:18080;", "proxy_pass http://127.0.0.1:18081;"]
    shortened = render(
        main_template(), site_template("nginx-defaults"), _site(read_timeout_s=3.0),
        Process(str(tmp_path)),
    )  # fmt: skip
    assert "proxy_read_timeout 3s;" in shortened


def test_tls_variant_listens_with_ssl_and_passes_nginx_t(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    site = _site(tls=Tls(str(certfile), str(keyfile)))
    text = render(main_template(), site_template("nginx"), site, Process(str(tmp_path)))
    assert "listen 127.0.0.1:18080 ssl;" in text
    assert f"ssl_certificate {certfile};" in text
    assert f"ssl_certificate_key {keyfile};" in text
    _write(tmp_path, text)
    check_config(tmp_path)


def test_fill_refuses_a_missing_value_and_indents_a_block() -> None:
    with pytest.raises(TemplateError, match="no value for b"):
        fill("{{a}} {{b}}\n", {"a": "x"})
    assert fill("x {\n    {{body}}\n}\n", {"body": "a;\nb;"}) == "x {\n    a;\n    b;\n}\n"
    assert fill("a\n    {{gone}}\nb\n", {"gone": ""}) == "a\nb\n"


@pytest.mark.parametrize(
    "change",
    [
        {"upstream_host": "127.0.0.1; include /etc/passwd"},
        {"listen_host": "a b"},
        {"listen_port": 0},
        {"tls": Tls('/tmp/c"rt', "/tmp/key")},
    ],
)
def test_values_that_would_break_the_config_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(TemplateError):
        render(main_template(), site_template("nginx"), _site(**change), Process("/tmp/x"))


def test_nginx_times_and_the_recommended_read_timeout() -> None:
    assert nginx_time(3) == "3s"
    assert nginx_time(0.8) == "800ms"
    assert nginx_time(2.5) == "2500ms"
    with pytest.raises(TemplateError):
        nginx_time(0)
    settings = Settings(heartbeat_s=2.0, dead_after_s=6.0)
    assert read_timeout_s(settings) == 8.0
    assert read_timeout_s(settings, longest_hold_s=5.0) == 11.0
    assert read_timeout_s(Settings(heartbeat_s=0.0, dead_after_s=None)) == 60.0


def test_only_http_transports_go_through_nginx() -> None:
    for name, transport in TRANSPORTS.items():
        http = transport.bad_input_family in ("websocket", "http-stream", "http-poll")
        assert (not_applicable("nginx", transport) is None) == http, name
        assert not_applicable("direct", transport) is None
    assert "tcp" not in PROXIED and {"tornado-ws", "sse", "poll", "long-poll"} <= set(PROXIED)


# -- nginx as a process ---------------------------------------------------------------------


async def test_nginx_process_starts_on_a_free_port_and_cleans_up() -> None:
    transport = TRANSPORTS["sse"]
    async with running_server(transport, SETTINGS, rate_hz=50.0) as running:
        nginx = NginxProcess("nginx", "127.0.0.1", running.port, read_timeout_s=5.0)
        async with nginx:
            assert nginx.running and nginx.port not in (0, running.port)
            directory = nginx.directory
            assert directory is not None and (directory / "nginx.pid").exists()
            pid = nginx.pid
        assert not nginx.running
        assert not directory.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_nginx_process_says_why_it_did_not_start(tmp_path: Path) -> None:
    missing = Tls(str(tmp_path / "no-cert.pem"), str(tmp_path / "no-key.pem"))
    nginx = NginxProcess("nginx", "127.0.0.1", 1, read_timeout_s=5.0, tls=missing)
    with pytest.raises(NginxError, match=r"nginx exited with 1: .*no-cert\.pem"):
        await nginx.start()
    assert nginx.directory is None and not nginx.running


def test_missing_nginx_is_one_line_naming_the_debian_package(tmp_path: Path) -> None:
    env = {**os.environ, BINARY_ENV: str(tmp_path / "no-nginx-here")}
    done = subprocess.run(
        [sys.executable, "-m", "experiments", "--profile", "quick", "--transports", "sse",
         "--scenarios", "latency", "--via", "direct,nginx", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Debian package 'nginx'" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_unknown_via_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert experiments_main(["--via", "direct,squid"]) == 2
    assert "unknown --via path 'squid'" in capsys.readouterr().err


# -- streams through nginx ------------------------------------------------------------------


@pytest.mark.parametrize("name", PROXIED)
async def test_stream_through_recommended_nginx_resumes_across_an_upstream_restart(
    name: str,
) -> None:
    transport = TRANSPORTS[name]
    async with running_server(transport, SETTINGS, rate_hz=200.0) as running:
        async with through("nginx", running.port, transport) as nginx:
            async with Receiver(transport, nginx.port, running.source, SETTINGS) as rx:
                await rx.receive(1, timeout=1.0)  # the first sample within a second
                await rx.receive(50)
                old_epoch = running.hub.epoch
                await running.restart()  # a new epoch behind the same nginx
                new_epoch = running.hub.epoch
                assert new_epoch != old_epoch
                await wait_until(
                    lambda: sum(s.epoch == new_epoch for s in rx.samples) >= 50,
                    15.0,
                    f"50 samples of the new epoch through nginx ({name})",
                )
    counts = rx.ledger.counts()
    assert counts.corrupted == counts.reordered == 0
    if transport.features.resume:
        assert counts.lost == 0 and counts.duplicated == 0, counts
        # The new epoch from its first sample: nothing of it lost across the restart.
        assert min(s.seq for s in rx.samples if s.epoch == new_epoch) == 0
    if transport.features.push:  # a poller may not notice: its next poll finds the new server
        assert sum(isinstance(e, Connected) for e in rx.events) >= 2


@pytest.mark.parametrize(
    ("name", "via"),
    # (The defaults refuse a WebSocket upgrade, TLS or not: tested below.)
    [(n, v) for v in NGINX_PATHS for n in PROXIED if v == "nginx" or n not in WEBSOCKETS],
)
async def test_nginx_terminates_tls_in_front_of_a_plain_upstream(name: str, via: Via) -> None:
    """``--via nginx* --security tls``: the client speaks TLS to nginx (trusting the run's CA),
    nginx plain HTTP to the server; a client that does not trust the CA is refused."""
    transport = TRANSPORTS[name]
    with run_certificate() as cert:
        async with running_server(transport, SETTINGS, rate_hz=200.0) as running:
            server = transport.settings(SETTINGS)
            timeout = read_timeout_s(server, _hold(transport, server)) if via == "nginx" else None
            nginx = NginxProcess(
                via,
                "127.0.0.1",
                running.port,
                read_timeout_s=timeout,
                connect_timeout_s=2.0,
                tls=Tls(str(cert.certfile), str(cert.keyfile)),
            )
            async with nginx:
                assert " ssl;" in nginx.config
                over_tls = SETTINGS.with_changes(tls=cert.client_tls)
                async with Receiver(transport, nginx.port, running.source, over_tls) as rx:
                    await rx.receive(50, timeout=5.0)
                counts = rx.ledger.counts()
                assert counts.corrupted == counts.lost == counts.duplicated == 0, counts
                # The server's own CA is not the run's: refused at the handshake, for good.
                with trustme_ca_file() as other:
                    refused = SETTINGS.with_changes(tls=TlsSettings(cafile=other))
                    opened = transport.connect(
                        "127.0.0.1", nginx.port, None, refused, transport.options
                    )
                    with pytest.raises(CertificateInvalid):
                        async with opened:
                            pass


@contextlib.contextmanager
def trustme_ca_file() -> Iterator[str]:
    """A CA nobody signed the server's certificate with, as a PEM file."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(path))
        yield str(path)


@pytest.mark.parametrize("name", WEBSOCKETS)
@pytest.mark.parametrize(("via", "upgraded"), [("nginx", True), ("nginx-defaults", False)])
async def test_websocket_upgrade_needs_the_recommended_config(
    name: str, via: Via, upgraded: bool
) -> None:
    transport = TRANSPORTS[name]
    async with running_server(transport, SETTINGS, rate_hz=50.0) as running:
        async with through(via, running.port, transport) as nginx:
            status = await _upgrade_status(nginx.port, transport.url("127.0.0.1", nginx.port))
            assert (status == 101) == upgraded, status
            if not upgraded:
                # What the client sees: a refusal, retried (it is not a network fault)
                opened = transport.connect(
                    "127.0.0.1", nginx.port, None, SETTINGS, transport.options
                )
                with pytest.raises(ServerRefused):
                    async with opened:
                        pass


async def _upgrade_status(port: int, url: str) -> int:
    path = url.split(str(port), 1)[1] or "/"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readline()
        return int(head.split()[1])
    finally:
        writer.close()


async def test_sse_through_the_defaults_still_streams() -> None:
    """The defaults buffer responses, but sse-starlette's ``X-Accel-Buffering: no`` turns that
    off for its streams: through the defaults SSE still streams promptly (the defaults'
    failure is the WebSocket upgrade, and a quiet stream cut after 60 s)."""
    transport = TRANSPORTS["sse"]
    async with running_server(transport, SETTINGS, rate_hz=200.0) as running:
        async with through("nginx-defaults", running.port, transport) as nginx:
            async with Receiver(transport, nginx.port, running.source, SETTINGS) as rx:
                await rx.receive(1, timeout=1.0)
                await rx.receive(20, timeout=2.0)


@pytest.mark.parametrize("name", QUIETABLE)
async def test_nginx_cuts_a_quiet_stream_unless_heartbeats_keep_it_alive(name: str) -> None:
    transport = TRANSPORTS[name]
    # Quiet: a heartbeat (and a long poll's hold) far longer than nginx's read timeout. The
    # client's own read timeout is off or long: only nginx may end the connection here.
    quiet = SETTINGS.with_changes(heartbeat_s=60.0, dead_after_s=None)
    beating = SETTINGS.with_changes(heartbeat_s=0.3, dead_after_s=30.0)
    read_timeout = 1.0
    # A transport with fixed settings (the seed design: 10 s pings) may beat too slowly.
    kept_alive = 0 < transport.settings(beating).heartbeat_s < read_timeout
    # One sample at the start, the next 100 s later: the stream is silent in between.
    for settings, cut in ((quiet, True), (beating, not kept_alive)):
        async with running_server(transport, settings, rate_hz=0.01) as running:
            nginx = NginxProcess("nginx", "127.0.0.1", running.port, read_timeout_s=read_timeout)
            async with nginx, Receiver(transport, nginx.port, running.source, settings) as rx:
                await wait_until(
                    lambda: any(isinstance(e, Connected) for e in rx.events), 5.0, "a connection"
                )
                if cut:
                    await wait_until(
                        lambda: any(isinstance(e, Disconnected) for e in rx.events),
                        read_timeout + 2.0,
                        f"nginx cutting the quiet {name} stream",
                    )
                    up = next(e.at_ns for e in rx.events if isinstance(e, Connected))
                    down = next(e.at_ns for e in rx.events if isinstance(e, Disconnected))
                    assert (down - up) / 1e9 >= read_timeout * 0.9
                else:
                    await asyncio.sleep(read_timeout * 2.5)  # the time nginx would cut in
                    assert not [e for e in rx.events if isinstance(e, Disconnected)]


async def test_fronted_server_restarts_the_upstream_behind_a_running_nginx() -> None:
    settings = FAST.with_changes(connect_timeout_s=2.0)
    server = front(ServerProcess("sse", rate_hz=100.0, settings=settings), "nginx")
    assert isinstance(server, FrontedServer)
    async with server:
        assert server.nginx is not None
        nginx_pid, port, first_epoch = server.nginx.pid, server.port, server.epoch
        assert port != server.upstream.port
        assert "proxy_read_timeout 800ms;" in server.nginx.config  # heartbeat + dead-after
        source = BernoulliSource(0.72, seed=0)
        async with Receiver(TRANSPORTS["sse"], server.port, source, settings) as rx:
            await rx.receive(20)
            await server.kill()
            await server.start()
            assert server.epoch != first_epoch
            assert (server.nginx.pid, server.port) == (nginx_pid, port)
            await wait_until(
                lambda: any(s.epoch == server.epoch for s in rx.samples),
                10.0,
                "samples of the restarted upstream through nginx",
            )
        nginx = server.nginx
    await settle_teardowns()  # leaving the block stops the servers in the background
    assert not server.running and not nginx.running and nginx.directory is None


# -- the config users deploy ----------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def _deployable() -> str:
    return render_site(site_template("nginx"), deployable_site("nginx"))


def test_readme_shows_the_recommended_config_as_rendered_from_the_template() -> None:
    assert _deployable() in README.read_text(encoding="utf-8")


def test_render_command_prints_the_deployable_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "experiments.via", "render", "nginx"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == _deployable()
    # What it prints is a config nginx takes, inside the process template.
    text = render(
        main_template(), site_template("nginx"), _site(read_timeout_s=20.0),
        Process(str(tmp_path)),
    )  # fmt: skip
    _write(tmp_path, text)
    check_config(tmp_path)
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.via", "render", "nginx", "--certfile", "c.pem"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
