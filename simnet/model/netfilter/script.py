"""A restore, save or dry-run text as commands in the order written (``Command``, ``Block``,
``Script``), so that it prints back line for line; applying them is ``Ruleset.from_script``.
"""

from __future__ import annotations

from dataclasses import dataclass

from simnet.model.netfilter.rules import Rule


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
