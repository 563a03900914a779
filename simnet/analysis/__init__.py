"""``simnet analyze``: findings about a scenario, each with a stable code and the file and line
of the element it is about (see docs/analyze.md for every code).

``analyze(path)`` loads the scenario (problems the catalogue has a code for are findings, not
load errors), derives it, and runs the checks in ``checks``; the answer is an ``Analysis``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from simnet.analysis.catalogue import LEVELS, Message, catalogue, severity
from simnet.analysis.checks import ScenarioFinding, scenario_findings
from simnet.errors import Problem
from simnet.scenario.load import load_for_analysis
from simnet.scenario.references import ProblemKind
from simnet.scenario.source import SourceMap

__all__ = ["LEVELS", "LOADER_CODES", "Analysis", "Finding", "Message", "analyze", "catalogue"]

# The code of each kind of problem the loader sets apart (``load_for_analysis``): the loader
# rejects them, the analyzer reports them as findings of their own.
LOADER_CODES: dict[ProblemKind, str] = {
    ProblemKind.RESERVED_PORT: "SIM0001",
    ProblemKind.PORT_COLLISION: "SIM0002",
    ProblemKind.ROUTE_WEIGHTS: "SIM0009",
    ProblemKind.ROUTE_PORT_UNSERVED: "SIM0010",
}


@dataclass(frozen=True, order=True)
class Finding:
    """One finding, located: ``file:line: field: LEVEL CODE (Name): message``."""

    file: str
    line: int | None
    field: str
    code: str
    level: str
    name: str
    message: str
    docs: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {what}{self.level} {self.code} ({self.name}): {self.message}"

    def to_json(self) -> dict:
        return {"code": self.code, "name": self.name, "level": self.level,
                "file": self.file, "line": self.line, "field": self.field,
                "message": self.message, "docs": self.docs}


@dataclass(frozen=True)
class Analysis:
    """Every finding about one scenario, and what could not be checked and why."""

    scenario: str
    file: str
    findings: tuple[Finding, ...]
    not_checked: tuple[str, ...] = field(default=())

    def at_or_above(self, threshold: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if severity(f.level) >= severity(threshold))

    def to_json(self) -> dict:
        counts = {level: sum(f.level == level for f in self.findings) for level in LEVELS}
        return {"scenario": self.scenario, "file": self.file, "counts": counts,
                "findings": [f.to_json() for f in self.findings],
                "not_checked": list(self.not_checked)}


def _located(message: Message, problem: Problem) -> Finding:
    return Finding(problem.file, problem.line, problem.field, message.code, message.level,
                   message.name, problem.message, message.docs)


def analyze(path: str | Path, *, at: datetime | None = None) -> Analysis:
    """Findings about the scenario at ``path``. ``at``: the moment the run starts, for
    certificate validity (default: the scenario's ``starts_at``, else now). Input the loader
    cannot read at all still raises SimnetError."""
    scenario, source, set_apart = load_for_analysis(path)
    messages = catalogue()
    coded = [(messages[LOADER_CODES[kind]], p) for kind, p in set_apart]
    found = [(m, replace(p, message=m.text(detail=p.message))) for m, p in coded]
    if at is None:
        at = (datetime.fromisoformat(scenario.starts_at) if scenario.starts_at
              else datetime.now(UTC))
    not_checked: tuple[str, ...] = ()
    if any(m.level == "error" for m, _ in found):
        not_checked = (("the derived deployment (ports, capture, memory, reachability): fix the "
                        "errors above first, the scenario does not derive with them"),)
        derived: list[ScenarioFinding] = []
    else:
        derived = list(scenario_findings(scenario, str(path), at))
    found += [(messages[f.code], _problem(source, f)) for f in derived]
    findings = sorted({_located(m, p) for m, p in found})
    return Analysis(scenario.name, str(path), tuple(findings), not_checked)


def _problem(source: SourceMap, f: ScenarioFinding) -> Problem:
    return source.problem(f.loc, catalogue()[f.code].text(**f.params))
