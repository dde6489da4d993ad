"""The path's nftables table: random loss per direction and the fault hooks.

One table per run, ``inet tbench_<run>``, in the router namespace, so it goes with the
namespace and can never touch the machine's own rules. Every packet between server and
clients is forwarded by the router (twice when a delay line is in the path: into the TUN
device and back out of it), so rules in its ``forward`` chain see every packet:

- ``blackhole`` and ``resetting`` are address sets: a fault adds a client's address, healing
  removes it, and the rules never change. Dropping in the router rather than in the client's
  own namespace is what a real black hole does: the client's kernel sees silence, not EPERM.
- the ``loss`` chain drops ``numgen random mod 1000 < N`` of the packets entering the router
  from each side; matching the input interface counts each packet once although it crosses
  the forward hook twice.

Rendering is pure (:func:`ruleset` and friends return text for ``nft -f -``); :func:`apply`
runs ``nft`` inside the router namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from experiments.network.errors import PathError

__all__ = [
    "add_addresses",
    "apply",
    "delete_addresses",
    "loss_rules",
    "ruleset",
    "suspend_loss",
]

BLACKHOLE = "blackhole"
RESETTING = "resetting"


def loss_rules(table: str, per_mille: int, ingress: Iterable[str]) -> str:
    """``add rule`` lines dropping ``per_mille``/1000 of what enters from each interface."""
    if per_mille <= 0:
        return ""
    return "".join(
        f'add rule inet {table} loss iifname "{name}" numgen random mod 1000 < {per_mille}'
        " counter drop\n"
        for name in ingress
    )


def ruleset(table: str, loss_per_mille: int, ingress: Iterable[str]) -> str:
    """The whole table, created fresh."""
    return (
        f"add table inet {table}\n"
        f"add set inet {table} {BLACKHOLE} {{ type ipv4_addr; }}\n"
        f"add set inet {table} {RESETTING} {{ type ipv4_addr; }}\n"
        f"add chain inet {table} loss\n"
        f"add chain inet {table} forward"
        " { type filter hook forward priority filter; policy accept; }\n"
        f"add rule inet {table} forward ip saddr @{BLACKHOLE} counter drop\n"
        f"add rule inet {table} forward ip daddr @{BLACKHOLE} counter drop\n"
        # Both directions: the client's packets earn it a RST, the server's earn the server one.
        f"add rule inet {table} forward meta l4proto tcp ip saddr @{RESETTING}"
        " counter reject with tcp reset\n"
        f"add rule inet {table} forward meta l4proto tcp ip daddr @{RESETTING}"
        " counter reject with tcp reset\n"
        f"add rule inet {table} forward jump loss\n" + loss_rules(table, loss_per_mille, ingress)
    )


def suspend_loss(table: str) -> str:
    return f"flush chain inet {table} loss\n"


def _elements(verb: str, table: str, set_name: str, addresses: Iterable[str]) -> str:
    listed = ", ".join(addresses)
    return f"{verb} element inet {table} {set_name} {{ {listed} }}\n" if listed else ""


def add_addresses(table: str, set_name: str, addresses: Iterable[str]) -> str:
    return _elements("add", table, set_name, addresses)


def delete_addresses(table: str, set_name: str, addresses: Iterable[str]) -> str:
    return _elements("delete", table, set_name, addresses)


async def apply(namespace: str, script: str) -> None:
    """Run ``script`` through ``nft -f -`` inside ``namespace``, atomically (one transaction)."""
    if not script:
        return
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, "nft", "-f", "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise PathError(f"nft in {namespace} failed: {err.decode().strip()}\n{script}")
