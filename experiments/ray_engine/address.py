"""``--ray-address HOST:PORT``: read it, and find this machine's address towards it (pure but
for :func:`route_source`)."""

from __future__ import annotations

import re
import socket

__all__ = ["BadAddress", "parse_address", "route_source"]

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


class BadAddress(ValueError):
    """Not ``HOST:PORT`` (one line)."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port): a host name or IPv4 address, a port in 1..65535."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port_text.isdigit():
        raise BadAddress(f"--ray-address wants HOST:PORT (e.g. 10.0.0.5:6379), got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise BadAddress(f"--ray-address: port {port} is outside 1..65535")
    return host, port


def route_source(host: str, port: int) -> str:
    """The address this machine sends from towards ``host`` (a UDP connect sends nothing):
    where a server must listen for clients on the cluster's other machines to reach it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError as exc:
        raise BadAddress(f"--ray-address {host}:{port}: no route from here: {exc}") from exc
