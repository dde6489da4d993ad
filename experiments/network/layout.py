"""What the parts of one run's path are called and numbered (pure: no I/O).

Topology (one router namespace in the middle; the delay line's TUN device hangs off it)::

    server ns                router ns                              client ns i
    tb<run>-s ── veth ── tb<run>-rs   tb<run>-br ── tb<run>-r<i> ── veth ── tb<run>-c<i>
    198.18.0.2/24       198.18.0.1/24  198.19.0.1/16 (bridge port)           198.19.x.y/16
                             tb<run>-tun (delay line, policy routing)

Addresses come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarking, so nothing
here can be mistaken for (or routed to) a real network: 198.18.0.0/24 is the server's side,
198.19.0.0/16 the clients' side. The namespaces get routes to each other's side only, no
default route, and no link to the root namespace.

Names: namespaces are ``tbench-<run>-srv``, ``-rtr``, ``-c<i>``; interfaces are
``tb<run>-<role>``, at most 15 characters (IFNAMSIZ - 1), so a run id has at most 8 characters
of ``[0-9a-z]``; the nftables table is ``tbench_<run>``. The common prefix is how a later run
finds the leftovers of a killed one.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "CLIENT_NET",
    "IFNAME_MAX",
    "MAC_BRIDGE",
    "MAC_CLIENT",
    "MAC_PORT",
    "MAC_ROUTER_SERVER",
    "MAC_SERVER",
    "NS_PREFIX",
    "ROUTER_CLIENT_ADDR",
    "ROUTER_SERVER_ADDR",
    "SERVER_ADDR",
    "SERVER_NET",
    "PathLayout",
    "client_addr",
    "layout",
    "mac",
    "new_run_id",
    "run_id_of_namespace",
]

NS_PREFIX = "tbench-"
IF_PREFIX = "tb"
IFNAME_MAX = 15
MAX_CLIENTS = 65_000

SERVER_NET = ipaddress.IPv4Network("198.18.0.0/24")
CLIENT_NET = ipaddress.IPv4Network("198.19.0.0/16")
ROUTER_SERVER_ADDR = "198.18.0.1"
SERVER_ADDR = "198.18.0.2"
ROUTER_CLIENT_ADDR = "198.19.0.1"

_RUN_ID = re.compile(r"[0-9a-z]{1,8}")
_NAMESPACE = re.compile(r"tbench-([0-9a-z]{1,8})-(?:srv|rtr|c\d+)")


def new_run_id() -> str:
    """Six random hex digits: unique enough for concurrent runs on one machine."""
    return secrets.token_hex(3)


def run_id_of_namespace(name: str) -> str | None:
    """The run id in a namespace name of ours, or None for anybody else's namespace."""
    match = _NAMESPACE.fullmatch(name)
    return match.group(1) if match else None


#: What :func:`mac` numbers: the veth ends and the bridge.
MAC_ROUTER_SERVER, MAC_SERVER, MAC_BRIDGE, MAC_PORT, MAC_CLIENT = range(1, 6)


def mac(kind: int, index: int = 0) -> str:
    """A fixed, locally administered MAC address (02:...) for interface ``kind`` ``index``.

    Fixed addresses let the path pin every neighbour entry (no ARP at all): after a link
    comes back up packets flow at once, instead of waiting up to a second for ARP to retry,
    and no ARP exchange can be lost or delayed. Each run is its own layer-2 island, so runs
    may reuse the same addresses.
    """
    return f"02:74:62:{kind:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


def client_addr(index: int) -> str:
    """Client ``index`` (from 0): 198.19.0.2, 198.19.0.3, ... (.0.1 is the router)."""
    if not 0 <= index < MAX_CLIENTS:
        raise ValueError(f"client index {index} outside 0..{MAX_CLIENTS - 1}")
    return str(CLIENT_NET.network_address + 2 + index)


@dataclass(frozen=True, slots=True)
class PathLayout:
    """Every name and address of one run's path."""

    run_id: str
    server_ns: str
    router_ns: str
    client_ns: tuple[str, ...]
    server_if: str
    router_server_if: str
    bridge: str
    router_client_if: tuple[str, ...]
    client_if: tuple[str, ...]
    tun: str
    nft_table: str
    client_addr: tuple[str, ...]

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Router first: it is built first and removed last-but-not-least."""
        return (self.router_ns, self.server_ns, *self.client_ns)


def layout(run_id: str, clients: int) -> PathLayout:
    """The names and addresses of run ``run_id`` with ``clients`` client namespaces."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r}: 1 to 8 characters of [0-9a-z] (interface names)")
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS}, not {clients}")
    base = f"{IF_PREFIX}{run_id}-"
    result = PathLayout(
        run_id=run_id,
        server_ns=f"{NS_PREFIX}{run_id}-srv",
        router_ns=f"{NS_PREFIX}{run_id}-rtr",
        client_ns=tuple(f"{NS_PREFIX}{run_id}-c{i}" for i in range(clients)),
        server_if=f"{base}s",
        router_server_if=f"{base}rs",
        bridge=f"{base}br",
        router_client_if=tuple(f"{base}r{i}" for i in range(clients)),
        client_if=tuple(f"{base}c{i}" for i in range(clients)),
        tun=f"{base}tun",
        nft_table=f"tbench_{run_id}",
        client_addr=tuple(client_addr(i) for i in range(clients)),
    )
    longest = max(
        (result.server_if, result.tun, *result.router_client_if, *result.client_if), key=len
    )
    if len(longest) > IFNAME_MAX:
        raise ValueError(
            f"interface name {longest!r} is longer than {IFNAME_MAX} characters:"
            " use a shorter run id or fewer client namespaces"
        )
    return result
