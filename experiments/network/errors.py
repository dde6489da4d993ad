"""What can go wrong with a network path, as one small hierarchy::

    NetworkError                  anything below; callers that only skip or report catch this
    ├── UnknownProfile            a profile name nobody defined (LookupError too)
    ├── NetworkUnavailable        this machine cannot build paths: not root, no ``ip``, no
    │                             ``nft``, no ``/dev/net/tun``, a Python binding missing
    ├── LeftoverError             a namespace of a dead run that could not be removed
    └── PathError                 building, running or breaking a path failed (a command
                                  failed, the delay line died, a fault on a path without one)

The command line turns the first three into one line on stderr and exit code 2. Library
exceptions (pyroute2's ``NetlinkError``, ``OSError``, a failing ``nft``) are converted at the
boundary with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "LeftoverError",
    "NetworkError",
    "NetworkUnavailable",
    "PathError",
    "UnknownProfile",
]


class NetworkError(Exception):
    """Base of every error of :mod:`experiments.network`."""


class UnknownProfile(NetworkError, LookupError):
    """A network profile name that is not defined."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown network profile {name!r}; known: {', '.join(known)}")
        self.name = name


class NetworkUnavailable(NetworkError):
    """The machine lacks what emulated paths need; the message lists every missing piece."""

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = tuple(missing)
        super().__init__("network paths need " + "; ".join(self.missing))


class LeftoverError(NetworkError):
    """A namespace left by a dead run could not be removed."""


class PathError(NetworkError):
    """Building, operating or measuring a path failed."""
