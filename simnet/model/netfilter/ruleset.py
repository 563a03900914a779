"""The tables and chains the kernel evaluates (``Ruleset``), built by applying a ``Script`` the
way ``iptables-restore --noflush`` does, and refusing what the kernel's checks would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from simnet.errors import Problem, SimnetError
from simnet.model.netfilter.matches import Owner
from simnet.model.netfilter.rules import (
    EXTENSIONS,
    OWNER_HOOKS,
    TARGET_HOOKS,
    TARGET_TABLES,
    TERMINAL,
    Rule,
    RuleError,
)
from simnet.model.netfilter.script import Block, Command, Script

TABLES = ("raw", "mangle", "nat", "filter")
BUILTIN_CHAINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
POLICIES = ("ACCEPT", "DROP")


@dataclass
class Chain:
    """A chain's rules in order, and its policy (None for user-defined chains)."""

    name: str
    rules: list[Rule] = field(default_factory=list)
    policy: str | None = None


@dataclass
class Table:
    name: str
    chains: dict[str, Chain]

    @classmethod
    def empty(cls, name: str) -> Table:
        return cls(name, {c: Chain(c, policy="ACCEPT") for c in BUILTIN_CHAINS[name]})


@dataclass
class Ruleset:
    """The state of every table after the commands were applied: what the kernel evaluates."""

    family: int = 4
    tables: dict[str, Table] = field(default_factory=lambda: {t: Table.empty(t) for t in TABLES})

    def chain(self, table: str, name: str) -> Chain:
        return self.tables[table].chains[name]

    @classmethod
    def from_script(cls, script: Script, source: str = "<rules>",
                    base: Ruleset | None = None) -> Ruleset:
        """Apply a script's blocks as ``iptables-restore --noflush`` would, onto ``base``.

        Every block is checked whole before it is applied (iptables-restore commits a table
        atomically); all problems are reported together.
        """
        rs = base.copy() if base is not None else cls(family=script.family)
        problems: list[Problem] = []
        for block in script.blocks:
            table = rs.tables[block.table]
            staged = Table(table.name, {n: Chain(n, list(c.rules), c.policy)
                                        for n, c in table.chains.items()})
            for cmd in block.commands:
                try:
                    _apply(staged, cmd)
                except RuleError as e:
                    problems.append(Problem(source, cmd.line, e.token, e.message))
            problems.extend(_unresolved_jumps(staged, block, source))
            rs.tables[block.table] = staged
        problems.extend(_misplaced_rules(rs, source))
        if problems:
            raise SimnetError(problems)
        return rs

    def copy(self) -> Ruleset:
        return Ruleset(self.family, {t: Table(t, {n: Chain(n, list(c.rules), c.policy)
                                                  for n, c in tb.chains.items()})
                                     for t, tb in self.tables.items()})

    def save_text(self) -> str:
        """The ruleset in ``iptables-save`` form (tables that hold only defaults are left out)."""
        out: list[str] = []
        for name in TABLES:
            table = self.tables[name]
            if _is_default(table):
                continue
            out.append(f"*{name}")
            for chain in table.chains.values():
                out.append(f":{chain.name} {chain.policy or '-'} [0:0]")
            for chain in table.chains.values():
                out.extend(f"-A {chain.name} {r.text()}".rstrip() for r in chain.rules)
            out.append("COMMIT")
        return "".join(line + "\n" for line in out)

    def rules(self) -> Iterator[tuple[str, str, int, Rule]]:
        """Every rule as (table, chain, 1-based number, rule)."""
        for t in TABLES:
            for chain in self.tables[t].chains.values():
                for n, r in enumerate(chain.rules, 1):
                    yield t, chain.name, n, r

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ruleset) or self.family != other.family:
            return False
        return all(_chains_key(self.tables[t]) == _chains_key(other.tables[t]) for t in TABLES)


def _chains_key(table: Table) -> dict:
    return {n: (c.policy, tuple(c.rules)) for n, c in table.chains.items()}


def _is_default(table: Table) -> bool:
    return all(c.policy == "ACCEPT" and not c.rules and c.name in BUILTIN_CHAINS[table.name]
               for c in table.chains.values()) and len(table.chains) == len(BUILTIN_CHAINS[table.name])


