"""What a path measured, judged against its profile (pure: no I/O).

Tolerances are the issue's: RTT and connect time within 10 % or 0.5 ms of the profile's RTT,
rate within 10 %, loss within half a percentage point, and the profile's peak packet rate
below the delay line's ceiling. A property the profile does not set (the RTT of ``lan``, the
rate of ``lossy``) is reported and not judged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from experiments.network.profiles import Profile
from experiments.network.shaping import peak_packet_rate

__all__ = [
    "LOSS_TOLERANCE",
    "RATE_TOLERANCE",
    "RTT_TOLERANCE",
    "RTT_TOLERANCE_MS",
    "Check",
    "Measured",
    "PathProperties",
    "judge",
]

RTT_TOLERANCE = 0.10
RTT_TOLERANCE_MS = 0.5
RATE_TOLERANCE = 0.10
LOSS_TOLERANCE = 0.005


@dataclass(frozen=True, slots=True)
class Check:
    """One property against its target: ``|measured - expected| <= tolerance``."""

    name: str
    expected: float
    measured: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.measured - self.expected) <= self.tolerance


@dataclass(frozen=True, slots=True)
class Measured:
    """The raw figures of one measurement, before judging.

    ``rate_*_mbit`` is the rate on the shaped wire (bytes the router's veth sent, Ethernet
    header included, as ``tbf`` counts them), measured during a TCP bulk transfer with the
    random loss suspended; ``goodput_*_mbit`` is the TCP payload of the same transfer. On
    loopback there is no wire to count and both are the goodput. ``loss_*`` are fractions of
    ``loss_probes`` UDP probes sent each way. ``delay_line_ceiling_pps`` is how many packets a
    second the delay line forwards with a core to itself (packets per CPU-second during a
    flood at zero delay; None when the path has none or it was skipped). Servers and clients
    share the machine's cores with it, so read it as an upper bound for a busy run.
    """

    connect_ms: float
    rtt_ms: float
    rate_down_mbit: float
    rate_up_mbit: float
    goodput_down_mbit: float
    goodput_up_mbit: float
    loss_down: float
    loss_up: float
    loss_probes: int
    delay_line_ceiling_pps: float | None


@dataclass(frozen=True, slots=True)
class PathProperties:
    """A path's measured properties with the verdict on each; ``ok`` when all hold."""

    profile: Profile
    measured: Measured
    peak_pps: float | None
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def below_ceiling(self) -> bool | None:
        """True when the profile's peak packet rate is under the delay line's ceiling; None
        when there is nothing to compare (no delay line, no rate limit, or not measured)."""
        ceiling = self.measured.delay_line_ceiling_pps
        if ceiling is None or self.peak_pps is None:
            return None
        return self.peak_pps < ceiling

    def as_dict(self) -> dict[str, object]:
        """Plain data for results.json."""
        return {
            "network": self.profile.name,
            "conditions": self.profile.summary(),
            **asdict(self.measured),
            "peak_pps": self.peak_pps,
            "below_ceiling": self.below_ceiling,
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
            "ok": self.ok,
        }

    def line(self) -> str:
        """One line for people: the figures, the targets in brackets, the verdict."""
        m, p = self.measured, self.profile
        rtt_target = f" [{p.rtt_ms:g}]" if p.rtt_ms is not None and p.namespaces else ""
        rate_target = f" [{p.rate_mbit:g}]" if p.rate_mbit is not None else ""
        loss_target = f" [{p.loss * 100:g}]" if p.namespaces else ""
        parts = [
            f"{p.name}:",
            f"connect {m.connect_ms:.1f} ms{rtt_target},",
            f"rtt {m.rtt_ms:.1f} ms{rtt_target},",
            f"rate down/up {m.rate_down_mbit:.1f}/{m.rate_up_mbit:.1f} Mbit/s{rate_target}",
            f"(goodput {m.goodput_down_mbit:.1f}/{m.goodput_up_mbit:.1f}),",
            f"loss down/up {m.loss_down * 100:.2f}/{m.loss_up * 100:.2f} %{loss_target}",
            f"of {m.loss_probes} probes,",
        ]
        if m.delay_line_ceiling_pps is not None:
            peak = "unshaped" if self.peak_pps is None else f"peak {self.peak_pps:,.0f} pps"
            parts.append(f"delay line ceiling {m.delay_line_ceiling_pps:,.0f} pps ({peak}),")
        failed = [c.name for c in self.checks if not c.ok]
        if not self.checks:
            parts.append("nothing to check")
        elif failed:
            parts.append("OUT OF TOLERANCE: " + ", ".join(failed))
        else:
            parts.append("within tolerance")
        return " ".join(parts)


def _rtt_check(name: str, expected: float, measured: float) -> Check:
    return Check(name, expected, measured, max(RTT_TOLERANCE * expected, RTT_TOLERANCE_MS))


def judge(profile: Profile, measured: Measured) -> PathProperties:
    """Compare ``measured`` with what ``profile`` promises."""
    checks: list[Check] = []
    if profile.namespaces and profile.rtt_ms is not None:
        checks.append(_rtt_check("connect_ms", profile.rtt_ms, measured.connect_ms))
        checks.append(_rtt_check("rtt_ms", profile.rtt_ms, measured.rtt_ms))
    if profile.rate_mbit is not None:
        tolerance = RATE_TOLERANCE * profile.rate_mbit
        checks.append(
            Check("rate_down_mbit", profile.rate_mbit, measured.rate_down_mbit, tolerance)
        )
        checks.append(Check("rate_up_mbit", profile.rate_mbit, measured.rate_up_mbit, tolerance))
    if profile.namespaces:
        checks.append(Check("loss_down", profile.loss, measured.loss_down, LOSS_TOLERANCE))
        checks.append(Check("loss_up", profile.loss, measured.loss_up, LOSS_TOLERANCE))
    peak = peak_packet_rate(profile.rate_mbit) if profile.has_delay_line else None
    ceiling = measured.delay_line_ceiling_pps
    if peak is not None and ceiling is not None:
        # Expressed as a check so a profile the delay line cannot carry fails loudly.
        checks.append(Check("pps_over_ceiling", 0.0, max(0.0, peak - ceiling), 0.0))
    return PathProperties(profile, measured, peak, tuple(checks))
