"""Which web pages may read the stream: one origin policy for every browser transport (pure).

A browser tells a server which page is asking in the ``Origin`` header: on every WebSocket
handshake, and on a cross-origin ``fetch`` or ``EventSource`` request. The policy decides from
it, the same way on every transport:

- no ``Origin`` header (curl, the suite's own clients, any non-browser program): served;
- the server's own page (the origin's ``host[:port]`` is the request's ``Host``): allowed;
- a loopback origin, ``http`` or ``https`` on any port: ``127.0.0.0/8``, ``localhost`` and
  ``[::1]``: allowed by default (a page a developer serves from another local port);
- an origin ``settings.allow_origins`` lists (``--allow-origin``, repeatable): allowed; an
  entry is ``scheme://host[:port]``, ``scheme://host:*`` (any port) or ``*`` (every origin,
  ``null`` included);
- anything else is refused: 403 on the WebSocket handshake, on the HTTP request and on a CORS
  preflight, and never an ``Access-Control-Allow-Origin`` header, so the browser hands the
  page nothing.

An allowed cross-origin request's answer carries ``Access-Control-Allow-Origin: <origin>`` and
``Vary: Origin`` (:meth:`OriginPolicy.cors_headers`); a preflight ``OPTIONS`` is answered by
:meth:`OriginPolicy.preflight` (204 with the methods and headers a page may use, among them
``Last-Event-ID``, or 403). Each server adds only its framework's glue.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from transports.settings import Settings

__all__ = [
    "ALLOWED_HEADERS",
    "ALLOWED_METHODS",
    "ANY_ORIGIN",
    "OriginError",
    "OriginPolicy",
    "Preflight",
    "normalize_patterns",
]

#: The entry allowing every origin.
ANY_ORIGIN = "*"
#: Methods a page may use on the stream's endpoints (they only read).
ALLOWED_METHODS = ("GET", "HEAD")
#: Request headers a page may send: ``Last-Event-ID`` (an EventSource resuming) and what
#: common browser libraries add to a GET.
ALLOWED_HEADERS = ("Last-Event-ID", "Cache-Control", "Accept", "Pragma", "X-Requested-With")
#: How long a browser may cache a preflight's answer, in seconds.
PREFLIGHT_MAX_AGE_S = 600
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LOOPBACK_NAMES = frozenset({"localhost"})
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_WEB_SCHEMES = frozenset({"http", "https"})
#: The longest Origin header looked at: a real one is a scheme and a host name.
_MAX_ORIGIN = 300
#: Vary on every answer of an endpoint the policy governs: it depends on the Origin.
_VARY = "Origin"
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class OriginError(ValueError):
    """An ``allow_origins`` entry that is not an origin; the message names it."""


@dataclass(frozen=True, slots=True)
class _Origin:
    """An origin taken apart: scheme, host (lower case, IPv6 without brackets), port.

    ``port`` is the scheme's default when none is written (None for a scheme without one);
    ``any_port`` marks an ``allow_origins`` entry ending in ``:*``.
    """

    scheme: str
    host: str
    port: int | None
    any_port: bool = False

    def serialized(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.any_port:
            return f"{self.scheme}://{host}:*"
        if self.port is None or self.port == _DEFAULT_PORTS.get(self.scheme):
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


def _parse(text: str, *, wildcard_port: bool = False) -> _Origin | None:
    """``scheme://host[:port]`` (or ``scheme://host:*``) taken apart; None if not one."""
    if len(text) > _MAX_ORIGIN or not text.isascii() or not text.isprintable() or " " in text:
        return None
    any_port = wildcard_port and text.endswith(":*")
    if any_port:
        text = text[:-2]
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if (
        not parts.scheme
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or text.endswith(":")
        or (any_port and port is not None)
    ):
        return None
    host = parts.hostname.lower()
    if not _is_host(host):
        return None
    scheme = parts.scheme.lower()
    return _Origin(scheme, host, _DEFAULT_PORTS.get(scheme) if port is None else port, any_port)


