"""report.md, PNG plots and the console summary, from results.json alone.

``python -m experiments.report RESULTS_DIR`` rewrites a run's report. By concern:

- :mod:`~experiments.report.figures`: median and range over repeats, delivery totals,
  number formatting (latency histograms live in :mod:`experiments.histogram`);
- :mod:`~experiments.report.rows`: records -> rows (one per transport and params), each
  column's figure, ratios to the reference transport;
- :mod:`~experiments.report.tables`: a scenario's markdown table from its ``columns``;
- :mod:`~experiments.report.conditions`: machine, software, the one settings table, citing;
- :mod:`~experiments.report.plots`: latency-by-percentile and fault timeline PNGs;
- :mod:`~experiments.report.faults`: the reconnection table of the fault scenarios;
- :mod:`~experiments.report.summary`: the console table and per-scenario progress lines;
- :mod:`~experiments.report.markdown`: the whole report, and the command line.

Scenarios call the plots and the fault table from their ``sections``; nothing here imports
a scenario module at import time (scenarios import the report).
"""

from __future__ import annotations

__all__: list[str] = []
