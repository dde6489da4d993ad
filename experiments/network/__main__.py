"""``python -m experiments.network``: see :mod:`experiments.network.cli`."""

from __future__ import annotations

import sys

from experiments.network.cli import main

__all__: list[str] = []

sys.exit(main())
