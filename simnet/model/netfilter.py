"""iptables rulesets: parsed from and printed to the ``iptables-save`` / ``iptables-restore`` text.

One parser reads every form the real tools exchange: ``iptables-save`` output (``*table``,
``:CHAIN POLICY [p:b]``, ``-A`` lines, ``COMMIT``), ``iptables-restore --noflush`` input with
``-N``/``-I``/``-P``/``-F`` commands, and istio-iptables' dry-run output, whose bare
``iptables-save`` lines echo the commands it would run. A ``Script`` keeps the commands in order
(so it prints back as written); ``Ruleset.from_script`` applies them the way iptables-restore
does and gives the resulting chains. Everything the model cannot evaluate exactly is refused with
the line and the token, never skipped: a rule silently ignored would make every prediction wrong.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from simnet.errors import Problem, SimnetError

TABLES = ("raw", "mangle", "nat", "filter")
BUILTIN_CHAINS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
POLICIES = ("ACCEPT", "DROP")
CT_STATES = ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED", "SNAT", "DNAT")
ADDR_TYPES = ("UNICAST", "LOCAL", "BROADCAST", "MULTICAST")  # the ones a namespace's routes decide
DUMP_COMMANDS = ("iptables-save", "ip6tables-save")
FULL_MASK = 0xFFFFFFFF


class RuleError(Exception):
    """A token the parser cannot accept; turned into a located ``Problem`` by the caller."""

    def __init__(self, token: str, message: str):
        super().__init__(message)
        self.token, self.message = token, message


# ----------------------------------------------------------------------------- matches


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


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """``-j NAME [options]``. ``options`` keeps the option tokens as written, for printing.

    Parsed values: REDIRECT/TPROXY ``port``; DNAT ``address``/``port``; TPROXY ``address``;
    MARK/CONNMARK ``mark``/``mask`` (as the kernel applies them: new = (old & ~mask) ^ mark);
    CONNMARK ``action`` (``set``, ``save``, ``restore``); CT ``zone``/``notrack``.
    """

    name: str
    options: tuple[str, ...] = ()
    goto: bool = False
    port: int | None = None
    address: str | None = None
    mark: int = 0
    mask: int = FULL_MASK
    action: str = ""
    zone: int | None = None
    notrack: bool = False

    def tokens(self) -> list[str]:
        return ["-g" if self.goto else "-j", self.name, *self.options]


TERMINAL = frozenset({"ACCEPT", "DROP", "RETURN", "REDIRECT", "DNAT", "TPROXY"})
EXTENSIONS = frozenset({"REDIRECT", "DNAT", "TPROXY", "MARK", "CONNMARK", "CT", "LOG"})
# Which tables and hooks each target may be used in, as the kernel's checkentry functions allow.
TARGET_TABLES = {
    "REDIRECT": {"nat"}, "DNAT": {"nat"}, "TPROXY": {"mangle"}, "CT": {"raw"},
    "MARK": {"raw", "mangle", "nat", "filter"}, "CONNMARK": {"raw", "mangle", "nat", "filter"},
    # iptables: 'The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.'
    "DROP": {"raw", "mangle", "filter"},
}
TARGET_HOOKS = {
    "REDIRECT": {"PREROUTING", "OUTPUT"}, "DNAT": {"PREROUTING", "OUTPUT"},
    "TPROXY": {"PREROUTING"},
}
OWNER_HOOKS = {"OUTPUT", "POSTROUTING"}


@dataclass(frozen=True)
class Rule:
    """One rule: matches in the order written, and a target (None: a rule that only counts)."""

    matches: tuple[Match, ...]
    target: Target | None
    line: int = 0

    def tokens(self) -> list[str]:
        out = [t for m in self.matches for t in m.tokens()]
        return out + (self.target.tokens() if self.target else [])

    def text(self) -> str:
        return " ".join(shlex.quote(t) if _needs_quote(t) else t for t in self.tokens())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and (self.matches, self.target) == (other.matches, other.target)

    def __hash__(self) -> int:
        return hash((self.matches, self.target))


def _needs_quote(token: str) -> bool:
    return token == "" or any(c in token for c in " \t\"'\\")


# ----------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class Command:
    """One line of restore input: ``-A``/``-I``/``-N``/``-P``/``-F``/``-X``/``-D`` or a chain header.

    ``op`` is the flag (``:`` for a ``:CHAIN POLICY`` header, ``echo`` for a bare dump-command
    line of dry-run output). ``position`` is ``-I``'s or ``-D``'s rule number.
    """

    op: str
    chain: str = ""
    rule: Rule | None = None
    position: int | None = None
    policy: str | None = None
    counters: str = ""
    line: int = 0

    def text(self) -> str:
        if self.op == "echo":
            return self.chain
        if self.op == ":":
            return f":{self.chain} {self.policy or '-'} {self.counters or '[0:0]'}"
        parts = [self.op, self.chain]
        if self.position is not None:
            parts.append(str(self.position))
        if self.policy is not None:
            parts.append(self.policy)
        if self.rule is not None and (self.rule.matches or self.rule.target):
            parts.append(self.rule.text())
        return " ".join(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Command) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.op, self.chain, self.rule, self.position, self.policy)


@dataclass(frozen=True)
class Block:
    """``*table`` ... ``COMMIT``: one table's commands, applied atomically by iptables-restore."""

    table: str
    commands: tuple[Command, ...]
    line: int = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and (self.table, self.commands) == (other.table, other.commands)

    def __hash__(self) -> int:
        return hash((self.table, self.commands))


