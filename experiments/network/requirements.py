"""What an emulated path needs from the machine, checked once, reported all at once."""

from __future__ import annotations

import importlib.util
import os
import shutil

from experiments.network.errors import NetworkUnavailable

__all__ = ["missing", "require"]

TUN_DEVICE = "/dev/net/tun"


def missing() -> list[str]:
    """Each missing piece in words (empty when everything is there)."""
    gaps: list[str] = []
    if os.geteuid() != 0:
        gaps.append(f"root (running as uid {os.geteuid()})")
    if shutil.which("ip") is None:
        gaps.append("the ip command (Debian package iproute2)")
    if shutil.which("nft") is None:
        gaps.append("the nft command (Debian package nftables)")
    if not os.path.exists(TUN_DEVICE):
        gaps.append(f"{TUN_DEVICE} (the tun kernel module)")
    for module, package in (("pyroute2", "pyroute2"), ("pytun", "python-pytun")):
        if importlib.util.find_spec(module) is None:
            gaps.append(f"the Python package {package}")
    return gaps


def require() -> None:
    """Raise :class:`NetworkUnavailable` listing everything missing."""
    gaps = missing()
    if gaps:
        raise NetworkUnavailable(gaps)
