"""The spare client worker never starts beside a measurement.

A spare (a worker process spawned ahead of need, its imports done, waiting for a job) costs
about a second of CPU while it starts. It is spawned only once no ClientProcess is running,
and ``settle_teardowns`` (which every worker and pusher awaits before it measures) waits until
the spare has said its imports are done.
"""

from __future__ import annotations

import pytest

from experiments.run.processes import ServerProcess, settle_teardowns
from experiments.run.profiles import EXPERIMENT_SETTINGS
from experiments.worker import process
from experiments.worker.process import PRESPAWN, ClientProcess, discard_spare
from experiments.worker.schema import ClientGroup, ClientJob


def _job(port: int) -> ClientJob:
    return ClientJob(
        transport="tcp",
        host="127.0.0.1",
        port=port,
        groups=(ClientGroup(1),),
        settings=EXPERIMENT_SETTINGS,
        count=20,
        connect_timeout_s=10.0,
    )


@pytest.mark.timeout(90)
async def test_a_spare_starts_only_between_workers_and_is_ready_before_the_next() -> None:
    PRESPAWN["enabled"] = True
    try:
        async with ServerProcess("tcp", rate_hz=200.0, settings=EXPERIMENT_SETTINGS) as server:
            async with (
                ClientProcess(_job(server.port)) as first,
                ClientProcess(_job(server.port)) as second,
            ):
                assert process._spare is None  # none while workers run
                await first.result(timeout_s=30.0)
                await second.result(timeout_s=30.0)
                assert process._spare is None
            # Both closed: now the spare starts, and settling waits for its imports.
            assert process._spare is not None
            task, _ = process._spare
            await settle_teardowns()
            assert task.done()
            spare = task.result()
            assert spare.returncode is None  # alive, waiting for its job
            async with ClientProcess(_job(server.port)) as third:
                assert third.pid == spare.pid  # the next worker is the spare
                result = await third.result(timeout_s=30.0)
            assert result.clients[0].received == 20
    finally:
        PRESPAWN["enabled"] = False
        await discard_spare()