@dataclass(frozen=True)
class Script:
    """A parsed restore/save/dry-run text: table blocks and dump-command echoes, in order."""

    family: int
    items: tuple[Block | Command, ...]

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(i for i in self.items if isinstance(i, Block))

    def text(self) -> str:
        """The script printed back: ``parse(text).text()`` reproduces ``text`` up to spacing."""
        lines: list[str] = []
        for item in self.items:
            if isinstance(item, Command):
                lines.append(item.text())
            else:
                lines.append(f"* {item.table}")
                lines.extend(c.text() for c in item.commands)
                lines.append("COMMIT")
        return "".join(line + "\n" for line in lines)


# ----------------------------------------------------------------------------- rulesets


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
                                  f"target {t.name} is only valid in the {'/'.join(sorted(TARGET_TABLES[t.name]))} table")
                bad = hooks[chain.name] - TARGET_HOOKS.get(t.name, hooks[chain.name]) if t else set()
                if bad:
                    yield Problem(source, r.line, t.name,
                                  f"target {t.name} cannot be used from {'/'.join(sorted(bad))}")
                if any(isinstance(m, Owner) for m in r.matches) and hooks[chain.name] - OWNER_HOOKS:
                    yield Problem(source, r.line, "-m owner",
                                  f"owner match only works in OUTPUT and POSTROUTING, but {chain.name} "
                                  f"is reached from {'/'.join(sorted(hooks[chain.name] - OWNER_HOOKS))}")


# ----------------------------------------------------------------------------- parsing


def parse(text: str, source: str = "<rules>", family: int = 4) -> Script:
    """Parse restore, save or dry-run text for one address family; all problems in one error.
    Lines are split at \\n only, as iptables-restore reads them (and as editors number them)."""
    items: list[Block | Command] = []
    problems: list[Problem] = []
    block: tuple[str, int, list[Command]] | None = None
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line in DUMP_COMMANDS:
                if block is not None:
                    raise RuleError(line, "dump command inside a table block (missing COMMIT?)")
                items.append(Command("echo", chain=line, line=lineno))
            elif line.startswith("*"):
                if block is not None:
                    problems.append(Problem(source, block[1], f"*{block[0]}",
                                            f"table block has no COMMIT before line {lineno}"))
                    block = None
                name = line[1:].strip()
                if name not in TABLES:
                    raise RuleError(name, f"unknown table (simnet models {', '.join(TABLES)})")
                block = (name, lineno, [])
            elif line == "COMMIT":
                if block is None:
                    raise RuleError("COMMIT", "COMMIT without a table")
                items.append(Block(block[0], tuple(block[2]), block[1]))
                block = None
            else:
                if block is None:
                    raise RuleError(line.split()[0], "command outside a *table ... COMMIT block")
                block[2].append(parse_command(line, block[0], family, lineno))
        except RuleError as e:
            problems.append(Problem(source, lineno, e.token, e.message))
    if block is not None:
        problems.append(Problem(source, block[1], f"*{block[0]}", "table block has no COMMIT"))
    if problems:
        raise SimnetError(problems)
    return Script(family, tuple(items))


