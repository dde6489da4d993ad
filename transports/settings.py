"""Settings shared by every transport's server and client.

Experiments run every transport with the same values and write them into the results, so
differences come from the protocols, not from how each was tuned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["Settings"]

MiB = 1 << 20


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
    #: Pause between polls of the ``poll`` transport.
    poll_interval_s: float = 0.1
    #: How long the server holds a ``long-poll`` request open without data.
    long_poll_wait_s: float = 5.0
    #: Time a client gives one connection attempt (connect + handshake).
    connect_timeout_s: float = 5.0

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
