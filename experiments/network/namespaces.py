"""Network namespaces: create, remove, list, find the processes inside, and reach into one.

Thin wrappers over :mod:`pyroute2.netns` (the same bind mounts under ``/run/netns`` that
``ip netns`` uses, so ``ip netns list`` and ``ip netns exec`` see ours). Reaching into a
namespace from this process is done per thread: a short-lived thread joins the namespace,
does one thing (opens a socket, writes a sysctl) and ends, so the caller's own threads never
change namespace. A socket keeps the namespace it was created in for its whole life.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from pyroute2 import netns as _netns  # type: ignore[import-untyped]

from experiments.network.errors import PathError

__all__ = [
    "create",
    "exists",
    "in_namespace",
    "kill_processes",
    "list_namespaces",
    "pids_in",
    "remove",
    "socket_in",
    "write_sysctl",
]

T = TypeVar("T")
RUN_DIR = "/run/netns"


def list_namespaces() -> list[str]:
    return sorted(_netns.listnetns())


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(RUN_DIR, name))


def create(name: str) -> None:
    if exists(name):
        raise PathError(f"network namespace {name} already exists")
    try:
        _netns.create(name)
    except OSError as exc:
        raise PathError(f"cannot create network namespace {name}: {exc}") from exc


def remove(name: str) -> None:
    """Unmount and unlink the namespace; the kernel frees it once nothing uses it."""
    if not exists(name):
        return
    try:
        _netns.remove(name)
    except OSError as exc:
        raise PathError(f"cannot remove network namespace {name}: {exc}") from exc


def pids_in(names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of ``names`` (never this process)."""
    wanted = set(names)
    found = _netns.ns_pids()
    me = os.getpid()
    return sorted(
        pid for name, pids in found.items() if name in wanted for pid in pids if pid != me
    )


def kill_processes(names: Iterable[str], grace_s: float = 2.0) -> list[int]:
    """SIGTERM every process inside ``names``, SIGKILL what remains after ``grace_s``.

    A process left inside keeps its namespace (and the veths in it) alive after the name is
    gone, so teardown ends them first. Returns the pids that were found.
    """
    names = list(names)
    pids = pids_in(names)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids_in(names) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids_in(names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def in_namespace(name: str | None, action: Callable[[], T]) -> T:
    """Run ``action`` in a fresh thread that has joined namespace ``name`` (None: here)."""
    if name is None:
        return action()
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            # flags=0: join only, never create a namespace by accident.
            _netns.setns(name, flags=0)
            result.append(action())
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        exc = errors[0]
        if isinstance(exc, OSError):
            raise PathError(f"in namespace {name}: {exc}") from exc
        raise exc
    return result[0]


def socket_in(
    name: str | None,
    family: socket.AddressFamily = socket.AF_INET,
    kind: socket.SocketKind = socket.SOCK_STREAM,
) -> socket.socket:
    """A non-blocking socket that lives in namespace ``name`` (None: this process's own)."""
    sock = in_namespace(name, lambda: socket.socket(family, kind))
    sock.setblocking(False)
    return sock


def write_sysctl(name: str, key: str, value: str) -> None:
    """Set ``net.*`` sysctl ``key`` (dotted) inside namespace ``name``.

    ``/proc/sys/net`` shows the namespace of the thread that opens it, hence the thread.
    """
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w") as handle:
            handle.write(value)

    in_namespace(name, write)
