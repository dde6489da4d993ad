"""Experiments: run every transport side by side and report the figures.

``python -m experiments`` (what ``nox -s compare`` runs) starts each transport's server through
the real CLI (:mod:`experiments.harness`), runs clients in worker processes
(:mod:`experiments.client_worker`), runs the scenarios of :mod:`experiments.scenarios` over the
transports of ``transports.registry`` (never a hand-written list), writes
``results/<UTC time>/results.json`` (:mod:`experiments.results`, schema 1) and renders
``report.md`` and PNG plots from that file alone (:mod:`experiments.report`).

Modules:

- :mod:`experiments.cli` — command line, progress bar, summary table;
- :mod:`experiments.profiles` — quick/default/full: durations, rates, clients, repeats;
- :mod:`experiments.harness` — ServerProcess, ClientProcess (readiness, teardown, psutil);
- :mod:`experiments.jobs` / :mod:`experiments.client_worker` — the client worker's job/result;
- :mod:`experiments.context` — what a scenario gets (RunContext);
- :mod:`experiments.runner` — repeats x scenarios x transports;
- :mod:`experiments.scenarios` — the scenario registry, one module per scenario;
- :mod:`experiments.pushers` — minimal standalone pushers per library (throughput baseline);
- :mod:`experiments.stats` / :mod:`experiments.aggregate` — percentiles, median and range;
- :mod:`experiments.results` — results.json and the environment it records;
- :mod:`experiments.report` / :mod:`experiments.plots` — report.md and PNG plots.
"""

from __future__ import annotations

__all__: list[str] = []
