"""Reading restore, save and istio-iptables dry-run text: ``parse`` gives the ``Script`` (every
problem located by line and token, all reported together), ``load`` the applied ``Ruleset``.
"""

from __future__ import annotations

import shlex

from simnet.errors import Problem, SimnetError
from simnet.model.netfilter.options import parse_rule
from simnet.model.netfilter.rules import RuleError
from simnet.model.netfilter.ruleset import BUILTIN_CHAINS, POLICIES, TABLES, Ruleset
from simnet.model.netfilter.script import Block, Command, Script

DUMP_COMMANDS = ("iptables-save", "ip6tables-save")


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