def _is_host(host: str) -> bool:
    """A DNS name (labels of letters, digits, ``-`` and ``_``) or an IPv6 literal."""
    if ":" not in host:
        return _HOST_NAME.fullmatch(host) is not None
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def normalize_patterns(entries: Iterable[str]) -> tuple[str, ...]:
    """``allow_origins`` entries checked and written the way browsers send origins.

    Lower case, no trailing slash, no default port (``https://Example.org:443/`` is
    ``https://example.org``); ``:*`` stays (any port). Raises :class:`OriginError` naming an
    entry that is not ``*``, ``scheme://host[:port]`` or ``scheme://host:*``.
    """
    normalized: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise OriginError(f"an origin is a string, got {entry!r}")
        if entry == ANY_ORIGIN:
            value = ANY_ORIGIN
        else:
            origin = _parse(entry, wildcard_port=True)
            if origin is None:
                raise OriginError(
                    f"{entry[:80]!r} is not an origin: give scheme://host[:port], "
                    "scheme://host:* (any port) or * (every origin)"
                )
            value = origin.serialized()
        if value not in normalized:
            normalized.append(value)
    return tuple(normalized)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_server(origin: _Origin, host_header: str) -> bool:
    """Whether ``origin`` names the server that got a request with this ``Host`` header.

    ``Host`` has no scheme: it is read with the origin's, so a port left out on either side
    is that scheme's default (a page from ``https://example.org`` behind a TLS terminator,
    whose ``Host`` is ``example.org``, is the server's own).
    """
    server = _parse(f"{origin.scheme}://{host_header.strip()}")
    return server is not None and (server.host, server.port) == (origin.host, origin.port)


@dataclass(frozen=True, slots=True)
class Preflight:
    """The answer to a CORS preflight ``OPTIONS``: its status and headers."""

    status: int
    headers: Mapping[str, str]
    #: Why it was refused (the body of a 403), empty when allowed.
    reason: str = ""


class OriginPolicy:
    """Which origins may read the stream; see the module docstring."""

    __slots__ = ("_any", "_any_port", "_exact")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        entries = normalize_patterns(patterns)
        self._any = ANY_ORIGIN in entries
        self._exact: frozenset[str] = frozenset(e for e in entries if not e.endswith(":*"))
        self._any_port: frozenset[tuple[str, str]] = frozenset(
            (o.scheme, o.host)
            for e in entries
            if e.endswith(":*") and (o := _parse(e, wildcard_port=True)) is not None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        return cls(settings.allow_origins)

    @property
    def allows_any(self) -> bool:
        return self._any

    def allows(self, origin: str | None, own: str | None = None) -> bool:
        """Whether a request with this ``Origin`` header (None: none) is served.

        ``own`` is the request's ``Host`` header: a page from the server itself is allowed.
        """
        if origin is None or self._any:
            return True
        parsed = _parse(origin.strip())
        if parsed is None:
            return False  # "null" (a file: or sandboxed page) and anything malformed
        web = parsed.scheme in _WEB_SCHEMES
        if web and (_is_loopback(parsed.host) or (own is not None and _same_server(parsed, own))):
            return True
        return parsed.serialized() in self._exact or (parsed.scheme, parsed.host) in self._any_port

    def cors_headers(self, origin: str | None, own: str | None = None) -> dict[str, str]:
        """Headers for the answer to a request with this ``Origin`` (never for a refused one).

        ``Vary: Origin`` always (the answer depends on it, caches must know); the origin is
        echoed in ``Access-Control-Allow-Origin`` when the request is cross-origin and allowed.
        """
        headers = {"Vary": _VARY}
        if origin is not None and self.allows(origin, own):
            headers["Access-Control-Allow-Origin"] = origin.strip()
        return headers

    def refusal(self, origin: str | None) -> str:
        """The one-line reason a refused request is given (its 403 body, a log line)."""
        shown = "(none)" if origin is None else repr(origin[:80])
        return (
            f"origin not allowed: {shown}; the server allows its own page, loopback pages "
            "and those given with --allow-origin"
        )

    def preflight(
        self,
        origin: str | None,
        own: str | None,
        method: str | None,
        *,
        private_network: bool = False,
    ) -> Preflight:
        """The answer to ``OPTIONS`` with these ``Origin`` and ``Access-Control-Request-*``.

        An ``OPTIONS`` that is not a preflight (no ``Origin`` or no requested method) gets 204
        with ``Allow``. ``private_network``: the browser asks whether a public page may reach
        this (private) server (``Access-Control-Request-Private-Network: true``).
        """
        methods = ", ".join((*ALLOWED_METHODS, "OPTIONS"))
        if origin is None or method is None:
            return Preflight(int(HTTPStatus.NO_CONTENT), {"Allow": methods})
        if not self.allows(origin, own):
            return Preflight(int(HTTPStatus.FORBIDDEN), {"Vary": _VARY}, self.refusal(origin))
        if method.upper() not in ALLOWED_METHODS:
            reason = f"method {method[:20]!r} not allowed: this stream only answers {methods}"
            return Preflight(int(HTTPStatus.FORBIDDEN), {"Vary": _PREFLIGHT_VARY}, reason)
        headers = {
            "Access-Control-Allow-Origin": origin.strip(),
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
            "Vary": _PREFLIGHT_VARY,
        }
        if private_network:
            headers["Access-Control-Allow-Private-Network"] = "true"
        return Preflight(int(HTTPStatus.NO_CONTENT), headers)
