"""Targets and rules: a ``Rule`` is its matches in order and a ``Target`` (``-j``/``-g``), with
the kernel's limits on where each target may be used; ``RuleError`` is how every part of the
netfilter model refuses a token.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from simnet.errors import Error
from simnet.model.netfilter.matches import FULL_MASK, Match


class RuleError(Error):
    """A token the parser cannot accept; turned into a located ``Problem`` by the caller."""

    def __init__(self, token: str, message: str):
        super().__init__(message)
        self.token, self.message = token, message


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
