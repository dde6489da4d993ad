"""One connection's samples as an async iterator that remembers whether the stream broke.

A client's ``connect`` yields one: ``async for`` steps the reading generator itself (no
Python call per sample), ``broken`` says whether the connection failed (so the client's exit
skips a polite close a broken peer would hold up), and ``aclose`` may be called from another
task. A transport subclasses it with its ``_read`` generator, setting what ``_read`` needs
before calling ``super().__init__()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable

from model.sample import Sample

__all__ = ["SampleStream"]


class SampleStream:
    """The samples of one connection, read by the subclass's ``_read``."""

    def __init__(self) -> None:
        self.broken = False
        self._stream = self._read()

    def __aiter__(self) -> AsyncGenerator[Sample, None]:
        # The generator itself, so ``async for`` steps it without a Python call per sample.
        return self._stream

    def __anext__(self) -> Awaitable[Sample]:
        return self._stream.__anext__()

    async def aclose(self) -> None:
        # RuntimeError: the generator is running in another task and cannot be closed from
        # here; the connection is closed right after, which ends the read it is waiting in.
        with contextlib.suppress(RuntimeError):
            await self._stream.aclose()

    def _read(self) -> AsyncGenerator[Sample, None]:
        raise NotImplementedError
