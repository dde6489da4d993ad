"""matplotlib on demand: ``pyplot()`` at the first plot, not when the command line starts.

Importing pyplot costs about half a second; ``python -m experiments --help``, a bad option
or a worker need none of it. The backend is Agg (PNG files, no display).
"""

from __future__ import annotations

import functools
from types import ModuleType

__all__ = ["pyplot"]


@functools.cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
