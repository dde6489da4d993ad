"""``python -m experiments.network``: check the emulated paths by hand.

::

    python -m experiments.network list                 # the profiles and their conditions
    python -m experiments.network check wan,mobile     # build, measure, tear down; one line each
    python -m experiments.network clean                # remove leftovers of killed runs

``check`` exits 0 when every profile is within tolerance and 1 when one is not (the line
says which property). An unknown profile, a machine that cannot emulate paths (not root, no
``nft``, ...) or a leftover that cannot be removed: one line on stderr, exit 2. Ctrl-C: the
path is torn down, exit 130.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from experiments.network import stale
from experiments.network.errors import (
    LeftoverError,
    NetworkError,
    NetworkUnavailable,
    UnknownProfile,
)
from experiments.network.measurement import measure
from experiments.network.path import NetworkPath
from experiments.network.profiles import PROFILES, Profile, parse_profiles

__all__ = ["main"]

EXIT_OUT_OF_TOLERANCE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.network", description="Emulated network paths."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the network profiles")
    check = commands.add_parser("check", help="build, measure and tear down each profile")
    check.add_argument("profiles", help="comma-separated, e.g. wan,mobile")
    commands.add_parser("clean", help="remove the namespaces of killed runs")
    return parser


async def _check(profiles: Sequence[Profile]) -> int:
    worst = 0
    for profile in profiles:
        async with NetworkPath(profile) as path:
            if sys.stderr.isatty():
                print(f"measuring {profile.name} (run {path.run_id}) ...", file=sys.stderr)
            properties = await measure(path)
        print(properties.line(), flush=True)
        if not properties.ok:
            worst = EXIT_OUT_OF_TOLERANCE
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            for profile in PROFILES.values():
                print(f"{profile.name:9} {profile.summary()}")
            return 0
        if args.command == "clean":
            for name in stale.clean_stale():
                print(f"removed {name}")
            return 0
        return asyncio.run(_check(parse_profiles(args.profiles)))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (UnknownProfile, NetworkUnavailable, LeftoverError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
