"""iptables rules that can never match: Batfish's filter-line reachability for netfilter.

Batfish reports ACL lines no packet can reach ("filterLineReachability"): lines whose every packet
an earlier line already decided, and lines that contradict themselves. iptables walks a chain in
order and the first rule with a deciding target wins, so the same analysis applies rule by rule:
a rule is *shadowed* when an earlier rule of its chain matches every packet it would and ends the
chain for them; a user chain no reachable rule jumps to is *unreferenced*; a rule whose own
matches exclude each other *never matches*.

Sound, not complete: every match kind is compared the way ``packet_path.match`` (and the kernel)
tests it, and whenever a comparison is not certain the answer is "not covered", so a rule that
some packet can match is never reported. Shadowing by a union of earlier rules is not sought.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from simnet.model.netfilter import (
    BUILTIN_CHAINS, FULL_MASK, TABLES, Address, AddrType, Comment, CtState, Interface,
    Mark, Owner, Ports, Protocol, Rule, Ruleset, Table, Target,
)

__all__ = ["UnreachableRule", "unreachable_rules"]

REASONS = ("shadowed", "unreferenced-chain", "never-matches")
# Targets after which the walk never comes back to the chain (packet_path.apply_target's verdicts).
_DECIDING = frozenset({"ACCEPT", "DROP", "REDIRECT", "DNAT", "TPROXY"})
# Targets that change what later rules of the chain see: the mark, the conntrack mark or state.
_MUTATING = frozenset({"MARK", "CONNMARK", "CT"})


@dataclass(frozen=True)
class UnreachableRule:
    """One rule no packet can reach, and why (``reason`` is one of ``REASONS``)."""

    table: str
    chain: str
    index: int  # 1-based, as iptables -L --line-numbers
    rule: str
    reason: str
    by: str | None  # for "shadowed": the earlier rule that takes its packets, as table/CHAIN#n
    line: int | None  # the rule's line in the source text, when known

    def label(self) -> str:
        return f"{self.table}/{self.chain}#{self.index}"

    def explanation(self) -> str:
        """One sentence saying why no packet can match this rule."""
        where = f" (line {self.line})" if self.line else ""
        if self.reason == "shadowed":
            return (f"{self.label()}{where} `{self.rule}` can never match: every packet it matches "
                    f"is matched first by {self.by}, whose target ends chain {self.chain} for it.")
        if self.reason == "unreferenced-chain":
            return (f"{self.label()}{where} `{self.rule}` can never match: no rule reachable from a "
                    f"built-in chain of table {self.table} jumps or goes to chain {self.chain}.")
        return f"{self.label()}{where} `{self.rule}` can never match: its own matches exclude each other."


def unreachable_rules(rs: Ruleset) -> tuple[UnreachableRule, ...]:
    """Rules no packet can reach, in table/chain/index order (the order of ``Ruleset.rules``)."""
    out: list[UnreachableRule] = []
    for tname in TABLES:
        table = rs.tables[tname]
        mutating = _mutating_chains(table)
        dead = {(c.name, n): found for c in table.chains.values()
                for n, found in _dead_rules(tname, table, c.name, mutating).items()}
        live = _reachable_chains(table, dead)
        for chain in table.chains.values():
            for n, rule in enumerate(chain.rules, 1):
                reason, by = ("unreferenced-chain", None) if chain.name not in live \
                    else dead.get((chain.name, n), (None, None))
                if reason is not None:
                    out.append(UnreachableRule(tname, chain.name, n, rule.text(), reason, by,
                                               rule.line or None))
    return tuple(out)


# ----------------------------------------------------------------------------- chains


def _dead_rules(tname: str, table: Table, name: str,
                mutating: set[str]) -> dict[int, tuple[str, str | None]]:
    """Rules of one chain that contradict themselves or that an earlier rule shadows
    (the earliest such rule is named)."""
    rules = table.chains[name].rules
    # changes[k]: how many of rules[:k] may change the mark, conntrack mark or conntrack state
    # and come back to this chain, so that a later rule sees another packet than an earlier one.
    changes = [0]
    for r in rules:
        changes.append(changes[-1] + _changes_state(r.target, table, mutating))
    dead: dict[int, tuple[str, str | None]] = {}
    for j, rj in enumerate(rules):
        if _never_matches(rj):
            dead[j + 1] = ("never-matches", None)
            continue
        for i in range(j):
            ri = rules[i]
            if not _ends_chain(ri.target, table):
                continue
            if changes[j] - changes[i + 1] and _reads_state(ri):
                continue
            if _covers(ri, rj):
                dead[j + 1] = ("shadowed", f"{tname}/{name}#{i + 1}")
                break
    return dead


def _ends_chain(t: Target | None, table: Table) -> bool:
    """Whether a packet the rule matches never comes back to the rule after it (mirrors
    ``packet_path._walk_table``: RETURN, ``-g`` to a chain, a target with a verdict)."""
    if t is None:
        return False
    if t.name == "RETURN":
        return True
    if t.name in table.chains:
        return t.goto
    return t.name in _DECIDING


def _mutating_chains(table: Table) -> set[str]:
    """Chains whose walk (through their jumps and gotos) may change the mark, the conntrack mark
    or the conntrack state before it returns."""
    found: set[str] = set()
    grew = True
    while grew:
        grew = False
        for c in table.chains.values():
            if c.name not in found and any(
                    r.target is not None and (r.target.name in found or (
                        r.target.name in _MUTATING and r.target.name not in table.chains))
                    for r in c.rules):
                found.add(c.name)
                grew = True
    return found


def _changes_state(t: Target | None, table: Table, mutating: set[str]) -> bool:
    if t is None or t.name == "RETURN":
        return False
    if t.name in table.chains:
        return not t.goto and t.name in mutating  # a goto never comes back to this chain
    return t.name in _MUTATING


def _reads_state(rule: Rule) -> bool:
    return any(isinstance(m, (Mark, CtState)) for m in rule.matches)


def _reachable_chains(table: Table, dead: dict[tuple[str, int], tuple]) -> set[str]:
    """Chains a packet can enter: the built-in ones, and those a rule that can match (in a chain
    a packet can enter) jumps or goes to."""
    live = set(BUILTIN_CHAINS[table.name])
    stack = list(live)
    while stack:
        name = stack.pop()
        for n, r in enumerate(table.chains[name].rules, 1):
            t = r.target
            if t and t.name in table.chains and t.name not in live and (name, n) not in dead:
                live.add(t.name)
                stack.append(t.name)
    return live


# ----------------------------------------------------------------------------- rules


def _covers(ri: Rule, rj: Rule) -> bool:
    """Whether every packet matching ``rj`` matches ``ri``: each match of ``ri`` accepts
    everything, or holds whenever one of ``rj``'s matches holds (rules are conjunctions)."""
    return all(_universal(a) or any(_contains(a, b) for b in rj.matches) for a in ri.matches)


