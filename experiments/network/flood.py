"""``python -m experiments.network.flood HOST PORT SECONDS``: send UDP as fast as possible.

Started inside a client namespace to find the delay line's packet-rate ceiling: a process of
its own, so the sender gets a core of its own and the measuring process stays idle.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Sequence

__all__ = ["flood", "main"]

PAYLOAD = bytes(18)  # a 64-byte frame on the veth: the smallest, so packets, not bytes, count


def flood(host: str, port: int, seconds: float) -> int:
    """Send datagrams to ``host:port`` for ``seconds``; the number sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        print("flooding", flush=True)  # the measurer starts its clock from this line
        while time.monotonic() < deadline:
            for _ in range(256):  # the clock read costs as much as a send: read it less often
                try:
                    sock.send(PAYLOAD)
                except OSError:
                    continue  # a full queue on the way: the flood only needs to stay ahead
                sent += 1
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m experiments.network.flood HOST PORT SECONDS", file=sys.stderr)
        return 2
    sent = flood(args[0], int(args[1]), float(args[2]))
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
