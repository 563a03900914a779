"""A connection's first packet, and where netfilter sends it.

The netfilter evaluator (``simnet.model.netfilter``) takes a ``Connection`` and returns an
``Outcome``; the kernel differential (``simnet.real.netns``) makes the same connection in a real
network namespace and reports what the kernel did as an ``Outcome`` too, so the two compare
field by field. Only the first packet matters: NAT and most capture decisions are taken once per
connection, on the packet that creates the conntrack entry (ctstate NEW).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

Direction = Literal["outbound", "inbound"]
Proto = Literal["tcp", "udp"]


@dataclass(frozen=True)
class Connection:
    """The first packet of a connection, as the kernel sees it at its first hook.

    ``outbound``: made by a local process (uid/gid known) in this namespace; it enters at OUTPUT
    and leaves through ``out_if``, which is ``lo`` when ``dst`` is one of ``local_addrs`` or a
    loopback address (the kernel routes local destinations over lo).
    ``inbound``: arrives from another host on ``in_if`` and enters at PREROUTING; ``in_addr`` is
    the first address of ``in_if``, which is where REDIRECT sends it (nf_nat_redirect_ipv4).
    A TCP connection is delivered only when its whole handshake passes the rules:
    ``server_uid``/``server_gid`` own the listening socket whose SYN-ACK owner matches see.
    """

    direction: Direction
    dst: str
    dport: int
    src: str = ""
    sport: int = 40000
    proto: Proto = "tcp"
    uid: int | None = None
    gid: int | None = None
    in_if: str = ""
    out_if: str = "eth0"
    in_addr: str = ""
    local_addrs: tuple[str, ...] = ()
    mark: int = 0
    ctstate: str = "NEW"
    server_uid: int = 0
    server_gid: int = 0

    @property
    def family(self) -> int:
        return _version(self.dst)

    def is_local(self, address: str) -> bool:
        """True when ``address`` belongs to this namespace (loopback range or one of its own)."""
        a = ipaddress.ip_address(address)
        return a.is_loopback or any(ipaddress.ip_address(x) == a for x in self.local_addrs)


@lru_cache(maxsize=4096)
def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


@dataclass(frozen=True)
class Outcome:
    """Where the connection ended up.

    ``verdict`` is ``ACCEPT`` (delivered to ``destination``) or ``DROP``. ``destination`` is the
    (address, port) of the socket that receives the connection: the rewritten one after
    REDIRECT/DNAT, the original after ACCEPT, the TPROXY on-port socket (address unchanged).
    ``local`` says whether that socket is in this namespace. ``path`` names every rule that
    matched, in order, as ``table/CHAIN#n`` (1-based, as ``iptables -L --line-numbers``), with
    ``table/CHAIN:policy`` when a built-in chain's policy decided.
    """

    verdict: Literal["ACCEPT", "DROP"]
    destination: tuple[str, int] | None
    local: bool
    path: tuple[str, ...] = field(default=(), compare=False)
    mark: int = field(default=0, compare=False)

    def to_json(self) -> dict:
        dest = None
        if self.destination is not None:
            host, port = self.destination
            dest = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return {"verdict": self.verdict, "destination": dest, "local": self.local,
                "path": list(self.path), "mark": self.mark}
