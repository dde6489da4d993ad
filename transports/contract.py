"""What a transport is: a server factory, a one-connection client, and everything said about it.

A transport module builds one :class:`Transport`; the registry lists them all. The record is
the only extension point: whatever is specific to a transport (its options, its default port,
how the report describes its keepalive, which baseline and which hostile peers it is measured
against) is declared on it, never special-cased elsewhere. Its fields without defaults are
the ones a new transport must think about; ``tests/test_registry.py`` checks them all.
Everything a transport shares with the others (hub, resume rules, backoff, reconnection,
sockets, rejections, the CLI) lives outside it, so a transport module holds only what its
protocol needs.

- ``serve(hub, host, port, settings, options)`` returns a :class:`Server` that publishes the
  hub's samples; ``await server.start()`` binds (port 0 picks a free port, read back from
  ``server.port``), ``await server.stop()`` closes every connection.
- ``connect(host, port, token, settings, options)`` is an async context manager for *one*
  connection: entering it connects (``ServerUnavailable`` when nobody answers), iterating it
  yields samples until the connection ends (``ConnectionLost``, ``PeerSilent``,
  ``ProtocolError``). Reconnection, backoff and resume tokens are the shared client's job
  (:mod:`transports.client`), not the transport's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from model.sample import Sample
from transports.hub import Hub
from transports.options import Options, replace_options
from transports.resume import ResumeToken
from transports.settings import Settings
from transports.sockets import url_host

__all__ = [
    "BadInputFamily",
    "Connect",
    "Features",
    "KeepaliveParams",
    "ServeFactory",
    "Server",
    "Transport",
    "keep_settings",
]

#: Which hostile peers the bad-input scenario sends: those that speak the transport's protocol.
BadInputFamily = Literal["websocket", "http-stream", "http-poll", "tcp", "grpc", "quic"]


class Server(Protocol):
    """A running transport server."""

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ServeFactory = Callable[[Hub, str, int, Settings, Options], Server]
Connect = Callable[
    [str, int, "ResumeToken | None", Settings, Options],
    AbstractAsyncContextManager[AsyncIterator[Sample]],
]
#: The keepalive figures in force for given settings and options, by name (seconds; None: off).
KeepaliveParams = Callable[[Settings, Options], Mapping[str, float | None]]


def keep_settings(settings: Settings) -> Settings:
    """The ``fixed_settings`` of a transport that runs with whatever it is given."""
    return settings


@dataclass(frozen=True, slots=True)
class Features:
    """What a transport offers, as reported beside its measurements."""

    resume: bool
    heartbeat: bool
    browser_native: bool
    bidirectional: bool
    #: The server pushes samples over a held connection (False: the client asks, poll-style).
    push: bool = True
    #: What carries it: "udp" (QUIC) cannot go through the harness's TCP fault proxy, so the
    #: scenarios that need that proxy are reported "not applicable" for it.
    transport_protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True, kw_only=True)
class Transport:
    """One registered transport."""

    name: str
    summary: str
    #: Unique across the registry, so any two servers can run side by side on defaults.
    default_port: int
    #: The endpoint users connect to, with ``{host}`` and ``{port}`` placeholders.
    endpoint: str
    features: Features
    serve: ServeFactory
    connect: Connect
    #: Its transport-specific options, holding the defaults (a frozen ``Options`` subclass).
    options: Options
    #: Third-party distributions this transport's server and client need.
    dependencies: tuple[str, ...]
    #: Modules holding this transport's own code (measured by the complexity scenario).
    modules: tuple[str, ...]
    #: The minimal pusher on the same library it is compared against (experiments' registry).
    baseline: str
    bad_input_family: BadInputFamily
    #: How the resume token travels (for the README and the report).
    resume_token: str
    #: How dead peers are noticed, in words (the report's conditions table) ...
    keepalive: str
    #: ... and in figures: see :meth:`keepalive_in_force`.
    keepalive_params: KeepaliveParams
    #: How its server writes one batch to many subscribers, in words (the fan-out report):
    #: the hub's one-pass fast path, a library broadcast, or a task per connection (and why).
    write_path: str
    #: Settings this transport always runs with, whatever the caller asks (the seed design).
    fixed_settings: Callable[[Settings], Settings] = keep_settings
    #: The publish rate `serve` uses when none is given.
    default_rate_hz: float = 10.0

    def settings(self, base: Settings | None = None) -> Settings:
        """``base`` with this transport's fixed settings applied on top."""
        return self.fixed_settings(base or Settings())

    def with_options(self, changes: Mapping[str, object], *, strict: bool = True) -> Options:
        """This transport's default options with ``changes`` applied and checked.

        Raises :class:`~transports.settings.SettingsError` naming an unknown or invalid key.
        """
        return replace_options(self.options, changes, strict=strict)

    def keepalive_in_force(
        self, settings: Settings | None = None, options: Options | None = None
    ) -> Mapping[str, float | None]:
        """The keepalive figures the report shows, for the settings this transport runs with."""
        return self.keepalive_params(
            self.settings(settings), self.options if options is None else options
        )

    def url(self, host: str, port: int, *, tls: bool = False) -> str:
        """Its endpoint on ``host:port``; with ``tls`` the secure scheme (wss, https, tls)."""
        url = self.endpoint.format(host=url_host(host), port=port)
        if tls:
            scheme, sep, rest = url.partition("://")
            url = _SECURE.get(scheme, scheme) + sep + rest
        return url


#: The scheme of each endpoint under TLS.
_SECURE = {"ws": "wss", "http": "https", "tcp": "tls", "grpc": "grpcs"}
