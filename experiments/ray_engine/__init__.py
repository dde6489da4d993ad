"""Clients on many machines: the client workers as Ray actors (``--engine ray``).

The built-in engine runs a job's clients in worker processes of this machine
(:mod:`experiments.worker`). Under Ray, a *driver* process, ``python -m experiments.ray_engine``
(:mod:`.driver`), joins a Ray cluster, spreads the job's clients over async actors
(:mod:`.actor`) placed on the cluster's nodes (:mod:`.placement`), and speaks the very line
protocol of ``python -m experiments.worker``: one merged
:class:`~experiments.worker.schema.WorkerReady` once every actor's clients have connected, one
merged :class:`~experiments.worker.schema.WorkerResult` at the end (:mod:`.merge`), so the
harness hosts it in a :class:`~experiments.worker.process.ClientProcess`
(:func:`.clients.ray_clients`). Each actor runs the project's own
:func:`experiments.worker.main.run_job` on a share of the clients; the server probe and the
measure of Ray's own cost (:mod:`.overhead`) run in the driver, beside the server.

The cluster (:mod:`.cluster`) is either one the user runs (``--ray-address HOST:PORT``,
:mod:`.address`) or one the run starts for itself: a local head, or on an emulated network
path a head in the server's namespace and one worker node per client namespace (simulated
hosts), every Ray process stopped and its temporary directory removed when the run ends.

The rest: :mod:`.schema` (the driver's job and what an actor says about itself),
:mod:`.dimension` (``--engine`` and which steps run under Ray), :mod:`.report` (the fan-out's
Ray figures and report section).

Nothing here imports ``ray`` at module level except :mod:`.actor` and :mod:`.driver`: the
harness side never loads it.
"""
