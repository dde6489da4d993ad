"""``python -m experiments``: see :mod:`experiments.cli`."""

from __future__ import annotations

import sys

from experiments.cli import main

__all__: list[str] = []

sys.exit(main())
