"""``python -m experiments.report RESULTS_DIR``: rewrite report.md and its plots."""

from __future__ import annotations

import sys

from experiments.report.markdown import main

if __name__ == "__main__":
    sys.exit(main())
