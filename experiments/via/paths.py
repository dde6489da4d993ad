"""The ``--via`` dimension: which paths exist, and which transports can take them (pure).

``direct``: the client connects to the server. ``nginx``: through nginx configured as the
project recommends (``nginx-recommended.conf``). ``nginx-defaults``: through nginx with
nothing but ``proxy_pass`` (``nginx-defaults.conf``).

Which transports go through nginx is read from the transport record's ``bad_input_family``,
which already names the protocol a transport speaks on the wire: the WebSocket, HTTP-stream
and HTTP-poll families all ride on HTTP/1.1, which nginx's ``proxy_pass`` carries; ``tcp``
(raw NDJSON) does not, and neither would a later family that is not HTTP/1.1 (gRPC needs
``grpc_pass`` and HTTP/2, WebTransport is QUIC). An allow-list, so a new family counts as
"not applicable" until someone shows nginx carries it, rather than failing in every run.
"""

from __future__ import annotations

from typing import Literal

from transports.contract import Transport

__all__ = [
    "HTTP_FAMILIES",
    "PROXIED",
    "VIAS",
    "VIA_SCENARIOS",
    "UnknownVia",
    "Via",
    "not_applicable",
    "parse_vias",
]

Via = Literal["direct", "nginx", "nginx-defaults"]
VIAS: tuple[Via, ...] = ("direct", "nginx", "nginx-defaults")
#: The paths with nginx in them.
PROXIED: tuple[Via, ...] = ("nginx", "nginx-defaults")
#: Scenarios about proxies: they run by default only when ``--via`` names an nginx path.
VIA_SCENARIOS: tuple[str, ...] = ("quiet-stream",)
#: ``bad_input_family`` values whose protocol is HTTP/1.1 (nginx's ``proxy_pass`` carries it).
HTTP_FAMILIES = frozenset({"websocket", "http-stream", "http-poll"})


class UnknownVia(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown --via path {name!r}; known: {', '.join(VIAS)}")


def parse_vias(text: str) -> tuple[Via, ...]:
    """``"direct,nginx"`` -> ``("direct", "nginx")``; :class:`UnknownVia` for a bad name."""
    out: list[Via] = []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownVia(text)
    for name in names:
        via = next((v for v in VIAS if v == name), None)
        if via is None:
            raise UnknownVia(name)
        if via not in out:
            out.append(via)
    return tuple(out)


def not_applicable(via: str, transport: Transport) -> str | None:
    """Why ``transport`` cannot run ``via`` this path (None: it can)."""
    if via == "direct" or transport.bad_input_family in HTTP_FAMILIES:
        return None
    return (
        f"not applicable: {transport.name} speaks {transport.bad_input_family}, "
        "not HTTP/1.1, so an HTTP reverse proxy cannot carry it"
    )
