"""BurstReading (transports/quic_io.py): the datagrams of one wake-up, one transmit."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from transports.loops import LOOPS, run
from transports.quic_io import BURST_DATAGRAMS, BurstReading

WAIT_S = 10.0


class _CountingConnection(QuicConnection):
    """A client connection that counts the datagrams handed to it."""

    def __init__(self, expected: int) -> None:
        super().__init__(configuration=QuicConfiguration(is_client=True))
        self.received = 0
        self.expected = expected
        self.all_received = asyncio.Event()

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        super().receive_datagram(data, addr, now)  # not QUIC: dropped
        self.received += 1
        if self.received == self.expected:
            self.all_received.set()


class _CountingProtocol(BurstReading):
    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.transmits = 0
        self.transmitted = asyncio.Event()

    def transmit(self) -> None:
        self.transmits += 1
        self.transmitted.set()
        super().transmit()


async def _queued_then_read(count: int) -> tuple[_CountingConnection, _CountingProtocol]:
    """``count`` datagrams queued on the socket before the loop looks at it, then read."""
    loop = asyncio.get_running_loop()
    quic = _CountingConnection(count)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _CountingProtocol(quic), local_addr=("127.0.0.1", 0)
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for _ in range(count):  # loopback queues each at once, before the next line
                peer.sendto(b"\x00" * 100, transport.get_extra_info("sockname"))
        async with asyncio.timeout(WAIT_S):
            await quic.all_received.wait()
            await protocol.transmitted.wait()
        return quic, protocol
    finally:
        transport.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_datagrams_of_one_wake_up_get_one_transmit(loop: str) -> None:
    quic, protocol = run(_queued_then_read(10), loop)
    assert quic.received == 10
    assert protocol.transmits == 1  # aioquic's own protocol: 10


def test_a_burst_is_bounded_so_a_flood_yields_to_the_loop() -> None:
    count = BURST_DATAGRAMS + BURST_DATAGRAMS // 2
    quic, protocol = run(_queued_then_read(count), "asyncio")
    assert quic.received == count
    assert protocol.transmits == 2