def load(text: str, source: str = "<rules>", family: int = 4) -> Ruleset:
    """Parse and apply: the ruleset the kernel would hold after ``iptables-restore --noflush``."""
    return Ruleset.from_script(parse(text, source, family), source)


def split_dry_run(text: str) -> list[str]:
    """Split istio-iptables dry-run output into its per-family restore inputs (IPv4 first).

    The dry run prints the IPv4 restore input, then the IPv6 one, back to back; the IPv6 part
    starts where a table seen before opens again.
    """
    parts: list[list[str]] = [[]]
    seen: set[str] = set()
    for line in text.splitlines():
        s = line.strip()
        if s in DUMP_COMMANDS:
            continue
        if s.startswith("*"):
            if s[1:].strip() in seen:
                parts.append([])
                seen = set()
            seen.add(s[1:].strip())
        parts[-1].append(line)
    return ["".join(x + "\n" for x in p) for p in parts if p]


def load_for_family(text: str, source: str, family: int) -> Ruleset:
    """The ruleset for one family from any form, including dry-run output holding both families
    (IPv4 part first, as istio-iptables prints it)."""
    parts = split_dry_run(text)
    if len(parts) > 2:
        raise SimnetError(Problem(source, None, "", f"{len(parts)} rulesets back to back; "
                                  "expected one, or an IPv4 and an IPv6 one"))
    if len(parts) == 2:
        return load(parts[family == 6], source, family)
    return load(text, source, family)


def parse_command(line: str, table: str, family: int = 4, lineno: int = 0) -> Command:
    """One line inside a table block."""
    if line.startswith(":"):
        fields = line[1:].split()
        if len(fields) not in (2, 3) or not fields[0]:
            raise RuleError(line, "chain header must be ':CHAIN POLICY [packets:bytes]'")
        policy = fields[1]
        if policy not in (*POLICIES, "-"):
            raise RuleError(policy, "policy must be ACCEPT, DROP or -")
        return Command(":", fields[0], policy=policy, counters=fields[2] if len(fields) == 3 else "",
                       line=lineno)
    try:
        tokens = shlex.split(line)
    except ValueError as e:
        raise RuleError(line, f"cannot split into tokens: {e}") from None
    op, args = tokens[0], tokens[1:]
    op = {"--append": "-A", "--insert": "-I", "--new-chain": "-N", "--policy": "-P",
          "--flush": "-F", "--delete-chain": "-X", "--delete": "-D"}.get(op, op)
    if op not in ("-A", "-I", "-N", "-P", "-F", "-X", "-D"):
        raise RuleError(op, "unknown command (simnet reads -A, -I, -N, -P, -F, -X, -D)")
    if not args:
        raise RuleError(op, f"{op} needs a chain name")
    chain, args = args[0], args[1:]
    if op in ("-N", "-F", "-X"):
        if args:
            raise RuleError(args[0], f"unexpected argument after {op} {chain}")
        if op == "-N" and chain in BUILTIN_CHAINS[table]:
            raise RuleError(chain, f"{chain} is a built-in chain")
        return Command(op, chain, line=lineno)
    if op == "-P":
        if len(args) != 1 or args[0] not in POLICIES:
            raise RuleError(" ".join(args) or op, "-P CHAIN needs ACCEPT or DROP")
        return Command(op, chain, policy=args[0], line=lineno)
    position = None
    if op in ("-I", "-D") and args and args[0].isdigit():
        position, args = int(args[0]), args[1:]
        if position < 1:
            raise RuleError(str(position), "rule numbers start at 1")
    if op == "-D" and position is not None:
        if args:
            raise RuleError(args[0], "-D CHAIN N takes nothing more")
        return Command(op, chain, position=position, line=lineno)
    return Command(op, chain, rule=parse_rule(args, table, family, lineno), position=position,
                   line=lineno)


def _int(token: str, what: str, lo: int = 0, hi: int = FULL_MASK) -> int:
    try:
        v = int(token, 0)
    except ValueError:
        raise RuleError(token, f"{what} must be a number") from None
    if not lo <= v <= hi:
        raise RuleError(token, f"{what} must be between {lo} and {hi}")
    return v


