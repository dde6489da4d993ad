"""One emulated network path per experiment: build it, reach into it, break it, tear it down.

::

    async with NetworkPath("wan", clients=2) as path:
        server = [*path.exec_prefix(path.server_ns), sys.executable, "-m", "transports",
                  "serve", "tcp", "--host", path.server_addr, ...]
        client = [*path.exec_prefix(path.client_ns[0]), ...]
        await path.blackhole(0); ...; await path.heal(0)

The layout (names, addresses, the drawing) is in :mod:`experiments.network.layout`; the
loopback profile builds nothing and gives ``None`` namespaces and 127.0.0.1.

Conditions live in the kernel: ``tbf`` on the router's veths (the one towards the server
shapes what clients send, each client's port shapes what that client receives), nftables in
the router namespace for loss and the fault hooks (:mod:`.nftables`), and the delay line
(:mod:`.delay_line`), a process of its own inside the router namespace holding every packet
for half the RTT. Policy routing sends what arrives from either side into the delay line's TUN
device; what comes back out of the TUN follows the main table to its destination. Should the
delay line die, a ``prohibit`` rule after the lookup rejects the packets instead of letting
them skip the delay (:meth:`NetworkPath.check` says why).

Teardown runs on success, on any exception and on cancellation (Ctrl-C): the delay line and
any process still inside the namespaces are ended, then the namespaces are removed, which
takes every veth, the bridge, the TUN device and the nftables table with them. Teardown is
synchronous on purpose, with SIGINT held off, so a second Ctrl-C cannot cut it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from experiments.network import namespaces, nftables, requirements, stale
from experiments.network.errors import LeftoverError, PathError
from experiments.network.layout import (
    CLIENT_NET,
    MAC_BRIDGE,
    MAC_CLIENT,
    MAC_PORT,
    MAC_ROUTER_SERVER,
    MAC_SERVER,
    ROUTER_CLIENT_ADDR,
    ROUTER_SERVER_ADDR,
    SERVER_ADDR,
    SERVER_NET,
    PathLayout,
    layout,
    mac,
    new_run_id,
)
from experiments.network.profiles import Profile, get_profile
from experiments.network.shaping import tbf_parameters
from experiments.sigint import sigint_held

__all__ = ["NetworkPath", "interface_index"]

LOOPBACK = "127.0.0.1"
#: Routing table of the router namespace whose only route leads into the delay line.
DELAY_TABLE = 100
#: Rule priorities in the router namespace: the lookup into the delay line, then the refusal
#: that only matters when that table is empty (the delay line died and its TUN went away).
LOOKUP_PRIORITY = 100
PROHIBIT_PRIORITY = 200
#: Long enough that bursts at the delay line's ceiling are not dropped at the TUN device.
TUN_TXQUEUELEN = 10_000
#: ``NUD_PERMANENT`` from linux/neighbour.h: a neighbour entry nothing expires or flushes.
NUD_PERMANENT = 0x80
DELAY_LINE_START_S = 15.0
DELAY_LINE_STOP_S = 2.0

#: Before any interface exists, so every interface inherits them: no IPv6 chatter (router
#: solicitations, DAD) on the path, and no reverse-path filter in the router, whose packets
#: come back out of the TUN device from addresses that route elsewhere.
_COMMON_SYSCTLS = (
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
)
_ROUTER_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
)


class NetworkPath:
    """The namespaces, links and conditions of one profile for one run.

    ``run_id`` (1-8 characters of ``[0-9a-z]``) names everything; a random one by default.
    ``clients`` is the number of client namespaces (each with its own address, port and
    shaping); several client processes may share one.
    """

    def __init__(self, profile: Profile | str, run_id: str | None = None, *, clients: int = 1):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.run_id = run_id or new_run_id()
        self.layout: PathLayout = layout(self.run_id, clients)
        self.clients = clients
        self._delay_line: subprocess.Popen[bytes] | None = None
        self._blackholed: set[int] = set()
        self._claimed = False
        self._entered = False

    def __repr__(self) -> str:
        return f"NetworkPath({self.profile.name!r}, run_id={self.run_id!r}, clients={self.clients})"

    # -- where things are -------------------------------------------------------------------

    @property
    def namespaced(self) -> bool:
        return self.profile.namespaces

    @property
    def server_ns(self) -> str | None:
        return self.layout.server_ns if self.namespaced else None

    @property
    def router_ns(self) -> str | None:
        return self.layout.router_ns if self.namespaced else None

    @property
    def client_ns(self) -> tuple[str | None, ...]:
        return self.layout.client_ns if self.namespaced else (None,) * self.clients

    @property
    def server_addr(self) -> str:
        """Where servers listen and clients connect (servers must bind this or 0.0.0.0)."""
        return SERVER_ADDR if self.namespaced else LOOPBACK

    @property
    def client_addr(self) -> tuple[str, ...]:
        return self.layout.client_addr if self.namespaced else (LOOPBACK,) * self.clients

    @property
    def delay_line_pid(self) -> int | None:
        return self._delay_line.pid if self._delay_line else None

    def exec_prefix(self, ns: str | None) -> list[str]:
        """Argv prefix that runs a command inside ``ns``; empty for None (loopback)."""
        return [] if ns is None else ["ip", "netns", "exec", ns]

    def socket(
        self,
        ns: str | None,
        family: socket.AddressFamily = socket.AF_INET,
        kind: socket.SocketKind = socket.SOCK_STREAM,
    ) -> socket.socket:
        """A non-blocking socket of this process that lives in ``ns`` (for probes)."""
        return namespaces.socket_in(ns, family, kind)

    async def open_connection(
        self, ns: str | None, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection from inside ``ns`` (e.g. a readiness probe of a server)."""
        sock = self.socket(ns)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    def check(self) -> None:
        """Raise :class:`PathError` if the path is broken (its delay line has died)."""
        line = self._delay_line
        if line is not None and line.poll() is not None:
            err = line.stderr.read().decode(errors="replace").strip() if line.stderr else ""
            raise PathError(f"delay line of {self.run_id} exited with {line.returncode}: {err}")

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> NetworkPath:
        if self._entered:
            raise PathError("a NetworkPath is built once")
        self._entered = True
        if not self.namespaced:
            return self
        try:
            await self._build()
        except BaseException:
            # The build's own error stays the one raised, unless teardown leaves something
            # behind (LeftoverError), which the caller must hear about first.
            with sigint_held():
                self._teardown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.namespaced:
            with sigint_held():
                self._teardown()

    def _teardown(self) -> None:
        self._stop_delay_line()
        names = self.layout.namespaces
        if self._claimed:
            namespaces.kill_processes(n for n in names if namespaces.exists(n))
        failures: list[str] = []
        for name in names if self._claimed else ():
            try:
                namespaces.remove(name)
            except PathError as exc:
                failures.append(str(exc))
        if failures:
            raise LeftoverError("; ".join(failures))
        if self._claimed:
            stale.release(self.run_id)
            self._claimed = False

    def _stop_delay_line(self) -> None:
        line, self._delay_line = self._delay_line, None
        if line is None:
            return
        if line.poll() is None:
            line.terminate()
            try:
                line.wait(DELAY_LINE_STOP_S)
            except subprocess.TimeoutExpired:
                line.kill()
                line.wait()
        for stream in (line.stdout, line.stderr):
            if stream is not None:
                stream.close()

    # -- building ---------------------------------------------------------------------------

    async def _build(self) -> None:
        requirements.require()
        stale.clean_stale()
        L = self.layout
        if any(namespaces.exists(n) for n in L.namespaces):
            raise PathError(f"run {self.run_id} already has namespaces: a live run uses this id")
        stale.claim(self.run_id)
        self._claimed = True
        for name in L.namespaces:
            namespaces.create(name)
            for key, value in _COMMON_SYSCTLS:
                with contextlib.suppress(PathError):  # a kernel without IPv6 has nothing to mute
                    namespaces.write_sysctl(name, key, value)
        for key, value in _ROUTER_SYSCTLS:
            namespaces.write_sysctl(L.router_ns, key, value)
        try:
            await self._build_links()
            if self.profile.has_delay_line:
                await self._start_delay_line()
            if self.profile.rate_mbit is not None:
                await self._shape()
        except NetlinkError as exc:
            raise PathError(f"building path {self.run_id}: netlink: {exc}") from exc
        ingress = (L.bridge, L.router_server_if)
        await nftables.apply(
            L.router_ns, nftables.ruleset(L.nft_table, self.profile.loss_per_mille, ingress)
        )

    async def _build_links(self) -> None:
        L = self.layout
        async with AsyncIPRoute(netns=L.router_ns, flags=0) as rtr:
            await _up(rtr, "lo")
            # Each veth is born with its far end already in the namespace it serves, so no
            # interface of the run ever appears in the root namespace.
            await rtr.link(
                "add",
                ifname=L.router_server_if,
                kind="veth",
                address=mac(MAC_ROUTER_SERVER),
                peer={"ifname": L.server_if, "net_ns_fd": L.server_ns, "address": mac(MAC_SERVER)},
            )
            # An address of its own, so the bridge's does not follow its ports as they go
            # down and up (which would invalidate the clients' pinned neighbour entry).
            await rtr.link("add", ifname=L.bridge, kind="bridge", address=mac(MAC_BRIDGE))
            bridge = await interface_index(rtr, L.bridge)
            for i, (port, far, ns) in enumerate(
                zip(L.router_client_if, L.client_if, L.client_ns, strict=True)
            ):
                await rtr.link(
                    "add",
                    ifname=port,
                    kind="veth",
                    address=mac(MAC_PORT, i),
                    peer={"ifname": far, "net_ns_fd": ns, "address": mac(MAC_CLIENT, i)},
                )
                await rtr.link(
                    "set", index=await interface_index(rtr, port), master=bridge, state="up"
                )
            await _address(rtr, L.router_server_if, ROUTER_SERVER_ADDR, SERVER_NET.prefixlen)
            await _address(rtr, L.bridge, ROUTER_CLIENT_ADDR, CLIENT_NET.prefixlen)
            await _neighbour(rtr, L.router_server_if, SERVER_ADDR, mac(MAC_SERVER))
            for i, addr in enumerate(L.client_addr):
                await _neighbour(rtr, L.bridge, addr, mac(MAC_CLIENT, i))
        async with AsyncIPRoute(netns=L.server_ns, flags=0) as srv:
            await _up(srv, "lo")
            await _address(srv, L.server_if, SERVER_ADDR, SERVER_NET.prefixlen)
            await _neighbour(srv, L.server_if, ROUTER_SERVER_ADDR, mac(MAC_ROUTER_SERVER))
            await srv.route("add", dst=str(CLIENT_NET), gateway=ROUTER_SERVER_ADDR)
        for ns, ifname, addr in zip(L.client_ns, L.client_if, L.client_addr, strict=True):
            async with AsyncIPRoute(netns=ns, flags=0) as cli:
                await _up(cli, "lo")
                await _address(cli, ifname, addr, CLIENT_NET.prefixlen)
                await _neighbour(cli, ifname, ROUTER_CLIENT_ADDR, mac(MAC_BRIDGE))
                await cli.route("add", dst=str(SERVER_NET), gateway=ROUTER_CLIENT_ADDR)

    async def _start_delay_line(self) -> None:
        L = self.layout
        command = [
            *self.exec_prefix(L.router_ns),
            sys.executable, "-m", "experiments.network.delay_line",
            "--tun", L.tun, "--delay-ms", repr(self.profile.one_way_delay_ms),
        ]  # fmt: skip
        # Its own session: a terminal's Ctrl-C goes to the harness, which tears down in order.
        line = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self._delay_line = line
        assert line.stdout is not None
        try:
            ready = await asyncio.wait_for(
                asyncio.to_thread(line.stdout.readline), DELAY_LINE_START_S
            )
        except TimeoutError:
            line.kill()  # also ends the blocked readline
            raise PathError(
                f"delay line of {self.run_id} not ready in {DELAY_LINE_START_S} s"
            ) from None
        if not ready.startswith(b"ready"):
            line.wait()
            self.check()
            raise PathError(f"delay line of {self.run_id} said {ready!r}")
        async with AsyncIPRoute(netns=L.router_ns, flags=0) as rtr:
            tun = await interface_index(rtr, L.tun)
            await rtr.link("set", index=tun, txqlen=TUN_TXQUEUELEN, state="up")
            await rtr.route("add", dst="0.0.0.0/0", oif=tun, table=DELAY_TABLE)
            for offset, ifname in enumerate((L.bridge, L.router_server_if)):
                await rtr.rule(
                    "add", iifname=ifname, table=DELAY_TABLE, priority=LOOKUP_PRIORITY + offset
                )
                await rtr.rule(
                    "add",
                    iifname=ifname,
                    action="FR_ACT_PROHIBIT",
                    priority=PROHIBIT_PRIORITY + offset,
                )

    async def _shape(self) -> None:
        L = self.layout
        assert self.profile.rate_mbit is not None
        tbf = tbf_parameters(self.profile.rate_mbit, self.profile.rtt_ms)
        async with AsyncIPRoute(netns=L.router_ns, flags=0) as rtr:
            for ifname in (L.router_server_if, *L.router_client_if):
                await rtr.tc(
                    "add",
                    "tbf",
                    index=await interface_index(rtr, ifname),
                    rate=f"{tbf.rate_bit}bit",
                    burst=tbf.burst_bytes,
                    limit=tbf.limit_bytes,
                )

    # -- kernel faults ----------------------------------------------------------------------

    def _targets(self, client: int | None) -> list[int]:
        if not self.namespaced:
            raise PathError(f"profile {self.profile.name} has no network to break")
        if not self._claimed:
            raise PathError("the path is not built (use it inside `async with`)")
        if client is None:
            return list(range(self.clients))
        if not 0 <= client < self.clients:
            raise PathError(f"no client {client}: the path has {self.clients}")
        return [client]

    def _addresses(self, clients: Iterable[int]) -> list[str]:
        return [self.layout.client_addr[i] for i in clients]

    async def _nft(self, script: str) -> None:
        assert self.router_ns is not None
        await nftables.apply(self.router_ns, script)

    async def blackhole(self, client: int | None = None) -> None:
        """Drop every packet to and from ``client`` (None: every client), silently."""
        new = [i for i in self._targets(client) if i not in self._blackholed]
        table = self.layout.nft_table
        await self._nft(nftables.add_addresses(table, nftables.BLACKHOLE, self._addresses(new)))
        self._blackholed.update(new)

    async def heal(self, client: int | None = None) -> None:
        """Undo :meth:`blackhole` for ``client`` (None: every client)."""
        old = [i for i in self._targets(client) if i in self._blackholed]
        table = self.layout.nft_table
        await self._nft(nftables.delete_addresses(table, nftables.BLACKHOLE, self._addresses(old)))
        self._blackholed.difference_update(old)

    async def reset(self, client: int | None = None, hold_s: float = 1.0) -> None:
        """Answer ``client``'s TCP packets, both ways, with RSTs for ``hold_s``, then stop.

        Each side gets its RST with its next packet, so ``hold_s`` must cover a packet from
        both sides (a heartbeat interval for an idle stream). Connections attempted
        meanwhile are refused the same way.
        """
        addresses = self._addresses(self._targets(client))
        table = self.layout.nft_table
        await self._nft(nftables.add_addresses(table, nftables.RESETTING, addresses))
        try:
            await asyncio.sleep(hold_s)
        finally:
            # Shielded: a cancelled fault must not leave the path resetting for good.
            await asyncio.shield(
                self._nft(nftables.delete_addresses(table, nftables.RESETTING, addresses))
            )

    async def loss_burst(self, client: int, per_mille: int, hold_s: float) -> None:
        """Drop ``per_mille``/1000 of ``client``'s packets each way for ``hold_s``, on top of
        the profile's loss, then stop (the soak's loss bursts).

        A base chain of the burst's own (``burst<i>``, on the forward hook): adding and
        deleting it touches neither the loss chain nor another client's burst. Matched as
        the packet enters the router, so one that crosses the forward hook twice (out of a
        delay line) is drawn once."""
        if not 0 < per_mille <= 1000:
            raise PathError(f"loss per mille must be in 1..1000, got {per_mille}")
        (i,) = self._targets(client)
        L = self.layout
        table, chain, addr = L.nft_table, f"burst{i}", L.client_addr[i]
        drop = f"numgen random mod 1000 < {per_mille} counter drop"
        await self._nft(
            f"add chain inet {table} {chain}"
            " { type filter hook forward priority filter; policy accept; }\n"
            f'add rule inet {table} {chain} iifname "{L.bridge}" ip saddr {addr} {drop}\n'
            f'add rule inet {table} {chain} iifname "{L.router_server_if}" ip daddr {addr} {drop}\n'
        )
        try:
            await asyncio.sleep(hold_s)
        finally:
            # Shielded: a cancelled burst must not leave the path lossy for good.
            await asyncio.shield(
                self._nft(f"flush chain inet {table} {chain}\ndelete chain inet {table} {chain}\n")
            )

    async def link_down(self, client: int | None = None) -> None:
        """Take the router's end of ``client``'s veth down: the client's link loses carrier
        and packets both ways vanish; addresses and routes stay, as with a pulled cable."""
        await self._set_ports(client, "down")

    async def link_up(self, client: int | None = None) -> None:
        await self._set_ports(client, "up")

    async def _set_ports(self, client: int | None, state: str) -> None:
        targets = self._targets(client)
        L = self.layout
        try:
            async with AsyncIPRoute(netns=L.router_ns, flags=0) as rtr:
                for i in targets:
                    index = await interface_index(rtr, L.router_client_if[i])
                    await rtr.link("set", index=index, state=state)
            if state == "up":
                # The kernel brings a link whose carrier returns into service a little later
                # (linkwatch, up to a second): until then its queue drops every packet. Wait,
                # so that "up" means packets flow, for both ends of each veth.
                for i in targets:
                    await _wait_operational(L.router_ns, L.router_client_if[i])
                    await _wait_operational(L.client_ns[i], L.client_if[i])
        except NetlinkError as exc:
            raise PathError(f"link {state} for clients {targets}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def loss_suspended(self) -> AsyncIterator[None]:
        """No random loss inside the block (to measure the rate the link itself offers)."""
        if not self.namespaced or not self.profile.loss_per_mille:
            yield
            return
        L = self.layout
        await self._nft(nftables.suspend_loss(L.nft_table))
        try:
            yield
        finally:
            rules = nftables.loss_rules(
                L.nft_table, self.profile.loss_per_mille, (L.bridge, L.router_server_if)
            )
            await asyncio.shield(self._nft(rules))


async def interface_index(ipr: AsyncIPRoute, ifname: str) -> int:
    found = await ipr.link_lookup(ifname=ifname)
    if not found:
        raise PathError(f"no interface {ifname}")
    return int(found[0])


async def _wait_operational(ns: str, ifname: str, timeout_s: float = 5.0) -> None:
    """Until ``ifname`` in ``ns`` reports operational state UP (carrier seen, queue live)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with AsyncIPRoute(netns=ns, flags=0) as ipr:
        index = await interface_index(ipr, ifname)
        while True:
            links = await ipr.link("get", index=index)
            if links and links[0].get("operstate") == "UP":
                return
            if loop.time() > deadline:
                raise PathError(f"{ifname} in {ns} not operational after {timeout_s} s")
            await asyncio.sleep(0.02)


async def _neighbour(ipr: AsyncIPRoute, ifname: str, address: str, lladdr: str) -> None:
    """Pin ``address`` to ``lladdr`` on ``ifname`` for good (survives carrier loss)."""
    index = await interface_index(ipr, ifname)
    await ipr.neigh("add", dst=address, lladdr=lladdr, ifindex=index, state=NUD_PERMANENT)


async def _up(ipr: AsyncIPRoute, ifname: str) -> None:
    await ipr.link("set", index=await interface_index(ipr, ifname), state="up")


async def _address(ipr: AsyncIPRoute, ifname: str, address: str, prefixlen: int) -> None:
    index = await interface_index(ipr, ifname)
    await ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    await ipr.link("set", index=index, state="up")
