"""``python -m experiments``: see :mod:`experiments.run.cli`."""

from __future__ import annotations

import sys

from experiments.run.cli import main

__all__: list[str] = []

sys.exit(main())
