"""One connection's samples as an async iterator that remembers whether the stream broke.

A client's ``connect`` yields one: ``async for`` steps the reading generator itself (no
Python call per sample), ``broken`` says whether the connection failed (so the client's exit
skips a polite close a broken peer would hold up), and ``aclose`` may be called from another
task. A transport subclasses it with its ``_read`` generator, setting what ``_read`` needs
before calling ``super().__init__()``.

A transport that reads many samples at once (a socket chunk of NDJSON lines) yields a
:class:`BatchedSampleStream` instead: the shared client takes its lists (``batches()``), one
step of a generator per read rather than one per sample; ``async for`` over it still yields
sample by sample for any other reader.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Sequence

from model.sample import Sample

__all__ = ["BatchedSampleStream", "SampleStream"]


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


class BatchedSampleStream:
    """The samples of one connection, read a list at a time by ``batches`` (never empty lists).

    Read it one way: ``batches()`` (the shared client does) or ``async for`` (which flattens
    the same lists), not both.
    """

    def __init__(self, batches: AsyncGenerator[Sequence[Sample], None]) -> None:
        self._batches = batches
        self._samples = self._flatten()

    def batches(self) -> AsyncGenerator[Sequence[Sample], None]:
        return self._batches

    def __aiter__(self) -> AsyncGenerator[Sample, None]:
        return self._samples

    def __anext__(self) -> Awaitable[Sample]:
        return self._samples.__anext__()

    async def aclose(self) -> None:
        # RuntimeError: running in another task (see SampleStream.aclose).
        for generator in (self._samples, self._batches):
            with contextlib.suppress(RuntimeError):
                await generator.aclose()

    async def _flatten(self) -> AsyncGenerator[Sample, None]:
        async for batch in self._batches:
            for sample in batch:
                yield sample