def _never_matches(rule: Rule) -> bool:
    """Whether two of the rule's matches (or one with itself) exclude each other: some match
    ``b`` implies the opposite of a match ``a``. (Not for connmark's opposite: without a
    conntrack entry neither holds, but a ``b`` implying it guarantees the entry.)"""
    flips = [replace(a, negated=not a.negated) for a in rule.matches if not isinstance(a, Comment)]
    return any(_universal(f) or _contains(f, b) for f in flips for b in rule.matches)


def _universal(m) -> bool:
    """Whether a match holds for every packet."""
    if isinstance(m, Comment):
        return True
    if isinstance(m, Protocol):
        return m.name == "all" and not m.negated
    if isinstance(m, Address):
        return m.net.prefixlen == 0 and not m.negated
    if isinstance(m, Interface):
        return m.name == "+" and not m.negated
    if isinstance(m, Ports):
        return _subset([(0, 65535)], _port_set(m)[1])
    if isinstance(m, Mark):  # a connmark match fails without a conntrack entry: never universal
        return not m.conn and m.mask == 0 and m.value == 0 and not m.negated
    return False  # owner (no socket), conntrack and address types: not claimed


def _contains(a, b) -> bool:
    """Whether every packet matching ``b`` matches ``a`` (False when not sure)."""
    if isinstance(a, Ports) and isinstance(b, Ports):
        return _ports_contain(a, b)  # --dport/--sport/--ports: compared across fields
    if type(a) is not type(b) or getattr(a, "field", None) != getattr(b, "field", None):
        return False
    if isinstance(a, Protocol):
        return _implies(b.negated, b.name, a.negated, a.name, _proto_subset, _proto_disjoint)
    if isinstance(a, Address):
        return _implies(b.negated, b.net, a.negated, a.net, lambda x, y: x.subnet_of(y),
                        lambda x, y: not x.overlaps(y))
    if isinstance(a, Interface):
        return _implies(b.negated, b.name, a.negated, a.name, _if_subset, _if_disjoint)
    if isinstance(a, Owner):
        return _implies(b.negated, _ids(b), a.negated, _ids(a), _ids_subset, _ids_disjoint)
    if isinstance(a, Mark):
        return a.conn == b.conn and _implies(b.negated, (b.value, b.mask), a.negated,
                                             (a.value, a.mask), _mark_subset, _mark_disjoint)
    if isinstance(a, CtState):
        # xt_conntrack tests a set of bits: SNAT/DNAT come on top of the base state, so only
        # base states are known to exclude each other.
        return _implies(b.negated, b.states, a.negated, a.states, frozenset.issubset,
                        lambda x, y: not (x & y or (x | y) & {"SNAT", "DNAT"}))
    if isinstance(a, AddrType):  # one route type per address
        return _implies(b.negated, b.types, a.negated, a.types, frozenset.issubset,
                        frozenset.isdisjoint)
    return isinstance(a, Comment)


