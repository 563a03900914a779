"""A connection's first packet through netfilter's hooks, in the kernel's order.

Locally generated (outbound): OUTPUT (raw, mangle, nat, filter), then POSTROUTING (mangle, nat);
a packet for a local address then loops over ``lo`` through PREROUTING (raw, mangle) and INPUT
(mangle, filter) -- not through nat again, because conntrack set up the connection's NAT at
OUTPUT already (nf_nat_inet_fn runs a table only while that NAT manip is uninitialised).
Arriving (inbound): PREROUTING (raw, mangle, nat), then INPUT (mangle, filter, nat) for a local
destination; a fresh namespace does not forward, so anything else is dropped.

Two evaluators give the same ``Outcome``: ``trace`` walks the parsed rules (the reference), and
``compile_ruleset`` turns a ruleset once into Python functions, one per chain, with every match
inlined -- the decision-function approach that makes tens of thousands of traces per second cheap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from functools import lru_cache

from simnet.errors import Problem, SimnetError
from simnet.model.netfilter import (
    FULL_MASK, Address, AddrType, Comment, CtState, Interface, Mark, Owner, Ports, Protocol,
    Rule, Ruleset, Target,
)
from simnet.model.packet import Connection, Outcome

ACCEPT, DROP, CONTINUE = 1, 2, 0

# Each leg of the path: (hook, table) in the order the kernel's hook priorities give.
LEGS = {
    "outbound": (("OUTPUT", "raw"), ("OUTPUT", "mangle"), ("OUTPUT", "nat"), ("OUTPUT", "filter"),
                 ("POSTROUTING", "mangle"), ("POSTROUTING", "nat")),
    "loopback": (("PREROUTING", "raw"), ("PREROUTING", "mangle"), ("INPUT", "mangle"),
                 ("INPUT", "filter")),
    "inbound": (("PREROUTING", "raw"), ("PREROUTING", "mangle"), ("PREROUTING", "nat")),
    "inbound_local": (("INPUT", "mangle"), ("INPUT", "filter"), ("INPUT", "nat")),
}

LOOPBACK_ADDRESS = {4: "127.0.0.1", 6: "::1"}


@lru_cache(maxsize=4096)
def _addr(text: str) -> int:
    return int(ipaddress.ip_address(text))


@lru_cache(maxsize=4096)
def _local_set(addrs: tuple[str, ...]) -> frozenset[int]:
    return frozenset(_addr(a) for a in addrs)


_LOOP4 = (int(ipaddress.ip_address("127.0.0.0")), 0xFF000000)
_LOOP6 = int(ipaddress.ip_address("::1"))


class State:
    """The mutable first packet as the hooks see it (addresses as integers, for fast matching)."""

    __slots__ = ("family", "proto", "src", "dst", "sport", "dport", "uid", "gid", "in_if",
                 "out_if", "route_if", "mark", "ctmark", "ctstate", "tracked", "zone", "local",
                 "hook", "looped", "in_addr", "tproxy", "names")

    def __init__(self, conn: Connection, names: Mapping[str, int]):
        self.family = conn.family
        self.proto = conn.proto
        self.src = _addr(conn.src) if conn.src else 0
        self.dst = _addr(conn.dst)
        self.sport, self.dport = conn.sport, conn.dport
        self.uid = conn.uid if conn.uid is not None else 0
        self.gid = conn.gid if conn.gid is not None else 0
        self.local = _local_set(conn.local_addrs)
        self.in_if = conn.in_if if conn.direction == "inbound" else ""
        self.route_if = "" if conn.direction == "inbound" else conn.out_if
        self.out_if = self.route_if and ("lo" if self.is_local(self.dst) else self.route_if)
        self.mark, self.ctmark, self.ctstate = conn.mark, 0, conn.ctstate
        self.tracked, self.zone, self.hook, self.looped = conn.ctstate != "UNTRACKED", 0, "", False
        self.in_addr = _addr(conn.in_addr) if conn.in_addr else self.dst
        self.tproxy: tuple[int, int] | None = None
        self.names = names

    def is_loopback(self, a: int) -> bool:
        return (a & _LOOP4[1]) == _LOOP4[0] if self.family == 4 else a == _LOOP6

    def is_local(self, a: int) -> bool:
        return self.is_loopback(a) or a in self.local

    def address_type(self, a: int) -> str:
        if self.is_local(a):
            return "LOCAL"
        ip = ipaddress.ip_address(a) if self.family == 4 else ipaddress.IPv6Address(a)
        if ip.is_multicast:
            return "MULTICAST"
        if self.family == 4 and a == 0xFFFFFFFF:
            return "BROADCAST"
        return "UNICAST"

    def owner_id(self, m: Owner) -> tuple[int, int]:
        if m.ids is not None:
            return m.ids
        if m.name not in self.names:
            raise SimnetError(Problem("<names>", None, m.name or "",
                                      f"{m.field} name {m.name!r} is not known: give its number"))
        n = self.names[m.name]
        return n, n


# ----------------------------------------------------------------------------- semantics shared by both evaluators


def apply_target(s: State, t: Target) -> int:
    """A non-jump target's effect on the packet, and the verdict for the current table."""
    name = t.name
    if name == "ACCEPT":
        return ACCEPT
    if name == "DROP":
        return DROP
    if name == "REDIRECT":
        # nf_nat_redirect: to loopback for locally generated packets, else to the first address
        # of the interface the packet came in on.
        s.dst = _addr(LOOPBACK_ADDRESS[s.family]) if s.hook == "OUTPUT" else s.in_addr
        if t.port is not None:
            s.dport = t.port
        return ACCEPT
    if name == "DNAT":
        s.dst = _addr(t.address)
        if t.port is not None:
            s.dport = t.port
        return ACCEPT
    if name == "TPROXY":
        # Assigns the on-port socket (the original destination address stays) and marks the packet.
        addr = _addr(t.address) if t.address else s.dst
        s.tproxy = (addr, t.port)
        s.mark = (s.mark & ~t.mask & FULL_MASK) ^ t.mark
        return ACCEPT
    if name == "MARK":
        s.mark = (s.mark & ~t.mask & FULL_MASK) ^ t.mark
    elif name == "CONNMARK":
        if t.action == "save":
            s.ctmark = s.mark
        elif t.action == "restore":
            s.mark = s.ctmark
        else:
            s.ctmark = (s.ctmark & ~t.mask & FULL_MASK) ^ t.mark
    elif name == "CT":
        if t.notrack and not s.looped:  # a looped-back packet already carries its conntrack entry
            s.tracked, s.ctstate = False, "UNTRACKED"
        elif t.zone is not None:
            s.zone = t.zone
    return CONTINUE  # MARK, CONNMARK, CT, LOG: the walk goes on


