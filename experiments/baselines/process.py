"""Running a pusher's two sides as processes, like a transport's server and worker.

Both sides run where the :class:`~experiments.run.processes.Placement` says, on the event loop
it names (``--loop``), so a pusher is measured on the same loop as the transport beside it,
and under its garbage collector policy (``--gc``), as the transport's processes are.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec

from experiments.baselines import Pusher
from experiments.run.processes import (
    LOOPBACK,
    HarnessError,
    Placement,
    ServerProcess,
    settle_teardowns,
)
from experiments.worker.schema import ServerUsage
from model.ledger import DeliveryCounts
from transports.settings import Settings

__all__ = ["BaselineResult", "PusherServer", "measure_pusher"]


class BaselineResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a pusher's reader measured over its window."""

    pusher: str
    samples_in_window: int
    received: int
    window_s: float
    #: The reader's CPU seconds over the window.
    cpu_s: float
    server: ServerUsage | None
    counts: DeliveryCounts
    error: str | None

    @property
    def samples_per_s(self) -> float | None:
        return self.samples_in_window / self.window_s if self.window_s else None


class PusherServer(ServerProcess):
    """``python -m experiments.baselines serve NAME``, with the harness's readiness and teardown."""

    def __init__(
        self, pusher: Pusher, *, seed: int, p: float, ready_timeout_s: float, place: Placement
    ) -> None:
        super().__init__(
            f"pusher-{pusher.name}",
            rate_hz=0.0,
            settings=Settings(),
            seed=seed,
            p=p,
            ready_timeout_s=ready_timeout_s,
            host=place.host,
            exec_prefix=place.server_prefix,
            connect=place.connect,
            loop=place.loop,
            gc=place.gc,
        )
        self.pusher = pusher

    @property
    def argv(self) -> list[str]:
        return [
            *self.exec_prefix,
            sys.executable,
            "-m",
            "experiments.baselines",
            "serve",
            self.pusher.name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--seed",
            str(self.seed),
            "--p",
            str(self.p),
            "--loop",
            self.loop,
            "--gc",
            self.gc,
        ]


async def measure_pusher(
    pusher: Pusher,
    *,
    seed: int,
    p: float,
    warmup_s: float,
    duration_s: float,
    ready_timeout_s: float,
    place: Placement = LOOPBACK,
) -> BaselineResult:
    """Serve and read one pusher for warm-up + window (both sides where ``place`` says: on
    an emulated path, the same namespaces as the transport's); the reader's JSON result."""
    await settle_teardowns()  # nothing shuts down or starts up beside a measurement
    async with PusherServer(
        pusher, seed=seed, p=p, ready_timeout_s=ready_timeout_s, place=place
    ) as server:
        assert server.epoch is not None
        netns = ["--server-netns", place.server_netns] if place.server_netns else []
        proc = await asyncio.create_subprocess_exec(
            *place.client_prefix,
            sys.executable,
            "-m",
            "experiments.baselines",
            "read",
            pusher.name,
            "--host",
            place.host,
            "--port",
            str(server.port),
            *netns,
            "--epoch",
            server.epoch,
            "--seed",
            str(seed),
            "--p",
            str(p),
            "--warmup",
            str(warmup_s),
            "--duration",
            str(duration_s),
            "--server-pid",
            str(server.pid),
            "--loop",
            place.loop,
            "--gc",
            place.gc,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(warmup_s + duration_s + ready_timeout_s):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise HarnessError(f"pusher reader {pusher.name} failed: {err.decode()[-500:]}")
        try:
            return msgspec.json.decode(out, type=BaselineResult)
        except msgspec.DecodeError as exc:
            raise HarnessError(f"pusher reader {pusher.name}: {exc}") from exc
