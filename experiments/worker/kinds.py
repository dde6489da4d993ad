"""Client kinds: who reads the stream in an experiment (``--client-kinds python,browser``).

- ``python``: the suite's own clients, in a worker process (:mod:`experiments.worker.main`);
- ``browser``: the live page's clients in headless Chromium
  (:mod:`experiments.worker.browser`): ``EventSource``, the page's ``WebSocket`` with its
  reconnect, ``fetch`` polling loops, the page's ``WebTransport`` (the server's certificate
  pinned by its hash). Only on the transports the page reads, and only in the scenarios a
  page takes part in (:data:`~experiments.worker.page_outcome.BROWSER_SCENARIOS`).

Every record says its kind in ``params["client_kind"]``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from experiments.worker.page_outcome import BROWSER_SCENARIOS, browser_family
from experiments.worker.schema import WorkerReady, WorkerResult

__all__ = [
    "CLIENT_KINDS",
    "Clients",
    "UnknownClientKind",
    "kind_not_applicable",
    "parse_client_kinds",
    "runs_in",
]

CLIENT_KINDS = ("python", "browser")


class Clients(Protocol):
    """What a scenario drives, whatever the kind: a worker process or browser pages."""

    async def wait_ready(self) -> WorkerReady: ...

    async def result(self, timeout_s: float | None = None) -> WorkerResult: ...

    async def stop(self, timeout_s: float = 30.0) -> WorkerResult: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class UnknownClientKind(ValueError):
    pass


def parse_client_kinds(text: str) -> tuple[str, ...]:
    """``python,browser`` -> the kinds, in order, each once."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not kinds:
        raise UnknownClientKind("expected a comma-separated list of client kinds")
    for kind in kinds:
        if kind not in CLIENT_KINDS:
            raise UnknownClientKind(f"unknown client kind {kind!r}; of {', '.join(CLIENT_KINDS)}")
    return kinds


def runs_in(kind: str, scenario: str) -> bool:
    """Whether clients of ``kind`` take part in ``scenario``."""
    return kind != "browser" or scenario in BROWSER_SCENARIOS


def kind_not_applicable(kind: str, transport: str) -> str | None:
    """Why clients of ``kind`` cannot read ``transport`` (None: they can)."""
    if kind == "browser" and browser_family(transport) is None:
        return f"no browser client: the live page does not read {transport}"
    return None
