"""Interchangeable transports for one stream of samples, and the pieces they share.

``python -m transports`` is the manual command line; :mod:`transports.registry` lists every
transport; :mod:`transports.contract` says what one is.
"""

from __future__ import annotations

__all__: list[str] = []