def _ports_hit(m: Ports, s: State) -> bool:
    return m.test(s.dport, s.sport)


def match(m, s: State) -> bool:
    """Whether one match holds for the packet: the reference semantics, match by match."""
    if isinstance(m, Protocol):
        return (m.name == "all" or m.name == s.proto
                or (m.name in ("icmpv6", "ipv6-icmp") and s.proto == "icmpv6")) != m.negated
    if isinstance(m, Address):
        a = s.src if m.field == "src" else s.dst
        return ((a & int(m.net.netmask)) == int(m.net.network_address)) != m.negated
    if isinstance(m, Interface):
        return m.test(s.in_if if m.field == "in_if" else s.out_if)
    if isinstance(m, Ports):
        return _ports_hit(m, s)
    if isinstance(m, Owner):
        lo, hi = s.owner_id(m)
        v = s.uid if m.field == "uid" else s.gid
        return (lo <= v <= hi) != m.negated
    if isinstance(m, Mark):
        return m.test(s.ctmark if m.conn else s.mark)
    if isinstance(m, CtState):
        return (s.ctstate in m.states) != m.negated
    if isinstance(m, AddrType):
        a = s.src if m.field == "src" else s.dst
        return (s.address_type(a) in m.types) != m.negated
    if isinstance(m, Comment):
        return True
    raise TypeError(m)


# ----------------------------------------------------------------------------- the reference walk


def _walk_table(rs: Ruleset, table: str, hook: str, s: State, path: list[str]) -> int:
    chains = rs.tables[table].chains
    stack: list[tuple[str, int]] = []
    chain, i = hook, 0
    while True:
        rules = chains[chain].rules
        if i >= len(rules):  # fell off the end: implicit RETURN
            if not stack:
                policy = chains[hook].policy
                if policy == "DROP":
                    path.append(f"{table}/{hook}:policy")
                    return DROP
                return ACCEPT
            chain, i = stack.pop()
            continue
        rule = rules[i]
        i += 1
        if not all(match(m, s) for m in rule.matches):
            continue
        path.append(f"{table}/{chain}#{i}")
        t = rule.target
        if t is None:
            continue
        if t.name == "RETURN":
            if not stack:
                i = len(rules)  # RETURN in a built-in chain: the policy decides
                continue
            chain, i = stack.pop()
        elif t.name in chains:
            if not t.goto:
                stack.append((chain, i))
            chain, i = t.name, 0
        else:
            v = apply_target(s, t)
            if v != CONTINUE:
                return v


