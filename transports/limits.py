"""How many connections this process can hold: its file-descriptor limit, raised and respected.

Every connection costs a file descriptor, and the soft ``RLIMIT_NOFILE`` is often 1,024 while
the hard limit allows far more: a server that keeps the soft one cannot reach the connection
limit it advertises (10,000 by default). ``serve`` raises the soft limit to the hard one at
start-up, then lowers ``max_connections`` to what the limit leaves after :data:`HEADROOM`
(listeners, the event loop, logs, files), saying so in one line. What is left over when idle
or half-open sockets exhaust the descriptors anyway is the listeners' business
(:class:`transports.sockets.ListeningSocket` rests instead of spinning).
"""

from __future__ import annotations

import contextlib

from transports.settings import Settings

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX: no limit to raise or read
    resource = None  # type: ignore[assignment]

__all__ = ["HEADROOM", "connections_allowed", "fd_limit", "fit_connections", "raise_fd_limit"]

#: Descriptors kept for what is not a connection: stdio, the event loop's selector and
#: self-pipe, listening sockets, log files, a subprocess's pipes.
HEADROOM = 64
#: Where the soft limit goes when the hard one is unlimited (the kernel's usual nr_open).
_UNLIMITED_TARGET = 1 << 20


def fd_limit() -> int | None:
    """The soft limit on open files in force (None: no such limit on this platform)."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files as far as the hard limit allows; the limit now."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        # macOS refuses beyond OPEN_MAX, whatever the hard limit says: keep what we have.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return fd_limit()


def connections_allowed(limit: int | None) -> int | None:
    """The most connections ``limit`` open files leave room for (None: no limit)."""
    return None if limit is None else max(1, limit - HEADROOM)


def fit_connections(settings: Settings, limit: int | None) -> tuple[Settings, str | None]:
    """``settings`` with ``max_connections`` lowered to fit ``limit``, and the warning to print."""
    allowed = connections_allowed(limit)
    if allowed is None or settings.max_connections <= allowed:
        return settings, None
    warning = (
        f"max_connections lowered from {settings.max_connections} to {allowed}: "
        f"the limit on open files is {limit} (ulimit -n; raise the hard limit to allow more)"
    )
    return settings.with_changes(max_connections=allowed), warning
