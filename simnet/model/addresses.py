"""The address plan of simnet's test hosts: the links and addresses (from the benchmarking range
198.18.0.0/15, never routed) that the kernel tests' namespaces get, and where pod's routing sends
a destination. Pure (no I/O, no ctypes), so strategies and the model build the same connections
as ``simnet.real.netns`` without importing it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from simnet.model.packet import Connection

BENCHMARK_NET = ipaddress.ip_network("198.18.0.0/15")
ROUTER_IP = "198.19.255.1"  # the router's address in the test network (the model gives routers none)
CONTAINER_GATEWAY = "198.18.255.254"  # the cell's end of the container's veth


@dataclass(frozen=True)
class Link:
    """One veth pair: the same interface name on both sides, one address per side and family."""

    name: str
    pod4: str
    peer4: str
    pod6: str
    peer6: str
    prefix4: int = 24
    prefix6: int = 64
    table: int = 100  # peer's routing table (and fwmark) for sending into pod through this link


LINKS = (
    Link("eth0", "198.18.0.1", "198.18.0.2", "2001:2::1", "2001:2::2", table=100),
    Link("eth1", "198.18.1.1", "198.18.1.2", "2001:2:0:1::1", "2001:2:0:1::2", table=101),
)
DEFAULT_IF = "eth0"


class AddressPlan:
    """The addresses of the two-host test network (``simnet.real.netns.Topology``): ``pod``, whose
    rules are under test, and ``peer``, joined by ``LINKS``.

    ====  ================================  ================================
    link  pod                               peer
    ====  ================================  ================================
    eth0  198.18.0.1/24, 2001:2::1/64       198.18.0.2/24, 2001:2::2/64
    eth1  198.18.1.1/24, 2001:2:0:1::1/64   198.18.1.2/24, 2001:2:0:1::2/64
    ====  ================================  ================================

    pod routes by default via peer's eth0. ``ipv6=False`` leaves out the IPv6 addresses.
    """

    def __init__(self, ipv6: bool = True):
        self.ipv6 = ipv6
        self.links = LINKS
        self.interfaces: dict[str, str] = {link.name: link.pod4 for link in self.links}
        self.interfaces6: dict[str, str] = (
            {link.name: link.pod6 for link in self.links} if ipv6 else {})
        self.peer_interfaces: dict[str, str] = {link.name: link.peer4 for link in self.links}
        self.peer_interfaces6: dict[str, str] = (
            {link.name: link.peer6 for link in self.links} if ipv6 else {})
        self.pod_addrs: tuple[str, ...] = (
            tuple(self.interfaces.values()) + tuple(self.interfaces6.values()))
        self.peer_addrs: tuple[str, ...] = (
            tuple(self.peer_interfaces.values()) + tuple(self.peer_interfaces6.values()))

    def address(self, ifname: str, family: int = 4) -> str:
        """pod's address on ``ifname`` (``lo``: the loopback address)."""
        if ifname == "lo":
            return "127.0.0.1" if family == 4 else "::1"
        table = self.interfaces if family == 4 else self.interfaces6
        if ifname not in table:
            raise ValueError(f"pod has no IPv{family} address on {ifname!r}")
        return table[ifname]

    def is_pod_local(self, address: str) -> bool:
        """True when ``address`` is pod's own (loopback range or an interface address)."""
        a = ipaddress.ip_address(address)
        return a.is_loopback or any(a == ipaddress.ip_address(x) for x in self.pod_addrs)

    def out_if(self, dst: str) -> str:
        """The interface pod's routing picks for ``dst``: ``lo`` for its own addresses, the link
        whose subnet holds ``dst``, else the default route's ``eth0``."""
        if self.is_pod_local(dst):
            return "lo"
        a = ipaddress.ip_address(dst)
        for link in self.links:
            prefix = (f"{link.pod4}/{link.prefix4}" if a.version == 4
                      else f"{link.pod6}/{link.prefix6}")
            net = ipaddress.ip_network(prefix, strict=False)
            if a in net:
                return link.name
        return DEFAULT_IF

    def outbound(self, dst: str, dport: int, **fields) -> Connection:
        """A connection pod makes to ``dst:dport``, with ``out_if``/``local_addrs`` as the kernel
        will see them (override any field through keywords)."""
        fields.setdefault("out_if", self.out_if(dst))
        fields.setdefault("local_addrs", self.pod_addrs)
        return Connection("outbound", dst, dport, **fields)

    def inbound(self, dst: str, dport: int, in_if: str = DEFAULT_IF, **fields) -> Connection:
        """A connection peer makes to ``dst:dport`` that reaches pod on ``in_if``."""
        family = ipaddress.ip_address(dst).version
        fields.setdefault("in_addr", self.address(in_if, family))
        fields.setdefault("local_addrs", self.pod_addrs)
        return Connection("inbound", dst, dport, in_if=in_if, **fields)

    def peer_mark(self, in_if: str) -> int:
        """The SO_MARK that routes a socket of peer into pod through ``in_if``."""
        for link in self.links:
            if link.name == in_if:
                return link.table
        raise ValueError(f"no link named {in_if!r}")
