"""Experiments: run every transport side by side and report the figures.

``python -m experiments`` (what ``nox -s compare`` runs) starts each transport's server through
the real CLI, runs clients in worker processes, runs the scenarios over the transports of
``transports.registry`` (never a hand-written list), writes ``results/<UTC time>/results.json``
and renders ``report.md`` and PNG plots from that file alone.

The layout, one folder per concern:

- ``run/`` — running a comparison: the command line (``cli``), the loop over repeats,
  scenarios and transports (``runner``), what a scenario gets (``context``), the profiles and
  the one set of settings every transport runs with (``profiles``), and the server processes
  with their readiness and teardown (``processes``);
- ``worker/`` — the client side, in its own processes: the typed job, events and result that
  cross the process boundary (``schema``), the worker itself (``main``), starting it
  (``process``), and the one probe of a server's CPU, RSS and socket bytes (``probe``);
- ``faults/`` — what breaks things: the Toxiproxy-like fault proxy (``proxy``), hostile peers
  per protocol family (``hostile``), the pure per-fault figures (``windows``) and what the
  fault scenarios share (``rounds``);
- ``scenarios/`` — one module per scenario, each owning its run, its knobs per profile, its
  table columns and its report sections (``scenario`` holds the contract, ``delivery`` the one
  delivery judgement every scenario makes);
- ``baselines/`` — minimal standalone pushers, one per library: each transport's ceiling on
  its own library, named on its registry record;
- ``report/`` — report.md, plots and the console summary, from results.json alone;
- ``results.py`` — the results.json schema, shared by the run and the report;
- ``clock_offset.py`` — this host's clock against the server's (``serve --clock-port``), with
  its error bound: latencies across hosts;
- ``ray_engine/`` — ``--engine ray``: the clients as Ray actors over a cluster (a driver that
  speaks the worker's lines, the actors, placement, merging, the cluster the run starts);
- ``sigint.py`` — teardown that a second Ctrl-C cannot cut short (network paths, Ray nodes);
- ``histogram.py`` — HDR latency histograms, mergeable across clients, workers and repeats.
"""

from __future__ import annotations

__all__: list[str] = []