def _run(s: State, leg, table_fn, path: list[str]) -> int:
    for hook, table in leg:
        s.hook = hook
        if table == "nat" and (not s.tracked or s.ctstate != "NEW"):
            continue  # NAT is decided once, for a tracked connection's first packet
        if table_fn(table, hook, s, path) == DROP:
            return DROP
        if hook == "OUTPUT" and table == "nat":  # ip_route_me_harder after a NAT rewrite
            s.out_if = "lo" if s.is_local(s.dst) else s.route_if
    return ACCEPT


def _outcome(s: State, legs, table_fn, path: list[str], direction: str) -> Outcome:
    if direction == "outbound":
        if _run(s, legs["outbound"], table_fn, path) == DROP:
            return Outcome("DROP", None, False, tuple(path), s.mark)
        if not s.is_local(s.dst):
            return Outcome("ACCEPT", (_text(s, s.dst), s.dport), False, tuple(path), s.mark)
        s.in_if, s.out_if, s.in_addr, s.looped = "lo", "", s.dst, True
        verdict = _run(s, legs["loopback"], table_fn, path)
    else:
        if _run(s, legs["inbound"], table_fn, path) == DROP:
            return Outcome("DROP", None, False, tuple(path), s.mark)
        if s.tproxy is None and s.is_loopback(s.dst):
            path.append("routing:martian")  # loopback destination from outside, route_localnet=0
            return Outcome("DROP", None, False, tuple(path), s.mark)
        if s.tproxy is None and not s.is_local(s.dst):
            path.append("routing:not-forwarded")  # a fresh namespace has ip_forward=0
            return Outcome("DROP", None, False, tuple(path), s.mark)
        verdict = _run(s, legs["inbound_local"], table_fn, path)
    if verdict == DROP:
        return Outcome("DROP", None, False, tuple(path), s.mark)
    if s.tproxy is not None:
        return Outcome("ACCEPT", (_text(s, s.tproxy[0]), s.tproxy[1]), True, tuple(path), s.mark)
    return Outcome("ACCEPT", (_text(s, s.dst), s.dport), True, tuple(path), s.mark)


def _text(s: State, a: int) -> str:
    return _address_text(s.family, a)


@lru_cache(maxsize=4096)
def _address_text(family: int, a: int) -> str:
    return str(ipaddress.IPv4Address(a) if family == 4 else ipaddress.IPv6Address(a))


def _check_family(rs: Ruleset, conn: Connection) -> None:
    if rs.family != conn.family:
        raise SimnetError(Problem("<connection>", None, "dst",
                                  f"an IPv{conn.family} connection cannot be traced through an "
                                  f"IPv{rs.family} ruleset"))


def trace(rs: Ruleset, conn: Connection, names: Mapping[str, int] | None = None) -> Outcome:
    """Where ``conn`` goes under ``rs``, by walking the parsed rules (the reference evaluator)."""
    _check_family(rs, conn)
    s = State(conn, names or {})
    return _outcome(s, LEGS, lambda t, h, st, p: _walk_table(rs, t, h, st, p), [], conn.direction)


# ----------------------------------------------------------------------------- the compiled decision function


