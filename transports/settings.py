"""Settings shared by every transport's server and client.

Experiments run every transport with the same values and write them into the results, so
differences come from the protocols, not from how each was tuned. What only one transport
needs (a poll interval, a hello timeout) is that transport's own options
(:mod:`transports.options`), not a field here.

Every value is checked once, here, whoever builds the settings (the CLI, a JSON document, a
test): a zero history or batch, a negative heartbeat or a NaN would otherwise surface later
as a traceback deep in a server, or as a loop sending heartbeats as fast as it can.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import msgspec

from transports.origins import OriginError, normalize_patterns
from transports.tls import TlsSettings

__all__ = ["Settings", "SettingsError", "field_names", "naming"]

MiB = 1 << 20
GiB = 1 << 30
#: The largest duration a setting may hold: a day. Longer is a mistake, not a choice.
_MAX_SECONDS = 86_400.0
#: The shortest positive duration: below a millisecond a timer is a busy loop.
_MIN_SECONDS = 0.001


class SettingsError(ValueError):
    """A setting or option with a wrong type or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Heartbeats, dead-peer timeouts, reconnect backoff and limits."""

    #: Server -> client keepalive: WebSocket ping, SSE comment, TCP heartbeat line. 0 = none.
    heartbeat_s: float = 5.0
    #: Silence after which a peer is declared dead (client read timeout; ping timeout).
    #: ``None`` = never (only the protocol's own pings, if any, notice a dead peer).
    dead_after_s: float | None = 15.0
    #: Reconnect delay: uniform(0, min(cap, base * 2**attempt)) with full jitter.
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 5.0
    #: False: a fixed delay of ``backoff_base_s`` (the original design's 3 s retry).
    backoff_jitter: bool = True
    #: Whether the client sends a resume token after a reconnect.
    resume: bool = True
    #: Largest inbound message or line a peer may send.
    max_message_bytes: int = MiB
    #: Kernel send buffer of each accepted connection (0: the kernel's autotuning, up to MiBs).
    send_buffer_bytes: int = 256 * 1024
    #: Most concurrent connections a server accepts.
    max_connections: int = 10_000
    #: Live samples a subscriber may fall behind between reads before it is cut.
    queue_size: int = 1_000
    #: Samples the hub keeps for resume.
    history: int = 10_000
    #: Most samples per batch (one write, one poll response).
    batch: int = 1_000
    #: Time a client gives one connection attempt (connect + handshake).
    connect_timeout_s: float = 5.0
    #: Time a server gives a new connection to send its request head (HTTP request head,
    #: WebSocket upgrade, tcp hello) before closing it: an idle or dripping peer (slowloris)
    #: would otherwise hold its socket, and on some servers a connection slot, forever.
    header_timeout_s: float = 10.0
    #: Origins whose web pages may read the stream beyond the server's own page and loopback
    #: pages (``--allow-origin``): ``scheme://host[:port]``, ``scheme://host:*`` or ``*``.
    #: One policy for every browser transport: :mod:`transports.origins`.
    allow_origins: tuple[str, ...] = ()
    #: TLS around every connection (``--tls``): the server's certificate and key, the CA a
    #: client trusts (:mod:`transports.tls`). None: plain TCP.
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        for name, rule in _RULES.items():
            value = getattr(self, name)
            checked = rule(name, value)
            if checked is not value:  # an int given for a float field: store the float
                object.__setattr__(self, name, checked)
        if self.backoff_cap_s < self.backoff_base_s:
            raise SettingsError(
                f"backoff_cap_s ({self.backoff_cap_s:g}) must be >= backoff_base_s "
                f"({self.backoff_base_s:g})"
            )

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(
        cls, changes: Mapping[str, object], base: Settings | None = None, *, strict: bool = True
    ) -> Settings:
        """``base`` (default: the defaults) with ``changes`` applied, checked field by field.

        ``strict=False`` also reads numbers and booleans from strings (``--set KEY=VALUE``).
        Raises :class:`SettingsError` naming the first unknown or invalid key.
        """
        known = field_names()
        for key in changes:
            if key not in known:
                raise SettingsError(f"unknown setting {key!r}; known: {', '.join(known)}")
        merged = (base or cls()).as_dict() | dict(changes)
        try:
            return msgspec.convert(merged, cls, strict=strict)
        except msgspec.ValidationError as exc:
            raise SettingsError(naming(exc, "setting")) from None


def naming(error: msgspec.ValidationError, what: str) -> str:
    """msgspec's message with the key it is about up front: ``setting history: Expected ...``.

    msgspec ends it with ``- at `$.history```; our own checks already start with the name.
    """
    message, at, path = str(error).rpartition(" - at `$.")
    if not at:
        return str(error)
    return f"{what} {path.rstrip('`')}: {message}"


def field_names() -> tuple[str, ...]:
    """Every setting's name, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(Settings))


# -- the checks --------------------------------------------------------------------------------

#: Checks one value, returning it (an int for a float field comes back as a float).
_Rule = Callable[[str, object], object]


def _number(name: str, value: object) -> float:
    # bool is an int to Python, never a duration to a user.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _seconds(*, zero_means_off: bool) -> Callable[[str, object], float]:
    def check(name: str, value: object) -> float:
        seconds = _number(name, value)
        if zero_means_off and seconds == 0:
            return seconds
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            off = "0 (off) or " if zero_means_off else ""
            limits = f"between {_MIN_SECONDS:g} and {_MAX_SECONDS:g} s"
            raise SettingsError(f"{name} must be {off}{limits}, got {value!r}")
        return seconds

    return check


def _optional_seconds(name: str, value: object) -> float | None:
    return None if value is None else _seconds(zero_means_off=False)(name, value)


def _count(low: int, high: int) -> Callable[[str, object], int]:
    def check(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{name} must be a whole number, got {value!r}")
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return check


def _origins(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise SettingsError(f"{name} must be a list of origins, got {value!r}")
    try:
        return normalize_patterns(value)
    except OriginError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _tls(name: str, value: object) -> TlsSettings | None:
    if value is not None and not isinstance(value, TlsSettings):
        raise SettingsError(f"{name} must hold certfile, keyfile and cafile paths, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    return value


_RULES: dict[str, _Rule] = {
    "heartbeat_s": _seconds(zero_means_off=True),
    "dead_after_s": _optional_seconds,
    "backoff_base_s": _seconds(zero_means_off=False),  # 0 would reconnect in a tight loop
    "backoff_cap_s": _seconds(zero_means_off=False),
    "backoff_jitter": _flag,
    "resume": _flag,
    # An HTTP request head or a hello line must fit: below 1 KiB nothing useful does.
    "max_message_bytes": _count(1024, GiB),
    "send_buffer_bytes": _count(0, GiB),
    "max_connections": _count(1, 10_000_000),
    "queue_size": _count(1, 100_000_000),
    # The history is allocated up front (one slot per sample): bound it.
    "history": _count(1, 100_000_000),
    "batch": _count(1, 100_000_000),
    "connect_timeout_s": _seconds(zero_means_off=False),
    "header_timeout_s": _seconds(zero_means_off=False),
    "allow_origins": _origins,
    "tls": _tls,
}
