"""The README stays true: its transports table matches the registry, its recipes work."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.sample import decode_sample, decode_samples
from transports.registry import TRANSPORTS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_lists_every_transport_with_its_endpoint() -> None:
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([\w-]+)` \| `([^`]+)`", README.read_text(), re.M)
    }
    assert set(rows) == set(TRANSPORTS)
    for name, transport in TRANSPORTS.items():
        assert rows[name].startswith(transport.url("127.0.0.1", transport.default_port))


# -- the README's recipes for other people's clients, run for real ------------------------------

#: Where the README's recipes live: inline code running a client on a default port.
RECIPE = re.compile(r"`((?:curl|printf) [^`]*127\.0\.0\.1[ :](\d{4})[^`]*)`")
#: Short keepalives, so a recipe that still receives after SECONDS has outlived a dead-peer
#: timeout several times over.
KEEPALIVE = ["--set", "heartbeat_s=0.2", "--set", "dead_after_s=0.5"]
SECONDS = 2.0
RATE = 50
CLI = [sys.executable, "-m", "transports"]


def _recipes() -> list[tuple[str, str]]:
    """Every recipe in the README with the transport whose default port it names."""
    by_port = {t.default_port: name for name, t in TRANSPORTS.items()}
    found = [(m.group(1), by_port[int(m.group(2))]) for m in RECIPE.finditer(README.read_text())]
    assert len(found) >= 5, found  # curl (SSE), nc, nc -N, socat (TCP), curl (polling)
    return found


def _collect(command: list[str], seconds: float) -> tuple[list[tuple[float, bytes]], bool]:
    """Lines a command prints within ``seconds`` with their arrival times; whether it exited."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert proc.stdout is not None
    lines: list[tuple[float, bytes]] = []
    partial = b""
    start = time.monotonic()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while (left := start + seconds - time.monotonic()) > 0:
                if not selector.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    if partial:  # a last line without its newline (curl's JSON answer)
                        lines.append((time.monotonic() - start, partial))
                    return lines, True
                *done, partial = (partial + chunk).split(b"\n")
                lines += [(time.monotonic() - start, line) for line in done]
        return lines, False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the recipe's whole pipeline, and only it
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, int]]:
    """One ``serve`` per transport the recipes name, started together: name -> port."""
    names = sorted({name for _, name in _recipes()})
    procs = {
        name: subprocess.Popen(
            [*CLI, "serve", name, "--port", "0", "--rate", str(RATE), *KEEPALIVE],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for name in names
    }
    try:
        ports = {}
        for name, proc in procs.items():
            assert proc.stdout is not None
            ports[name] = int(proc.stdout.readline().split()[3].rpartition(":")[2])
        yield ports
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            finally:
                proc.kill()


@pytest.mark.parametrize(("recipe", "name"), _recipes(), ids=lambda v: str(v))
def test_the_readme_recipe_receives_samples(
    recipe: str, name: str, servers: dict[str, int]
) -> None:
    for tool in ("curl", "nc", "socat"):
        if re.search(rf"(^|\| ){tool} ", recipe):
            assert shutil.which(tool), f"{tool} is missing (.ci/run installs it)"
    default, port = TRANSPORTS[name].default_port, servers[name]
    command = recipe.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    command = command.replace(f"127.0.0.1 {default}", f"127.0.0.1 {port}")
    lines, exited = _collect(["bash", "-c", command], SECONDS)
    if "/samples" in recipe:  # one poll: the newest sample, then curl is done
        for _ in range(20):  # a server just started may not have published yet: "[]"
            if not exited or decode_samples(b"".join(line for _, line in lines)):
                break
            lines, exited = _collect(["bash", "-c", command], SECONDS)
        assert exited
        assert len(decode_samples(b"".join(line for _, line in lines))) == 1
        return
    texts = [line for _, line in lines]
    assert not exited, texts[-3:]
    samples = [
        decode_sample(line.removeprefix(b"data: "))
        for line in texts
        if line.startswith((b'{"epoch"', b'data: {"epoch"'))
    ]
    assert not [line for line in texts if b'"error"' in line], texts
    # Samples all along, past several dead-peer timeouts: nobody gave up on a read-only client.
    assert len(samples) >= RATE * (SECONDS - 1)
    assert [s.seq for s in samples] == list(range(samples[0].seq, samples[0].seq + len(samples)))
    assert max(t for t, line in lines if b'"epoch"' in line) > SECONDS - 0.5
