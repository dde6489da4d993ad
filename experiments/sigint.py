"""Teardown that a second Ctrl-C cannot cut short: :func:`sigint_held`."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["sigint_held"]


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Hold SIGINT (delivered after the block) so a second Ctrl-C cannot cut teardown short.

    Only the main thread receives signals in Python; elsewhere there is nothing to hold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
