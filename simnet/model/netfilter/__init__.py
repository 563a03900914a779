"""iptables rulesets: parsed from and printed to the ``iptables-save`` / ``iptables-restore`` text.

One parser reads every form the real tools exchange: ``iptables-save`` output (``*table``,
``:CHAIN POLICY [p:b]``, ``-A`` lines, ``COMMIT``), ``iptables-restore --noflush`` input with
``-N``/``-I``/``-P``/``-F`` commands, and istio-iptables' dry-run output, whose bare
``iptables-save`` lines echo the commands it would run. A ``Script`` keeps the commands in order
(so it prints back as written); ``Ruleset.from_script`` applies them the way iptables-restore
does and gives the resulting chains. Everything the model cannot evaluate exactly is refused with
the line and the token, never skipped: a rule silently ignored would make every prediction wrong.

This package's modules: ``matches`` (the match types), ``rules`` (targets, ``Rule``,
``RuleError``), ``script`` (commands as written), ``ruleset`` (tables and chains as applied),
``options`` (one rule's tokens to its matches and target) and ``parse`` (whole texts, with line
numbers). This module re-exports what the rest of simnet uses.
"""

from __future__ import annotations

from simnet.model.netfilter.matches import (
    CT_STATES,
    FULL_MASK,
    Address,
    AddrType,
    Comment,
    CtState,
    Interface,
    Mark,
    Owner,
    Ports,
    Protocol,
)
from simnet.model.netfilter.parse import load, load_for_family, parse, split_dry_run
from simnet.model.netfilter.rules import Rule, Target
from simnet.model.netfilter.ruleset import (
    BUILTIN_CHAINS,
    TABLES,
    Ruleset,
    Table,
    hooks_reaching,
    referenced_ports,
    rule_lines,
)

__all__ = [
    "BUILTIN_CHAINS",
    "CT_STATES",
    "FULL_MASK",
    "TABLES",
    "AddrType",
    "Address",
    "Comment",
    "CtState",
    "Interface",
    "Mark",
    "Owner",
    "Ports",
    "Protocol",
    "Rule",
    "Ruleset",
    "Table",
    "Target",
    "hooks_reaching",
    "load",
    "load_for_family",
    "parse",
    "referenced_ports",
    "rule_lines",
    "split_dry_run",
]
