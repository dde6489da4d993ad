"""Which event loop a process runs on: the standard ``asyncio`` one or ``uvloop`` (libuv).

``serve`` and ``listen`` take ``--loop asyncio|uvloop`` (default ``asyncio``); the experiments
run servers, client workers and baseline pushers on the same loop, so every comparison within
one loop is like with like. :func:`run` is ``asyncio.run`` on the named loop (an
:class:`asyncio.Runner` with uvloop's loop factory: the same SIGINT handling, the same
shutdown of async generators and the default executor). :func:`running_loop_name` says which
loop really runs, for the readiness announcement and the records; :func:`parse_loops` reads a
comma-separated list of names for the experiments' command line.

Every transport's library runs on both loops (tornado, aiohttp, uvicorn, websockets, httpx,
grpcio's asyncio API, aioquic): ``tests/test_dimensions.py`` serves and reads each one on
uvloop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "DEFAULT_LOOP",
    "LOOPS",
    "LoopName",
    "UnknownLoop",
    "loop_factory",
    "parse_loops",
    "run",
    "running_loop_name",
]

LoopName = Literal["asyncio", "uvloop"]
#: Every loop a process can run on, in the order the experiments run them.
LOOPS: tuple[LoopName, ...] = get_args(LoopName)
DEFAULT_LOOP: LoopName = "asyncio"

_T = TypeVar("_T")


class UnknownLoop(ValueError):
    """A loop name that is not one of :data:`LOOPS`, in one line."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown event loop {name!r}; known: {', '.join(LOOPS)}")


def _checked(name: str) -> LoopName:
    for known in LOOPS:
        if name == known:
            return known
    raise UnknownLoop(name)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a loop of ``name`` (None: asyncio's default policy, as ``asyncio.run``)."""
    if _checked(name) == "asyncio":
        return None
    import uvloop  # imported only by the processes that run on it

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, _T], loop: str = DEFAULT_LOOP) -> _T:
    """``asyncio.run(main)`` on the loop named ``loop``."""
    try:
        factory = loop_factory(loop)
    except UnknownLoop:
        main.close()  # never awaited: say nothing about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> LoopName:
    """The loop this coroutine runs on: ``uvloop`` when its loop is uvloop's, else ``asyncio``."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"


def parse_loops(text: str) -> tuple[LoopName, ...]:
    """``asyncio,uvloop`` -> the names, in order, each once; :class:`UnknownLoop` otherwise."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownLoop(text)
    return tuple(dict.fromkeys(_checked(n) for n in names))