def _apply(table: Table, cmd: Command) -> None:
    chains = table.chains
    builtin = cmd.chain in BUILTIN_CHAINS[table.name]
    if cmd.op == ":":
        if builtin:
            if cmd.policy not in POLICIES:
                raise RuleError(cmd.policy or "-", f"built-in chain {cmd.chain} needs ACCEPT or DROP")
            chains[cmd.chain].policy = cmd.policy
            chains[cmd.chain].rules.clear()  # a header in restore input flushes the chain
        else:
            if cmd.policy not in (None, "-"):
                raise RuleError(cmd.policy, f"user chain {cmd.chain} cannot have a policy")
            chains[cmd.chain] = Chain(cmd.chain)
        return
    if cmd.op == "-N":
        if cmd.chain in chains:
            raise RuleError(cmd.chain, f"chain {cmd.chain} already exists in table {table.name}")
        chains[cmd.chain] = Chain(cmd.chain)
        return
    if cmd.chain not in chains:
        raise RuleError(cmd.chain, f"no chain {cmd.chain} in table {table.name}")
    chain = chains[cmd.chain]
    if cmd.op == "-A":
        chain.rules.append(replace(cmd.rule, line=cmd.line))
    elif cmd.op == "-I":
        pos = cmd.position or 1
        if pos > len(chain.rules) + 1:
            raise RuleError(str(pos), f"index of insertion too big: {cmd.chain} has {len(chain.rules)} rules")
        chain.rules.insert(pos - 1, replace(cmd.rule, line=cmd.line))
    elif cmd.op == "-P":
        if not builtin:
            raise RuleError(cmd.chain, f"cannot set a policy on user chain {cmd.chain}")
        chain.policy = cmd.policy
    elif cmd.op == "-F":
        chain.rules.clear()
    elif cmd.op == "-X":
        if builtin:
            raise RuleError(cmd.chain, f"cannot delete built-in chain {cmd.chain}")
        users = [f"{c.name}#{n}" for c in chains.values() for n, r in enumerate(c.rules, 1)
                 if r.target and r.target.name == cmd.chain]
        if users or chain.rules:
            raise RuleError(cmd.chain, f"chain {cmd.chain} is not empty or still referenced")
        del chains[cmd.chain]
    elif cmd.op == "-D":
        if cmd.position is not None:
            if not 1 <= cmd.position <= len(chain.rules):
                raise RuleError(str(cmd.position), f"{cmd.chain} has no rule {cmd.position}")
            del chain.rules[cmd.position - 1]
        elif cmd.rule in chain.rules:
            chain.rules.remove(cmd.rule)
        else:
            raise RuleError(cmd.chain, "no rule like that to delete")


def _unresolved_jumps(table: Table, block: Block, source: str) -> Iterator[Problem]:
    for chain in table.chains.values():
        for r in chain.rules:
            t = r.target
            if t and t.name not in TERMINAL | EXTENSIONS and t.name not in table.chains:
                yield Problem(source, r.line, t.name,
                              f"jump to chain {t.name}, which table {table.name} does not have")


def hooks_reaching(table: Table) -> dict[str, set[str]]:
    """For each chain, the built-in chains (hooks) from which it can be reached."""
    hooks: dict[str, set[str]] = {n: set() for n in table.chains}
    for root in BUILTIN_CHAINS[table.name]:
        stack, seen = [root], {root}
        while stack:
            name = stack.pop()
            hooks[name].add(root)
            for r in table.chains[name].rules:
                if r.target and r.target.name in table.chains and r.target.name not in seen:
                    seen.add(r.target.name)
                    stack.append(r.target.name)
    return hooks


def _misplaced_rules(rs: Ruleset, source: str) -> Iterator[Problem]:
    """Rules the kernel's checkentry would refuse: a target or owner match used at a hook or in a
    table that does not allow it (e.g. TPROXY outside mangle PREROUTING, owner in PREROUTING)."""
    for tname in TABLES:
        table = rs.tables[tname]
        hooks = hooks_reaching(table)
        for chain in table.chains.values():
            for r in chain.rules:
                t = r.target
                if t and t.name in TARGET_TABLES and tname not in TARGET_TABLES[t.name]:
                    yield Problem(source, r.line, t.name,
                                  f"target {t.name} is only valid in the "
                                  f"{'/'.join(sorted(TARGET_TABLES[t.name]))} table")
                bad = hooks[chain.name] - TARGET_HOOKS.get(t.name, hooks[chain.name]) if t else set()
                if bad:
                    yield Problem(source, r.line, t.name,
                                  f"target {t.name} cannot be used from {'/'.join(sorted(bad))}")
                if any(isinstance(m, Owner) for m in r.matches) and hooks[chain.name] - OWNER_HOOKS:
                    yield Problem(source, r.line, "-m owner",
                                  f"owner match only works in OUTPUT and POSTROUTING, but {chain.name} "
                                  f"is reached from {'/'.join(sorted(hooks[chain.name] - OWNER_HOOKS))}")


def referenced_ports(rs: Ruleset) -> set[int]:
    """Every port a rule can send a connection to (REDIRECT, DNAT, TPROXY targets)."""
    return {r.target.port for _, _, _, r in rs.rules()
            if r.target is not None and r.target.port is not None}


def rule_lines(rs: Ruleset) -> Iterable[str]:
    """``table/CHAIN#n`` for every rule: the names paths use."""
    return (f"{t}/{c}#{n}" for t, c, n, _ in rs.rules())