def _port_range(token: str, sep: str = ":") -> PortRange:
    a, has_sep, b = token.partition(sep)
    lo = _int(a, "port", 0, 65535) if a else 0
    hi = _int(b, "port", 0, 65535) if b else (65535 if has_sep else lo)
    if lo > hi:
        raise RuleError(token, "port range runs backwards")
    return lo, hi


def _network(token: str, family: int):
    try:
        net = ipaddress.ip_network(token, strict=False)
    except ValueError:
        raise RuleError(token, "not an address or CIDR (host names are not resolved)") from None
    if net.version != family:
        raise RuleError(token, f"IPv{net.version} address in an IPv{family} ruleset")
    return net


def _mark(token: str) -> tuple[int, int]:
    value, _, mask = token.partition("/")
    return _int(value, "mark"), _int(mask, "mark mask") if mask else FULL_MASK


def _id_range(token: str) -> tuple[PortRange | None, str | None]:
    a, sep, b = token.partition("-")
    if a.isdigit() and (not sep or b.isdigit()):
        lo, hi = int(a), int(b) if sep else int(a)
        if lo > hi:
            raise RuleError(token, "id range runs backwards")
        return (lo, hi), None
    if not token or not token.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise RuleError(token, "not a user/group id or name")
    return None, token


# Long options iptables accepts by unique prefix (getopt_long); we normalise the common ones.
_OPTION_ALIASES = {
    "--protocol": "-p", "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
    "--in-interface": "-i", "--out-interface": "-o", "--match": "-m", "--jump": "-j",
    "--goto": "-g", "--destination-port": "--dport", "--source-port": "--sport",
    "--destination-ports": "--dports", "--source-ports": "--sports",
}


class _Tokens:
    def __init__(self, tokens: list[str]):
        self.tokens, self.i = tokens, 0

    def more(self) -> bool:
        return self.i < len(self.tokens)

    def peek(self) -> str:
        return self.tokens[self.i]

    def take(self, what: str) -> str:
        if self.i >= len(self.tokens):
            raise RuleError(self.tokens[-1] if self.tokens else what, f"{what} needs a value")
        self.i += 1
        return self.tokens[self.i - 1]

    def negation(self) -> bool:
        if self.more() and self.peek() == "!":
            self.i += 1
            return True
        return False


def parse_rule(tokens: list[str], table: str = "filter", family: int = 4, lineno: int = 0) -> Rule:
    """The matches and target of one rule, from its tokens after the chain name."""
    ts = _Tokens(tokens)
    matches: list[Match] = []
    target: Target | None = None
    proto: str | None = None
    modules: list[str] = []  # loaded with -m, most recent last
    while ts.more():
        negated = ts.negation()
        opt = ts.take("option")
        opt = _OPTION_ALIASES.get(opt, opt)
        if opt == "!":
            raise RuleError(opt, "double negation")
        if negated and ts.more() and ts.peek() == "!":
            raise RuleError("!", "double negation")
        if opt in ("-c", "--set-counters"):
            ts.take("-c packets"), ts.take("-c bytes")
            continue
        if opt == "-p":
            name = ts.take("-p").lower()
            if name not in ("tcp", "udp", "all", "icmp", "icmpv6", "ipv6-icmp", "sctp"):
                raise RuleError(name, "protocol not modelled (tcp, udp, icmp, all)")
            proto = name
            matches.append(Protocol(name, negated))
        elif opt in ("-s", "-d"):
            text = ts.take(opt)
            matches.append(Address("src" if opt == "-s" else "dst", _network(text, family), negated, text))
        elif opt in ("-i", "-o"):
            name = ts.take(opt)
            if not name or len(name) > 15 or "/" in name or " " in name:
                raise RuleError(name, "not an interface name")
            matches.append(Interface("in_if" if opt == "-i" else "out_if", name, negated))
        elif opt == "-m":
            if negated:
                raise RuleError("!", "-m cannot be negated")
            mod = ts.take("-m")
            if mod not in ("tcp", "udp", "multiport", "owner", "mark", "connmark", "conntrack",
                           "state", "addrtype", "comment"):
                raise RuleError(mod, "match module not modelled by simnet")
            if mod in ("tcp", "udp") and proto != mod:
                raise RuleError(mod, f"-m {mod} needs -p {mod} before it")
            if mod == "multiport" and proto not in ("tcp", "udp"):
                raise RuleError(mod, "-m multiport needs -p tcp or -p udp before it")
            modules.append(mod)
            matches.append(_module_match(ts, mod, proto))
        elif opt in ("--dport", "--sport"):
            if proto not in ("tcp", "udp") or (matches and isinstance(matches[-1], Protocol) and matches[-1].negated):
                raise RuleError(opt, f"{opt} needs -p tcp or -p udp before it")
            field_ = opt[2:]
            if any(isinstance(m, Ports) and not m.multiport and m.field == field_ for m in matches):
                raise RuleError(opt, f"{opt} given twice")
            matches.append(Ports(field_, (_port_range(ts.take(opt)),), negated, option=opt))
        elif opt in ("--uid-owner", "--gid-owner"):
            if "owner" not in modules:
                raise RuleError(opt, "needs -m owner")
            ids, name = _id_range(ts.take(opt))
            matches.append(Owner(opt[2:5], ids, name, negated, module=False))
        elif opt in ("-j", "-g"):
            if negated:
                raise RuleError("!", f"{opt} cannot be negated")
            if target is not None:
                raise RuleError(opt, "a rule has one target")
            target = _target(ts, opt, table, family)
        else:
            raise RuleError(opt, "option not modelled by simnet")
        if negated and isinstance(matches[-1], (Comment,)):
            raise RuleError("!", "cannot negate a comment")
    _check_supported_combinations(matches)
    if target is not None and target.port is not None and target.name in ("REDIRECT", "DNAT") \
            and not any(isinstance(m, Protocol) and not m.negated and m.name in ("tcp", "udp", "sctp")
                        for m in matches):
        raise RuleError(target.options[0] if target.options else target.name,
                        "a port needs -p tcp, udp or sctp (iptables: \"Need TCP, UDP, SCTP or DCCP "
                        "with port specification\")")
    return Rule(tuple(matches), target, lineno)


