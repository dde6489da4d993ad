"""Emulated network paths: namespaces, a delay line, kernel shaping, loss and faults.

The foundation of the ``--network`` dimension (issue 9). A run builds one path per profile::

    from experiments.network import NetworkPath, measure

    async with NetworkPath("wan", run_id, clients=2) as path:
        properties = await measure(path)          # judged against the profile
        argv = [*path.exec_prefix(path.server_ns), sys.executable, "-m", "transports",
                "serve", "tcp", "--host", path.server_addr, ...]
        ...
        await path.blackhole(0); await path.heal(0)

Modules, one concern each:

- ``profiles`` — the profiles as frozen data (``loopback``, ``lan``, ``wan``, ``mobile``,
  ``lossy``) and their lookup;
- ``layout`` — names and addresses of a run's namespaces and interfaces (pure);
- ``path`` — :class:`NetworkPath`: build, reach into, break and tear down one path;
- ``delay_line`` — the TUN delay line process (``python -m experiments.network.delay_line``);
- ``nftables`` — the router's ruleset: random loss and the fault sets;
- ``shaping`` — ``tbf`` parameters for a rate (pure);
- ``namespaces`` — creating, entering and emptying network namespaces;
- ``stale`` — run ownership and clean-up of killed runs' leftovers;
- ``requirements`` — what the machine must have (root, ``ip``, ``nft``, ``/dev/net/tun``);
- ``measurement`` / ``properties`` — measuring a path, and judging the figures (pure);
- ``flood`` — the UDP sender used to find the delay line's ceiling;
- ``errors`` — the error hierarchy (drawn there);
- ``cli`` — ``python -m experiments.network list | check PROFILES | clean``.
"""

from __future__ import annotations

from experiments.network.errors import (
    LeftoverError,
    NetworkError,
    NetworkUnavailable,
    PathError,
    UnknownProfile,
)
from experiments.network.layout import new_run_id
from experiments.network.measurement import delay_line_ceiling, measure
from experiments.network.path import NetworkPath
from experiments.network.profiles import PROFILES, Profile, get_profile, parse_profiles
from experiments.network.properties import Check, Measured, PathProperties
from experiments.network.requirements import missing as missing_requirements
from experiments.network.requirements import require as require_network

__all__ = [
    "PROFILES",
    "Check",
    "LeftoverError",
    "Measured",
    "NetworkError",
    "NetworkPath",
    "NetworkUnavailable",
    "PathError",
    "PathProperties",
    "Profile",
    "UnknownProfile",
    "delay_line_ceiling",
    "get_profile",
    "measure",
    "missing_requirements",
    "new_run_id",
    "parse_profiles",
    "require_network",
]
