"""``python -m experiments.worker``: run one client job (see :mod:`experiments.worker.main`)."""

from __future__ import annotations

import sys

from experiments.worker.main import main

if __name__ == "__main__":
    sys.exit(main())