def _check_supported_combinations(matches: list[Match]) -> None:
    protos = [m for m in matches if isinstance(m, Protocol)]
    if len(protos) > 1:
        raise RuleError("-p", "-p given twice")
    for kind in ("src", "dst"):
        if sum(isinstance(m, Address) and m.field == kind for m in matches) > 1:
            raise RuleError("-s" if kind == "src" else "-d", "given twice")
    for kind in ("in_if", "out_if"):
        if sum(isinstance(m, Interface) and m.field == kind for m in matches) > 1:
            raise RuleError("-i" if kind == "in_if" else "-o", "given twice")


def _module_match(ts: _Tokens, mod: str, proto: str | None) -> Match:
    """The options of one ``-m`` module (they follow it, possibly each negated)."""
    if mod in ("tcp", "udp"):
        negated = ts.negation()
        opt = _OPTION_ALIASES.get(ts.take(f"-m {mod}"), None) or ts.tokens[ts.i - 1]
        if opt not in ("--dport", "--sport"):
            raise RuleError(opt, f"-m {mod} option not modelled (simnet reads --dport, --sport)")
        return Ports(opt[2:], (_port_range(ts.take(opt)),), negated, module=mod, option=opt)
    if mod == "multiport":
        negated = ts.negation()
        opt = ts.take("-m multiport")
        opt = _OPTION_ALIASES.get(opt, opt)
        if opt not in ("--dports", "--sports", "--ports"):
            raise RuleError(opt, "-m multiport needs --dports, --sports or --ports")
        items = ts.take(opt).split(",")
        ranges = tuple(_port_range(p) for p in items)
        if sum(1 if lo == hi else 2 for lo, hi in ranges) > 15:
            raise RuleError(opt, "multiport takes at most 15 ports (a range counts as two)")
        field_ = {"--dports": "dport", "--sports": "sport", "--ports": "ports"}[opt]
        return Ports(field_, ranges, negated, multiport=True, module="multiport", option=opt)
    if mod == "owner":
        negated = ts.negation()
        opt = ts.take("-m owner")
        if opt not in ("--uid-owner", "--gid-owner"):
            raise RuleError(opt, "-m owner option not modelled (simnet reads --uid-owner, --gid-owner)")
        ids, name = _id_range(ts.take(opt))
        return Owner(opt[2:5], ids, name, negated)
    if mod in ("mark", "connmark"):
        negated = ts.negation()
        opt = ts.take(f"-m {mod}")
        if opt != "--mark":
            raise RuleError(opt, f"-m {mod} needs --mark")
        text = ts.take("--mark")
        value, mask = _mark(text)
        return Mark(value, mask, negated, conn=mod == "connmark", text=text)
    if mod in ("conntrack", "state"):
        negated = ts.negation()
        opt = ts.take(f"-m {mod}")
        if opt != ("--state" if mod == "state" else "--ctstate"):
            raise RuleError(opt, f"-m {mod} option not modelled (simnet reads --ctstate)")
        order = tuple(ts.take(opt).split(","))
        bad = [s for s in order if s not in CT_STATES]
        if bad:
            raise RuleError(bad[0], f"unknown conntrack state (known: {', '.join(CT_STATES)})")
        return CtState(frozenset(order), negated, order, module=mod)
    if mod == "addrtype":
        negated = ts.negation()
        opt = ts.take("-m addrtype")
        if opt not in ("--src-type", "--dst-type"):
            raise RuleError(opt, "-m addrtype option not modelled (simnet reads --src-type, --dst-type)")
        order = tuple(ts.take(opt).split(","))
        bad = [s for s in order if s not in ADDR_TYPES]
        if bad:
            raise RuleError(bad[0], "unknown address type")
        return AddrType(opt[2:5], frozenset(order), negated, order)
    # comment
    if ts.take("-m comment") != "--comment":
        raise RuleError(ts.tokens[ts.i - 1], "-m comment needs --comment")
    return Comment(ts.take("--comment"))


