"""``python -m experiments.ray_engine``: the Ray driver (:mod:`experiments.ray_engine.driver`)."""

from __future__ import annotations

import sys

from experiments.ray_engine.driver import main

if __name__ == "__main__":
    sys.exit(main())