class _Compiler:
    """Turns each chain into a Python function ``f(s, path) -> verdict`` with matches inlined."""

    def __init__(self, rs: Ruleset, names: Mapping[str, int]):
        self.rs, self.names = rs, names
        self.consts: dict[str, object] = {"apply_target": apply_target, "match": match}
        self.lines: list[str] = []
        self.names_of: dict[tuple[str, str], str] = {}

    def const(self, value: object) -> str:
        name = f"K{len(self.consts)}"
        self.consts[name] = value
        return name

    def fn(self, table: str, chain: str) -> str:
        return self.names_of.setdefault((table, chain), f"chain{len(self.names_of)}")

    def cond(self, m) -> str:
        neg = "not " if getattr(m, "negated", False) else ""
        if isinstance(m, Protocol):
            return "True" if m.name == "all" and not m.negated else f"{neg}(s.proto == {m.name!r})"
        if isinstance(m, Address):
            a = "s.src" if m.field == "src" else "s.dst"
            return f"{neg}(({a} & {int(m.net.netmask)}) == {int(m.net.network_address)})"
        if isinstance(m, Interface):
            v = "s.in_if" if m.field == "in_if" else "s.out_if"
            test = f"{v}.startswith({m.name[:-1]!r})" if m.name.endswith("+") else f"{v} == {m.name!r}"
            return f"{neg}({test})"
        if isinstance(m, Ports):
            vals = ("s.dport", "s.sport") if m.field == "ports" else (f"s.{m.field}",)
            parts = []
            for v in vals:
                singles = [lo for lo, hi in m.ranges if lo == hi]
                if len(singles) == 1:
                    parts.append(f"{v} == {singles[0]}")
                elif singles:
                    parts.append(f"{v} in {self.const(frozenset(singles))}")
                parts.extend(f"{lo} <= {v} <= {hi}" for lo, hi in m.ranges if lo != hi)
            return f"{neg}({' or '.join(parts)})"
        if isinstance(m, Owner):
            if m.ids is None and m.name not in self.names:
                raise SimnetError(Problem("<names>", None, m.name or "",
                                          f"{m.field} name {m.name!r} is not known: give its number"))
            lo, hi = m.ids if m.ids is not None else (self.names[m.name],) * 2
            v = f"s.{m.field}"
            return f"{neg}({v} == {lo})" if lo == hi else f"{neg}({lo} <= {v} <= {hi})"
        if isinstance(m, Mark):
            v = "s.ctmark" if m.conn else "s.mark"
            return f"{neg}(({v} & {m.mask}) == {m.value})"
        if isinstance(m, CtState):
            return f"{neg}(s.ctstate in {self.const(m.states)})"
        if isinstance(m, Comment):
            return "True"
        return f"match({self.const(m)}, s)"  # AddrType: rare, looks routes up

    def chain(self, table: str, name: str) -> None:
        chains = self.rs.tables[table].chains
        out = self.lines
        out.append(f"def {self.fn(table, name)}(s, path):")
        for n, rule in enumerate(chains[name].rules, 1):
            conds = [c for c in (self.cond(m) for m in rule.matches) if c != "True"]
            label = self.const(f"{table}/{name}#{n}")
            out.append(f"    if {' and '.join(conds) or 'True'}:")
            out.append(f"        path.append({label})")
            out.extend("        " + line for line in self.action(table, rule, chains))
        out.append("    return 0")

    def action(self, table: str, rule: Rule, chains) -> list[str]:
        t = rule.target
        if t is None:
            return ["pass"]
        if t.name == "RETURN":
            return ["return 0"]
        if t.name in chains:
            call = f"{self.fn(table, t.name)}(s, path)"
            return [f"return {call}"] if t.goto else [f"v = {call}", "if v: return v"]
        if t.name == "ACCEPT":
            return ["return 1"]
        if t.name == "DROP":
            return ["return 2"]
        if t.name == "MARK":
            return [f"s.mark = (s.mark & {~t.mask & FULL_MASK}) ^ {t.mark}"]
        if t.name == "LOG":
            return ["pass"]
        return [f"v = apply_target(s, {self.const(t)})", "if v: return v"]

    def build(self) -> dict[tuple[str, str], Callable]:
        for table, tb in self.rs.tables.items():
            for name in tb.chains:
                self.chain(table, name)
        ns = dict(self.consts)
        exec(compile("\n".join(self.lines), "<compiled ruleset>", "exec"), ns)  # noqa: S102
        return {(t, c): ns[self.fn(t, c)] for t, tb in self.rs.tables.items() for c in tb.chains}


class CompiledRuleset:
    """A ruleset compiled once into one function per chain; ``trace`` gives ``trace()``'s answer."""

    def __init__(self, rs: Ruleset, names: Mapping[str, int] | None = None):
        self.ruleset, self.names = rs, dict(names or {})
        self.functions = _Compiler(rs, self.names).build()
        self.policies = {(t, c): ch.policy for t, tb in rs.tables.items() for c, ch in tb.chains.items()}
        # A hook whose chain is empty with policy ACCEPT cannot change anything: leave it out.
        # (nat stays in: whether it runs at all is decided per packet.)
        self.legs = {name: tuple((h, t) for h, t in leg
                                 if t == "nat" or rs.chain(t, h).rules or rs.chain(t, h).policy != "ACCEPT")
                     for name, leg in LEGS.items()}

    def _table(self, table: str, hook: str, s: State, path: list[str]) -> int:
        v = self.functions[(table, hook)](s, path)
        if v:
            return v
        if self.policies[(table, hook)] == "DROP":
            path.append(f"{table}/{hook}:policy")
            return DROP
        return ACCEPT

    def trace(self, conn: Connection) -> Outcome:
        _check_family(self.ruleset, conn)
        return _outcome(State(conn, self.names), self.legs, self._table, [], conn.direction)


def compile_ruleset(rs: Ruleset, names: Mapping[str, int] | None = None) -> CompiledRuleset:
    """The ruleset as a decision function: compile once, trace many connections."""
    return CompiledRuleset(rs, names)