def _target(ts: _Tokens, opt: str, table: str, family: int) -> Target:
    name = ts.take(opt)
    start = ts.i
    options: dict[str, str] = {}
    flags: set[str] = set()
    takes_value = {"--to-ports", "--to-port", "--to-destination", "--on-port", "--on-ip",
                   "--tproxy-mark", "--set-mark", "--set-xmark", "--and-mark", "--or-mark",
                   "--xor-mark", "--zone", "--log-prefix", "--log-level", "--mask", "--nfmask",
                   "--ctmask"}
    while ts.more() and ts.peek().startswith("--"):
        o = ts.take("option")
        if o in takes_value:
            if o in options:
                raise RuleError(o, f"{o} given twice")
            options[o] = ts.take(o)
        else:
            flags.add(o)
    if ts.more() and not ts.peek().startswith("-") and ts.peek() != "!":
        raise RuleError(ts.peek(), f"unexpected argument to -j {name}")
    written = tuple(ts.tokens[start:ts.i])
    allowed = {
        "ACCEPT": (set(), set()), "DROP": (set(), set()), "RETURN": (set(), set()),
        "REDIRECT": ({"--to-ports", "--to-port"}, {"--random"}),
        "DNAT": ({"--to-destination"}, {"--random", "--persistent"}),
        "TPROXY": ({"--on-port", "--on-ip", "--tproxy-mark"}, set()),
        "MARK": ({"--set-mark", "--set-xmark", "--and-mark", "--or-mark", "--xor-mark"}, set()),
        "CONNMARK": ({"--set-mark", "--set-xmark", "--mask", "--nfmask", "--ctmask"},
                     {"--save-mark", "--restore-mark"}),
        "CT": ({"--zone"}, {"--notrack"}),
        "LOG": ({"--log-prefix", "--log-level"}, {"--log-uid", "--log-tcp-options", "--log-ip-options"}),
    }
    if name in allowed:
        vals, fl = allowed[name]
        for o in options:
            if o not in vals:
                raise RuleError(o, f"option not modelled for -j {name}")
        for f in flags:
            if f not in fl:
                raise RuleError(f, f"option not modelled for -j {name}")
    elif options or flags:
        raise RuleError(next(iter(options or flags)), f"-j {name} takes no options")
    elif not name or name.startswith("-") or len(name) > 28:
        raise RuleError(name, "not a target or chain name")
    elif name.isupper() and name not in ("ACCEPT", "DROP", "RETURN") and name in _KNOWN_UNSUPPORTED:
        raise RuleError(name, "target not modelled by simnet")
    t = Target(name, written, goto=opt == "-g")
    if name == "REDIRECT":
        spec = options.get("--to-ports", options.get("--to-port"))
        port = _port_range(spec, "-")[0] if spec else None
        return replace(t, port=port)
    if name == "DNAT":
        if "--to-destination" not in options:
            raise RuleError("-j DNAT", "DNAT needs --to-destination")
        addr, port = _dnat_destination(options["--to-destination"], family)
        return replace(t, address=addr, port=port)
    if name == "TPROXY":
        if "--on-port" not in options:
            raise RuleError("-j TPROXY", "TPROXY needs --on-port")
        value, mask = _mark(options.get("--tproxy-mark", "0/0"))
        on_ip = options.get("--on-ip")
        if on_ip is not None:
            on_ip = str(_network(on_ip, family).network_address)
        return replace(t, port=_int(options["--on-port"], "--on-port", 0, 65535), address=on_ip,
                       mark=value, mask=mask)
    if name == "MARK":
        if len(options) != 1:
            raise RuleError("-j MARK", "MARK needs exactly one of --set-mark, --set-xmark, --and-mark, --or-mark, --xor-mark")
        (o, v), = options.items()
        value, mask = _mark(v)
        if o in ("--and-mark", "--or-mark", "--xor-mark") and "/" in v:
            raise RuleError(v, f"{o} takes bits, not value/mask")
        mark, mask = {"--set-xmark": (value, mask), "--set-mark": (value, mask | value),
                      "--and-mark": (0, ~value & FULL_MASK), "--or-mark": (value, value),
                      "--xor-mark": (value, 0)}[o]
        return replace(t, mark=mark, mask=mask, action="set")
    if name == "CONNMARK":
        acts = [f for f in ("--save-mark", "--restore-mark") if f in flags]
        sets = [o for o in ("--set-mark", "--set-xmark") if o in options]
        if len(acts) + len(sets) != 1:
            raise RuleError("-j CONNMARK", "CONNMARK needs one of --save-mark, --restore-mark, --set-mark")
        if {"--mask", "--nfmask", "--ctmask"} & set(options):
            raise RuleError(next(iter({"--mask", "--nfmask", "--ctmask"} & set(options))),
                            "CONNMARK masks are not modelled")
        if sets:
            value, mask = _mark(options[sets[0]])
            mask = mask | value if sets[0] == "--set-mark" else mask
            return replace(t, mark=value, mask=mask, action="set")
        return replace(t, action="save" if acts[0] == "--save-mark" else "restore")
    if name == "CT":
        if bool("--zone" in options) == bool("--notrack" in flags):
            raise RuleError("-j CT", "CT needs exactly one of --zone or --notrack (others not modelled)")
        if "--notrack" in flags:
            return replace(t, notrack=True)
        return replace(t, zone=_int(options["--zone"], "--zone", 0, 65535))
    if name == "LOG" and "--log-level" in options:
        _int(options["--log-level"], "--log-level", 0, 7)
    return t


