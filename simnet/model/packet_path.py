"""A connection's first packet through netfilter's hooks, in the kernel's order.

Locally generated (outbound): OUTPUT (raw, mangle, nat, filter), then POSTROUTING (mangle, nat);
a packet for a local address then loops over ``lo`` through PREROUTING (raw, mangle) and INPUT
(mangle, filter) -- not through nat again, because conntrack set up the connection's NAT at
OUTPUT already (nf_nat_inet_fn runs a table only while that NAT manip is uninitialised).
Arriving (inbound): PREROUTING (raw, mangle, nat), then INPUT (mangle, filter, nat) for a local
destination; a fresh namespace does not forward, so anything else is dropped.

A TCP connection is delivered only when its SYN-ACK and ACK pass as well; they are
established packets (no nat table, the connection's mapping applied instead), and raw sees
every packet before conntrack has attached its entry.

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
# A new local connection from a loopback source that nat OUTPUT sends towards another host:
# the kernel's re-route (ip_route_me_harder) refuses it, since 127.0.0.0/8 never leaves the
# host (route_localnet=0). Replies are routed by their socket and are not re-checked here.
MARTIAN_SOURCE = "routing:martian-source"


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
                 "out_if", "route_if", "mark", "ctmark", "ctstate", "tracked", "ct", "zone",
                 "local", "hook", "looped", "in_addr", "tproxy", "names")

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
        self.ct = True  # whether the conntrack entry is attached yet (not in raw: see _run)
        self.in_addr = _addr(conn.in_addr) if conn.in_addr else self.dst
        self.tproxy: tuple[int, int] | None = None
        self.names = names

    @property
    def state(self) -> str:
        """The conntrack state xt_conntrack sees: INVALID before conntrack has looked the packet
        up (the raw table runs at -300, conntrack at -200), UNTRACKED after CT --notrack."""
        if not self.tracked:
            return "UNTRACKED"
        return self.ctstate if self.ct else "INVALID"

    def is_loopback(self, a: int) -> bool:
        return (a & _LOOP4[1]) == _LOOP4[0] if self.family == 4 else a == _LOOP6

    def is_local(self, a: int) -> bool:
        if a in self.local:
            return True
        return (a & 0xFF000000) == 0x7F000000 if self.family == 4 else a == _LOOP6

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
        if not (s.ct and s.tracked):
            return CONTINUE  # no conntrack entry (yet): nothing to save to or restore from
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
        if m.conn and not (s.ct and s.tracked):
            return False  # xt_connmark: no conntrack entry, no match (negated or not)
        return m.test(s.ctmark if m.conn else s.mark)
    if isinstance(m, CtState):
        return (s.state in m.states) != m.negated
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


def _run(s: State, leg, table_fn, path: list[str], nat: tuple[int, int] | None = None,
         denat: tuple[int, int] | None = None) -> int:
    """One packet through one leg. NAT is decided on a tracked connection's first packet (the
    nat tables run); later packets get the connection's mapping at the same hook instead: ``nat``
    rewrites the destination at nat OUTPUT/PREROUTING, ``denat`` the source of a reply at nat
    POSTROUTING."""
    for hook, table in leg:
        s.hook = hook
        s.ct = table != "raw" or s.looped  # a looped-back packet carries its entry already
        if table == "nat":
            if s.tracked and s.ctstate == "NEW":
                if table_fn(table, hook, s, path) == DROP:
                    return DROP
                if hook == "OUTPUT" and s.is_loopback(s.src) and not s.is_local(s.dst):
                    path.append(MARTIAN_SOURCE)  # the re-route refuses it
                    return DROP
            elif nat is not None and hook in ("OUTPUT", "PREROUTING"):
                s.dst, s.dport = nat
            elif denat is not None and hook == "POSTROUTING":
                s.src, s.sport = denat
            if hook == "OUTPUT":  # ip_route_me_harder after a NAT rewrite
                s.out_if = "lo" if s.is_local(s.dst) else s.route_if
            continue
        if table_fn(table, hook, s, path) == DROP:
            return DROP
    return ACCEPT


def _first_packet(s: State, legs, path: list[str], direction: str) -> Outcome:
    if direction == "outbound":
        if legs["outbound"](s, path, None, None) == DROP:
            return Outcome("DROP", None, False, tuple(path), s.mark)
        if not s.is_local(s.dst):
            return Outcome("ACCEPT", (_text(s, s.dst), s.dport), False, tuple(path), s.mark)
        s.in_if, s.out_if, s.in_addr, s.looped = "lo", "", s.dst, True
        verdict = legs["loopback"](s, path, None, None)
    else:
        if legs["inbound"](s, path, None, None) == DROP:
            return Outcome("DROP", None, False, tuple(path), s.mark)
        if s.tproxy is None and s.is_loopback(s.dst):
            path.append("routing:martian")  # loopback destination from outside, route_localnet=0
            return Outcome("DROP", None, False, tuple(path), s.mark)
        if s.tproxy is None and not s.is_local(s.dst):
            path.append("routing:not-forwarded")  # a fresh namespace has ip_forward=0
            return Outcome("DROP", None, False, tuple(path), s.mark)
        verdict = legs["inbound_local"](s, path, None, None)
    if verdict == DROP:
        return Outcome("DROP", None, False, tuple(path), s.mark)
    if s.tproxy is not None:
        return Outcome("ACCEPT", (_text(s, s.tproxy[0]), s.tproxy[1]), True, tuple(path), s.mark)
    return Outcome("ACCEPT", (_text(s, s.dst), s.dport), True, tuple(path), s.mark)


def _handshake(conn: Connection, syn: State, first: Outcome, nat: tuple[int, int],
               legs) -> list[str] | None:
    """The SYN-ACK and the ACK after an accepted SYN: ``None`` when both pass, else the drop.

    They are established packets of the same conntrack entry (its mark carries over), so no
    nat table runs: the entry's mapping is applied where the nat hooks sit. A SYN-ACK from our
    own listener is locally generated (OUTPUT, owner = the listening socket: skb_to_full_sk);
    one from another host arrives on the interface the connection's source address belongs to.
    """
    names, orig = syn.names, (_addr(conn.dst), conn.dport)
    # SYN-ACK: from the socket that accepted back to the client.
    r = State(conn, names)
    r.ctstate, r.tracked, r.ctmark, r.mark = "ESTABLISHED", syn.tracked, syn.ctmark, 0
    r.src, r.sport = (orig if syn.tproxy is not None else nat)
    r.dst, r.dport = _addr(conn.src), conn.sport
    path: list[str] = []
    if first.local:
        r.uid, r.gid = conn.server_uid, conn.server_gid
        r.route_if = "lo" if r.is_local(r.dst) else conn.in_if
        r.in_if, r.out_if = "", r.route_if
        dropped = legs["outbound"](r, path, None, orig) == DROP
        if not dropped and r.is_local(r.dst):
            r.in_if, r.out_if, r.looped = "lo", "", True
            dropped = legs["loopback"](r, path, None, None) == DROP
    else:
        r.in_if, r.out_if, r.route_if = conn.out_if, "", ""
        dropped = (legs["inbound"](r, path, None, None) == DROP
                   or legs["inbound_local"](r, path, None, None) == DROP)
    if dropped:
        return ["syn-ack:" + p for p in path]
    # ACK: the client's second packet, through the same hooks as the SYN.
    a = State(conn, names)
    a.ctstate, a.tracked, a.ctmark = "ESTABLISHED", syn.tracked, r.ctmark
    path = []
    if conn.direction == "outbound":
        dropped = legs["outbound"](a, path, nat, None) == DROP
        if not dropped and a.is_local(a.dst):
            a.in_if, a.out_if, a.in_addr, a.looped = "lo", "", a.dst, True
            dropped = legs["loopback"](a, path, None, None) == DROP
    else:
        a.mark = 0  # marks do not cross namespaces
        dropped = (legs["inbound"](a, path, nat, None) == DROP
                   or legs["inbound_local"](a, path, None, None) == DROP)
    return ["ack:" + p for p in path] if dropped else None


def _outcome(conn: Connection, names: Mapping[str, int], legs: Mapping[str, Callable],
             handshake: bool = True) -> Outcome:
    """The first packet's outcome; for TCP, a DROP instead when the handshake cannot finish
    (``handshake=False``: the ruleset provably cannot drop an established packet)."""
    s = State(conn, names)
    first = _first_packet(s, legs, [], conn.direction)
    if first.verdict == "DROP" or conn.proto != "tcp" or not handshake:
        return first
    # Nothing after the nat hook rewrites the destination: it is the connection's mapping.
    dropped = _handshake(conn, s, first, (s.dst, s.dport), legs)
    if dropped:
        return Outcome("DROP", None, False, first.path + tuple(dropped), first.mark)
    return first


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

    def table_fn(table: str, hook: str, st: State, path: list[str]) -> int:
        return _walk_table(rs, table, hook, st, path)

    legs = {name: (lambda leg: lambda st, path, nat, denat: _run(st, leg, table_fn, path, nat, denat))(leg)
            for name, leg in LEGS.items()}
    return _outcome(conn, names or {}, legs)


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
            if m.conn:
                return f"(s.ct and s.tracked and {neg}((s.ctmark & {m.mask}) == {m.value}))"
            return f"{neg}((s.mark & {m.mask}) == {m.value})"
        if isinstance(m, CtState):
            return f"{neg}(s.state in {self.const(m.states)})"
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

    def leg(self, name: str, leg) -> None:
        """One leg as straight-line code: ``_run`` unrolled, empty ACCEPT chains left out."""
        out = self.lines
        out.append(f"def leg_{name}(s, path, nat, denat):")
        for hook, table in leg:
            chain = self.rs.chain(table, hook)
            out.append(f"    s.hook = {hook!r}")
            out.append("    s.ct = s.looped" if table == "raw" else "    s.ct = True")
            call = [f"v = {self.fn(table, hook)}(s, path)", "if v == 2: return 2"]
            if chain.policy == "DROP":
                call += [f"if v == 0: path.append({self.const(f'{table}/{hook}:policy')}); return 2"]
            if table != "nat":
                if chain.rules or chain.policy != "ACCEPT":
                    out.extend("    " + line for line in call)
                continue
            out.append("    if s.tracked and s.ctstate == 'NEW':")
            out.extend("        " + line for line in (call if chain.rules or chain.policy != "ACCEPT" else ["pass"]))
            if hook == "OUTPUT":
                out.append("        if s.is_loopback(s.src) and not s.is_local(s.dst): "
                           f"path.append({MARTIAN_SOURCE!r}); return 2")
            if hook in ("OUTPUT", "PREROUTING"):
                out.append("    elif nat is not None: s.dst, s.dport = nat")
            elif hook == "POSTROUTING":
                out.append("    elif denat is not None: s.src, s.sport = denat")
            if hook == "OUTPUT":
                out.append("    s.out_if = 'lo' if s.is_local(s.dst) else s.route_if")
        out.append("    return 1")

    def build(self) -> dict[str, Callable]:
        for table, tb in self.rs.tables.items():
            for name in tb.chains:
                self.chain(table, name)
        for name, leg in LEGS.items():
            self.leg(name, leg)
        ns = dict(self.consts)
        exec(compile("\n".join(self.lines), "<compiled ruleset>", "exec"), ns)  # noqa: S102
        return {name: ns[f"leg_{name}"] for name in LEGS}


class CompiledRuleset:
    """A ruleset compiled once into one function per chain and per leg of the path; ``trace``
    gives ``trace()``'s answer."""

    def __init__(self, rs: Ruleset, names: Mapping[str, int] | None = None):
        self.ruleset, self.names = rs, dict(names or {})
        self.legs = _Compiler(rs, self.names).build()
        self.handshake = can_drop_established(rs)

    def trace(self, conn: Connection) -> Outcome:
        _check_family(self.ruleset, conn)
        return _outcome(conn, self.names, self.legs, self.handshake)


def can_drop_established(rs: Ruleset) -> bool:
    """Whether any later packet of a connection could be dropped: they never meet a nat table,
    so only a DROP rule or policy in raw, mangle or filter can (TPROXY on an established packet
    finds its socket). When none exists, the handshake need not be traced."""
    return any(ch.policy == "DROP" or any(r.target is not None and r.target.name == "DROP" for r in ch.rules)
               for t in ("raw", "mangle", "filter") for ch in rs.tables[t].chains.values())


def compile_ruleset(rs: Ruleset, names: Mapping[str, int] | None = None) -> CompiledRuleset:
    """The ruleset as a decision function: compile once, trace many connections."""
    return CompiledRuleset(rs, names)