def _implies(b_neg: bool, b_set, a_neg: bool, a_set, subset: Callable, disjoint: Callable) -> bool:
    """For a match testing one value against a set: does (x in B) != b_neg imply
    (x in A) != a_neg? ``subset(X, Y)``/``disjoint(X, Y)`` answer for positive sets."""
    if not b_neg:
        return disjoint(b_set, a_set) if a_neg else subset(b_set, a_set)
    return subset(a_set, b_set) if a_neg else False  # a complement inside a set: see _universal


def _proto_set(name: str) -> frozenset[str]:
    # packet_path.match: ipv6-icmp also matches a packet whose protocol reads icmpv6
    return frozenset({name, "icmpv6"}) if name == "ipv6-icmp" else frozenset({name})


def _proto_subset(x: str, y: str) -> bool:
    return y == "all" or (x != "all" and _proto_set(x) <= _proto_set(y))


def _proto_disjoint(x: str, y: str) -> bool:
    return "all" not in (x, y) and not _proto_set(x) & _proto_set(y)


def _if_subset(x: str, y: str) -> bool:
    """Interface names: ``eth+`` is every name starting with ``eth`` (``+`` is every name)."""
    if y.endswith("+"):
        return (x[:-1] if x.endswith("+") else x).startswith(y[:-1])
    return x == y


def _if_disjoint(x: str, y: str) -> bool:
    px, py = x.endswith("+"), y.endswith("+")
    x0, y0 = x[:-1] if px else x, y[:-1] if py else y
    if px and py:
        return not (x0.startswith(y0) or y0.startswith(x0))
    if px or py:
        prefix, name = (x0, y0) if px else (y0, x0)
        return not name.startswith(prefix)
    return x != y


Ranges = Sequence[tuple[int, int]]


def _merged(ranges: Ranges) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _subset(x: Ranges, y: Ranges) -> bool:
    """Every value of the ranges ``x`` lies in the ranges ``y``."""
    ys = _merged(y)
    return all(any(a <= lo and hi <= b for a, b in ys) for lo, hi in _merged(x))


def _complement(ranges: Ranges, top: int) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in _merged(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    return out + ([(nxt, top)] if nxt <= top else [])


def _port_set(m: Ports) -> tuple[str, list[tuple[int, int]]]:
    """A port match as a positive constraint: ("dport"|"sport", S) for the port in S;
    ("or", S) for either port in S (``--ports``); ("and", S) for both in S (``! --ports``)."""
    if m.field == "ports":
        return ("and", _complement(m.ranges, 65535)) if m.negated else ("or", list(m.ranges))
    return m.field, _complement(m.ranges, 65535) if m.negated else list(m.ranges)


def _ports_contain(a: Ports, b: Ports) -> bool:
    (fa, sa), (fb, sb) = _port_set(a), _port_set(b)
    if not sb:
        return True  # b matches nothing
    return _subset(sb, sa) and (fa == fb or fa == "or" or fb == "and")


def _ids(m: Owner):
    return m.ids if m.ids is not None else m.name  # a name: the same name is the same id


def _ids_subset(x, y) -> bool:
    if isinstance(x, tuple) and isinstance(y, tuple):
        return y[0] <= x[0] and x[1] <= y[1]
    return x == y


def _ids_disjoint(x, y) -> bool:
    return isinstance(x, tuple) and isinstance(y, tuple) and (x[1] < y[0] or y[1] < x[0])


def _mark_empty(vm: tuple[int, int]) -> bool:
    return bool(vm[0] & ~vm[1] & FULL_MASK)  # a value bit outside the mask: (mark & m) == v never


def _mark_subset(x: tuple[int, int], y: tuple[int, int]) -> bool:
    """{m : m & xm == xv} within {m : m & ym == yv}: y tests only bits x fixes, to y's values."""
    (xv, xm), (yv, ym) = x, y
    return _mark_empty(x) or (not ym & ~xm and (xv & ym) == yv)


def _mark_disjoint(x: tuple[int, int], y: tuple[int, int]) -> bool:
    (xv, xm), (yv, ym) = x, y
    return _mark_empty(x) or _mark_empty(y) or bool((xv ^ yv) & xm & ym)

