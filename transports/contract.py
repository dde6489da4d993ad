"""What a transport is: a server factory, a one-connection client, and its features.

A transport module builds one :class:`Transport`; the registry lists them all. Everything a
transport shares with the others (hub, resume rules, backoff, reconnection, the CLI) lives
outside it, so a transport module holds only what its protocol needs.

- ``serve(hub, host, port, settings)`` returns a :class:`Server` that publishes the hub's
  samples; ``await server.start()`` binds (port 0 picks a free port, read back from
  ``server.port``), ``await server.stop()`` closes every connection.
- ``connect(host, port, token, settings)`` is an async context manager for *one* connection:
  entering it connects (``ServerUnavailable`` when nobody answers), iterating it yields samples
  until the connection ends (``ConnectionLost``, ``PeerSilent``, ``ProtocolError``).
  Reconnection, backoff and resume tokens are the shared client's job
  (:mod:`transports.client`), not the transport's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from transports.hub import Hub
from transports.resume import ResumeToken
from transports.settings import Settings

__all__ = ["Connect", "Features", "ServeFactory", "Server", "Transport"]


class Server(Protocol):
    """A running transport server."""

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ServeFactory = Callable[[Hub, str, int, Settings], Server]
Connect = Callable[
    [str, int, "ResumeToken | None", Settings],
    AbstractAsyncContextManager[AsyncIterator[Any]],
]


@dataclass(frozen=True, slots=True)
class Features:
    """What a transport offers, as reported beside its measurements."""

    resume: bool
    heartbeat: bool
    browser_native: bool
    bidirectional: bool
    #: The server pushes samples over a held connection (False: the client asks, poll-style).
    push: bool = True


@dataclass(frozen=True)
class Transport:
    """One registered transport."""

    name: str
    summary: str
    default_port: int
    #: The endpoint users connect to, with ``{host}`` and ``{port}`` placeholders.
    endpoint: str
    features: Features
    serve: ServeFactory
    connect: Connect
    #: Third-party distributions this transport's server and client need.
    dependencies: tuple[str, ...]
    #: Modules holding this transport's own code (measured by the complexity scenario).
    modules: tuple[str, ...]
    #: How the resume token travels, and the keepalive used (for the README and the report).
    resume_token: str = "none"
    heartbeat: str = "none"
    #: Settings this transport always runs with, whatever the caller asks (the seed design).
    fixed_settings: Mapping[str, Any] = field(default_factory=dict)
    #: The publish rate `serve` uses when none is given.
    default_rate_hz: float = 10.0

    def settings(self, base: Settings | None = None) -> Settings:
        """``base`` with this transport's fixed settings applied on top."""
        return (base or Settings()).with_changes(**self.fixed_settings)

    def url(self, host: str, port: int) -> str:
        return self.endpoint.format(host=host, port=port)
