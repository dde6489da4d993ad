"""What crosses into the Ray driver and between it and its actors: typed, msgspec-encoded.

:class:`RayJob` is the driver's payload (stdin of ``python -m experiments.ray_engine``): the
whole :class:`~experiments.worker.schema.ClientJob` and how to run it over the cluster.
:class:`ActorInfo` is what an actor says about itself when its job starts. Actor results
travel as the worker's own :class:`~experiments.worker.schema.WorkerResult` JSON.
"""

from __future__ import annotations

import msgspec

from experiments.ray_engine.placement import MAX_CLIENTS_PER_ACTOR
from experiments.worker.schema import ClientJob

__all__ = ["ActorInfo", "RayJob", "decode_info", "decode_ray_job", "encode"]


class RayJob(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One client job run over a Ray cluster by the driver."""

    job: ClientJob
    #: The cluster's GCS, ``HOST:PORT`` (the driver must run on one of its nodes).
    address: str
    #: How many actors (None: :func:`~experiments.ray_engine.placement.actor_count` of the
    #: job's clients over the nodes actors go to).
    actors: int | None = None
    max_clients_per_actor: int = MAX_CLIENTS_PER_ACTOR
    #: At least this many actors when ``actors`` is None.
    min_actors: int = 1
    #: Wait (up to ``start_timeout_s``) until the cluster has this many nodes alive.
    expect_nodes: int = 1
    #: The ``ray start`` processes of a cluster the run started, on this machine: their
    #: process trees are Ray's cost (empty: every Ray process here, for a joined cluster).
    ray_pids: tuple[int, ...] = ()
    #: For joining the cluster, creating the actors and their start (not the connects).
    start_timeout_s: float = 120.0
    #: The token of a cluster the run started (Ray's token authentication; None: a joined
    #: cluster, whose own settings the driver's environment carries).
    auth_token: str | None = None


class ActorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where an actor runs."""

    node_id: str
    pid: int
    #: The machine and pid namespace it runs in (:func:`~experiments.ray_engine.actor.host_key`):
    #: the driver reads the pids of actors that share its own.
    host: str
    #: The threads Ray ran in the actor's process before its job's thread started.
    ray_threads: tuple[int, ...]
    #: The actor's Python sees this ``ray`` version.
    ray_version: str


_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(RayJob)
_info_decoder = msgspec.json.Decoder(ActorInfo)


def encode(obj: RayJob | ActorInfo) -> bytes:
    return _encoder.encode(obj)


def decode_ray_job(data: bytes | str) -> RayJob:
    return _job_decoder.decode(data)


def decode_info(data: bytes | str) -> ActorInfo:
    return _info_decoder.decode(data)
