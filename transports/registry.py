"""The one list of transports. Tests, the CLI and the experiments iterate it.

Each entry names the module that builds the transport's record and the record's name there;
the module is imported the first time the record is asked for. ``python -m transports serve
tcp`` so imports tcp's libraries only, not grpc's, aioquic's and every other's (about 1.5 s of
CPU at start-up when all were imported, which a harness starting many servers at once pays
many times over). Iterating :data:`TRANSPORTS` (names) imports nothing; its values import
every transport, in the order listed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from transports.contract import Transport

__all__ = ["TRANSPORTS", "UnknownTransport", "get"]

#: name -> (module, attribute holding its Transport record), in the order reports list them.
_WHERE: dict[str, tuple[str, str]] = {
    "tornado-ws": ("transports.tornado_ws", "TORNADO_WS"),
    "tornado-ws-seed": ("transports.tornado_ws", "SEED"),
    "sse": ("transports.sse", "SSE"),
    "poll": ("transports.polling", "POLL"),
    "long-poll": ("transports.polling", "LONG_POLL"),
    "tcp": ("transports.tcp", "TCP"),
    "websockets": ("transports.websockets_ws", "WEBSOCKETS"),
    "aiohttp-ws": ("transports.aiohttp_ws", "AIOHTTP_WS"),
    "http-stream": ("transports.http_stream", "HTTP_STREAM"),
    "webtransport": ("transports.webtransport", "WEBTRANSPORT"),
    "grpc": ("transports.grpc_stream", "GRPC"),
}


class _Registry(Mapping[str, Transport]):
    """Every transport by name; a record's module is imported when the record is first read."""

    def __init__(self, where: Mapping[str, tuple[str, str]]) -> None:
        self._where = dict(where)
        self._loaded: dict[str, Transport] = {}

    def __getitem__(self, name: str) -> Transport:
        record = self._loaded.get(name)
        if record is None:
            module, attribute = self._where[name]
            record = getattr(importlib.import_module(module), attribute)
            if not isinstance(record, Transport) or record.name != name:
                raise TypeError(f"{module}.{attribute} is not the {name!r} transport")
            self._loaded[name] = record
        return record

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


TRANSPORTS: Mapping[str, Transport] = _Registry(_WHERE)


class UnknownTransport(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown transport {name!r}; known: {', '.join(TRANSPORTS)}")


def get(name: str) -> Transport:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise UnknownTransport(name) from None
