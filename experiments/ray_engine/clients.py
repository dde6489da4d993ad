"""The harness's side of ``--engine ray``: a job's clients as one driver process.

:func:`ray_clients` gives a :class:`~experiments.worker.process.ClientProcess` running
``python -m experiments.ray_engine`` (:mod:`.driver`) with a
:class:`~experiments.ray_engine.schema.RayJob` for ``job`` over ``cluster``: the same calls
(``start``, ``wait_ready``, ``result``, ``stop``, ``close``, ``async with``) and the same lines
as a built-in worker, so a scenario drives either alike. The driver runs where the cluster
says (beside the head, so beside the server on an emulated path).
"""

from __future__ import annotations

from experiments.ray_engine.cluster import RayCluster
from experiments.ray_engine.placement import MAX_CLIENTS_PER_ACTOR
from experiments.ray_engine.schema import RayJob, encode
from experiments.worker.process import ClientProcess
from experiments.worker.schema import ClientJob

__all__ = ["DRIVER_MODULE", "START_BUDGET_S", "ray_clients"]

DRIVER_MODULE = "experiments.ray_engine"
#: Joining the cluster and starting the actors' processes (a few seconds each on a busy
#: two-core machine), on top of the job's own connect timeout.
START_BUDGET_S = 120.0


def ray_clients(
    job: ClientJob,
    cluster: RayCluster,
    *,
    actors: int | None = None,
    min_actors: int = 1,
    max_clients_per_actor: int = MAX_CLIENTS_PER_ACTOR,
) -> ClientProcess:
    """``job``'s clients over ``cluster``'s actors (``actors``: how many; None: as the
    placement rules decide, at least ``min_actors``)."""
    rjob = RayJob(
        job=job,
        address=cluster.address,
        actors=actors,
        max_clients_per_actor=max_clients_per_actor,
        min_actors=min_actors,
        expect_nodes=cluster.expect_nodes,
        ray_pids=cluster.ray_pids,
        start_timeout_s=START_BUDGET_S,
        auth_token=cluster.auth_token,
    )
    return ClientProcess(
        job,
        ready_timeout_s=job.connect_timeout_s + 3 * START_BUDGET_S,
        exec_prefix=cluster.driver_prefix,
        module=DRIVER_MODULE,
        payload=encode(rjob),
    )
