"""Rate shaping with ``tbf``: the parameters for a profile (pure).

``tbf`` meters the bytes of each packet as the veth sends it (the IP packet plus its 14-byte
Ethernet header), so "50 Mbit/s" is the rate on that wire. Its queue holds one
bandwidth-delay product, the classic router buffer, so one TCP flow can keep the link full
without the queue adding more than about one RTT of delay; the burst is a couple of
milliseconds of traffic (at least two full frames), enough for timer granularity and too
little to show above the rate over any interval a measurement uses.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FRAME_BYTES", "TbfParameters", "peak_packet_rate", "tbf_parameters"]

#: A full-size packet on the veth: 1500-byte MTU plus the Ethernet header.
FRAME_BYTES = 1514
#: Floor for the queue, so that slow links still hold a few frames.
MIN_LIMIT_BYTES = 16 * FRAME_BYTES


@dataclass(frozen=True, slots=True)
class TbfParameters:
    rate_bit: int
    burst_bytes: int
    limit_bytes: int


def tbf_parameters(rate_mbit: float, rtt_ms: float | None) -> TbfParameters:
    rate_bytes_s = rate_mbit * 1e6 / 8
    burst = max(2 * FRAME_BYTES, round(rate_bytes_s * 0.002))
    bdp = rate_bytes_s * max(rtt_ms or 0.0, 1.0) / 1e3
    return TbfParameters(
        rate_bit=round(rate_mbit * 1e6),
        burst_bytes=burst,
        limit_bytes=max(MIN_LIMIT_BYTES, round(bdp)),
    )


def peak_packet_rate(rate_mbit: float | None) -> float | None:
    """Packets/s the delay line carries at most on a path shaped to ``rate_mbit``.

    Both directions full of full-size frames, plus one ACK per two of them going the other
    way: 3 x rate / frame. None when unshaped: then the delay line itself is the limit.
    """
    if rate_mbit is None:
        return None
    return 3 * rate_mbit * 1e6 / (8 * FRAME_BYTES)
