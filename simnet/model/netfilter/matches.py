"""The match half of an iptables rule: one frozen dataclass per match the model evaluates
(``-p``, ``-s``/``-d``, ``-i``/``-o``, ports, owner, mark, conntrack state, address type,
comment), each printing itself back as the tokens it was written with.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

CT_STATES = ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT")
ADDR_TYPES = ("UNICAST", "LOCAL", "BROADCAST", "MULTICAST")  # the ones a namespace's routes decide
FULL_MASK = 0xFFFFFFFF


def _neg(negated: bool) -> list[str]:
    return ["!"] if negated else []


@dataclass(frozen=True)
class Protocol:
    """``-p tcp``: the connection's L4 protocol (``all`` matches any)."""

    name: str
    negated: bool = False

    def tokens(self) -> list[str]:
        return [*_neg(self.negated), "-p", self.name]


@dataclass(frozen=True)
class Address:
    """``-s``/``-d`` with an optional ``!``; ``net`` is an ip_network (a bare host is /32 or /128)."""

    field: str  # "src" | "dst"
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    negated: bool = False
    text: str = field(default="", compare=False)  # as written (``::127.0.0.53/128`` stays so)

    def tokens(self) -> list[str]:
        return [*_neg(self.negated), "-s" if self.field == "src" else "-d", self.text or str(self.net)]


@dataclass(frozen=True)
class Interface:
    """``-i``/``-o``: an interface name, ``+`` at the end matching any name with that prefix."""

    field: str  # "in_if" | "out_if"
    name: str
    negated: bool = False

    def tokens(self) -> list[str]:
        return [*_neg(self.negated), "-i" if self.field == "in_if" else "-o", self.name]

    def test(self, name: str) -> bool:
        hit = name.startswith(self.name[:-1]) if self.name.endswith("+") else name == self.name
        return hit != self.negated


PortRange = tuple[int, int]


def _port_text(r: PortRange) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}:{r[1]}"


@dataclass(frozen=True)
class Ports:
    """``--dport``/``--sport`` (tcp/udp module) or multiport ``--dports``/``--sports``/``--ports``.

    ``field`` is ``dport``, ``sport`` or ``ports`` (either side); ``module`` records an explicit
    ``-m tcp``/``-m multiport`` so the rule prints back as written.
    """

    field: str
    ranges: tuple[PortRange, ...]
    negated: bool = False
    multiport: bool = False
    module: str | None = None
    option: str = ""

    def tokens(self) -> list[str]:
        mod = ["-m", self.module] if self.module else []
        return [*mod, *_neg(self.negated), self.option, ",".join(_port_text(r) for r in self.ranges)]

    def test(self, dport: int, sport: int) -> bool:
        values = (dport, sport) if self.field == "ports" else (dport if self.field == "dport" else sport,)
        hit = any(lo <= v <= hi for v in values for lo, hi in self.ranges)
        return hit != self.negated


@dataclass(frozen=True)
class Owner:
    """``-m owner --uid-owner``/``--gid-owner``: the local socket's owner (OUTPUT/POSTROUTING only).

    ``ids`` is an inclusive range; a user or group *name* is kept as written and resolved by the
    evaluator's name table (the kernel only ever sees the number iptables resolved it to).
    """

    field: str  # "uid" | "gid"
    ids: PortRange | None
    name: str | None = None
    negated: bool = False
    module: bool = True

    def tokens(self) -> list[str]:
        mod = ["-m", "owner"] if self.module else []
        value = self.name if self.name is not None else (
            str(self.ids[0]) if self.ids[0] == self.ids[1] else f"{self.ids[0]}-{self.ids[1]}")
        return [*mod, *_neg(self.negated), f"--{self.field}-owner", value]


@dataclass(frozen=True)
class Mark:
    """``-m mark --mark v[/m]`` (packet mark) or ``-m connmark --mark v[/m]`` (conntrack mark)."""

    value: int
    mask: int = FULL_MASK
    negated: bool = False
    conn: bool = False
    text: str = ""

    def tokens(self) -> list[str]:
        return ["-m", "connmark" if self.conn else "mark", *_neg(self.negated), "--mark", self.text]

    def test(self, mark: int) -> bool:
        return ((mark & self.mask) == self.value) != self.negated


@dataclass(frozen=True)
class CtState:
    """``-m conntrack --ctstate`` (or ``-m state --state``): the connection's conntrack state."""

    states: frozenset[str]
    negated: bool = False
    order: tuple[str, ...] = ()
    module: str = "conntrack"

    def tokens(self) -> list[str]:
        opt = "--state" if self.module == "state" else "--ctstate"
        return ["-m", self.module, *_neg(self.negated), opt, ",".join(self.order)]


@dataclass(frozen=True)
class AddrType:
    """``-m addrtype --src-type/--dst-type``: LOCAL when the address is this host's own."""

    field: str  # "src" | "dst"
    types: frozenset[str]
    negated: bool = False
    order: tuple[str, ...] = ()
    module: bool = True

    def tokens(self) -> list[str]:
        mod = ["-m", "addrtype"] if self.module else []
        return [*mod, *_neg(self.negated), f"--{self.field}-type", ",".join(self.order)]


@dataclass(frozen=True)
class Comment:
    """``-m comment --comment TEXT``: matches everything, kept for printing."""

    text: str

    def tokens(self) -> list[str]:
        return ["-m", "comment", "--comment", self.text]


Match = Protocol | Address | Interface | Ports | Owner | Mark | CtState | AddrType | Comment
