"""The network profiles: what each emulated path between server and clients looks like.

A profile is plain data; :class:`experiments.network.path.NetworkPath` turns it into
namespaces, a delay line, ``tbf`` and nftables rules. Every condition applies to each
direction on its own: ``rtt_ms`` is split in half per direction (so the round trip is the
RTT), ``rate_mbit`` shapes each direction to that rate, and ``loss`` drops that fraction of
the packets of each direction (so a round trip loses about twice as much).
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.network.errors import UnknownProfile

__all__ = ["PROFILES", "Profile", "get_profile", "parse_profiles"]


@dataclass(frozen=True, slots=True)
class Profile:
    """One emulated path.

    ``namespaces`` False means plain loopback in the caller's own namespace (no conditions
    possible). ``rtt_ms`` None means no delay line at all (veth only); 0.0 means a delay line
    that holds nothing (used to measure the delay line's own ceiling). ``rate_mbit`` None means
    unshaped. ``loss`` is a fraction per direction, in steps of 0.1 % (nftables draws a number
    in 0..999 per packet).
    """

    name: str
    description: str
    namespaces: bool = True
    rtt_ms: float | None = None
    rate_mbit: float | None = None
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not self.namespaces and (self.rtt_ms is not None or self.rate_mbit or self.loss):
            raise ValueError(f"profile {self.name}: loopback cannot carry conditions")
        if self.rtt_ms is not None and self.rtt_ms < 0:
            raise ValueError(f"profile {self.name}: negative rtt_ms")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ValueError(f"profile {self.name}: rate_mbit must be positive")
        if not 0.0 <= self.loss < 1.0 or abs(self.loss * 1000 - round(self.loss * 1000)) > 1e-9:
            raise ValueError(f"profile {self.name}: loss must be in [0, 1) in steps of 0.001")

    @property
    def one_way_delay_ms(self) -> float:
        """What the delay line holds each packet for: half the round trip."""
        return (self.rtt_ms or 0.0) / 2

    @property
    def loss_per_mille(self) -> int:
        """The drop threshold for ``numgen random mod 1000 < N``."""
        return round(self.loss * 1000)

    @property
    def has_delay_line(self) -> bool:
        return self.rtt_ms is not None

    def summary(self) -> str:
        """``40 ms RTT, 50 Mbit/s, 1% loss`` — the conditions in words, for reports."""
        if not self.namespaces:
            return "loopback, no emulation"
        parts = [] if self.rtt_ms is None else [f"{self.rtt_ms:g} ms RTT"]
        if self.rate_mbit is not None:
            parts.append(f"{self.rate_mbit:g} Mbit/s")
        if self.loss:
            parts.append(f"{self.loss * 100:g}% loss each way")
        return ", ".join(parts) or "veth, no shaping"


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("loopback", "127.0.0.1 in the caller's own namespace", namespaces=False),
        Profile("lan", "veth pairs through a router namespace, no shaping"),
        Profile("wan", "a continental path", rtt_ms=40.0, rate_mbit=50.0),
        Profile("mobile", "a loaded mobile link", rtt_ms=120.0, rate_mbit=5.0, loss=0.01),
        Profile("lossy", "a lossy path without a rate limit", rtt_ms=40.0, loss=0.03),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfile(name, PROFILES) from None


def parse_profiles(text: str) -> tuple[Profile, ...]:
    """``"wan,mobile"`` -> the profiles, in that order; an unknown name raises at once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownProfile(text, PROFILES)
    return tuple(get_profile(n) for n in names)