_KNOWN_UNSUPPORTED = frozenset({
    "SNAT", "MASQUERADE", "NETMAP", "REJECT", "NOTRACK", "TRACE", "NFQUEUE", "NFLOG", "TEE",
    "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "SECMARK", "CONNSECMARK", "TCPMSS", "CHECKSUM",
    "AUDIT", "IDLETIMER", "LED", "RATEEST", "SET", "SYNPROXY", "HMARK", "CLUSTERIP", "ULOG",
})


def _dnat_destination(spec: str, family: int) -> tuple[str, int | None]:
    host, port = spec, None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = _port_range(rest[1:], "-")[0]
    elif family == 4 and ":" in spec:
        host, _, p = spec.partition(":")
        port = _port_range(p, "-")[0]
    if "-" in host:
        raise RuleError(spec, "DNAT address ranges are not modelled")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise RuleError(spec, "DNAT --to-destination needs an address") from None
    if addr.version != family:
        raise RuleError(spec, f"IPv{addr.version} address in an IPv{family} ruleset")
    return str(addr), port


def referenced_ports(rs: Ruleset) -> set[int]:
    """Every port a rule can send a connection to (REDIRECT, DNAT, TPROXY targets)."""
    return {r.target.port for _, _, _, r in rs.rules()
            if r.target is not None and r.target.port is not None}


def rule_lines(rs: Ruleset) -> Iterable[str]:
    """``table/CHAIN#n`` for every rule: the names paths use."""
    return (f"{t}/{c}#{n}" for t, c, n, _ in rs.rules())
