"""Load a scenario file: YAML with line numbers, schema validation, cross-references.

Every problem is collected in one pass and reported as ``FILE:LINE: field.path: message``:
duplicate keys and YAML errors (``scenario.source``), schema violations (pydantic, each mapped
back to the line it came from: ``scenario.messages``) and cross-references between sections
(``scenario.references``: routes to unknown apps, faults on instances that do not exist, ...).
Cross-references are checked even when other parts of the file are invalid, on the parts that
are valid, so one run of the loader shows everything there is to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from simnet.credentials import certificates
from simnet.errors import Problem, SimnetError
from simnet.scenario.bosh_manifest import merge_manifest
from simnet.scenario.bundled import BUNDLED, DEFAULT_SCENARIO, bundled, scenario_path
from simnet.scenario.messages import schema_problems, yaml_value
from simnet.scenario.references import (
    ProblemKind,
    raw_reference_problems,
    reference_problems,
)
from simnet.scenario.schema import Scenario
from simnet.scenario.source import (
    AliasCycle,
    SourceMap,
    plain,
    relative_to,
    yaml_document,
)

# SourceMap, relative_to and the bundled scenarios' names are re-exported: callers that load a
# scenario find them here.
__all__ = [
    "BUNDLED", "DEFAULT_SCENARIO", "SourceMap", "bundled", "load_for_analysis", "load_scenario",
    "load_text", "relative_to", "scenario_path",
]


def _certificate_problems(s: Scenario, file: str, source: SourceMap) -> list[Problem]:
    """Every ``certificates`` file must hold PEM certificates (errors name that file's line)."""
    problems = []
    for i, c in enumerate(s.certificates):
        try:
            certificates(relative_to(file, c.file), f"certificates[{i}].file")
        except SimnetError as e:
            problems += [source.problem(("certificates", i, "file"), str(p)) for p in e.problems]
    return problems


# --- entry points -------------------------------------------------------------------------


def load_text(text: str, file: str = "<string>",
              findings: list[tuple[ProblemKind, Problem]] | None = None
              ) -> tuple[Scenario, SourceMap]:
    """Parse and validate scenario text; raise SimnetError listing every problem (with
    ``findings``, see ``_load_text``)."""
    try:
        return _load_text(text, file, findings)
    except RecursionError:
        raise SimnetError(Problem(file, 1, "", "the document is nested too deeply")) from None


def _load_text(text: str, file: str, findings: list[tuple[ProblemKind, Problem]] | None = None
               ) -> tuple[Scenario, SourceMap]:
    """The loader; with ``findings``, cross-reference problems with a kind go there as (kind,
    problem) instead of failing the load (``simnet analyze`` reports them with its codes)."""
    doc, problems = yaml_document(text, file)
    source = SourceMap(file, doc)
    if doc is None:
        raise SimnetError(Problem(file, 1, "", (
            "the file is empty: a scenario is a YAML mapping with at least name, cells and apps"
        )))
    if not isinstance(doc, CommentedMap):
        got = yaml_value(_plain_or(doc))
        raise SimnetError(Problem(file, source.line(()) or 1, "", (
            f"a scenario must be a YAML mapping (key: value lines), got {got}"
        )))
    try:
        data = plain(doc)
    except AliasCycle as c:
        raise SimnetError(problems + [source.problem(c.loc, "an alias refers to a mapping or list "
                                                     "that contains it (recursive structure)")]
                          ) from None
    if isinstance(data.get("bosh_manifest"), str):
        problems += merge_manifest(data, file, source)
    try:
        scenario = Scenario.model_validate(data, strict=True)
    except ValidationError as err:
        problems += schema_problems(err, source, Scenario)
        problems += [source.problem(r.loc, r.message) for r in raw_reference_problems(data)]
        raise SimnetError(problems) from None
    for r in reference_problems(scenario):
        if r.kind is not None and findings is not None:
            findings.append((r.kind, source.problem(r.loc, r.message)))
        else:
            problems.append(source.problem(r.loc, r.message))
    problems += _certificate_problems(scenario, file, source)
    if problems:
        raise SimnetError(problems)
    return scenario, source


def _plain_or(node: Any) -> Any:
    try:
        return plain(node)
    except AliasCycle:
        return node


def load_scenario(path: str | Path) -> tuple[Scenario, SourceMap]:
    """Load a scenario file; the file name in errors is the path as given."""
    return load_text(_read_scenario(path), str(path))


def load_for_analysis(path: str | Path
                      ) -> tuple[Scenario, SourceMap, list[tuple[ProblemKind, Problem]]]:
    """Load a scenario file keeping apart the problems ``simnet analyze`` has a code for
    (reserved and colliding ports, route weights, unserved route ports) as (kind, problem);
    anything else wrong still raises SimnetError."""
    findings: list[tuple[ProblemKind, Problem]] = []
    scenario, source = load_text(_read_scenario(path), str(path), findings)
    return scenario, source, findings


def _read_scenario(path: str | Path) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SimnetError(Problem(str(path), None, "", f"cannot read: {e.strerror or e}")) from None
    except UnicodeDecodeError as e:
        line = p.read_bytes().count(b"\n", 0, e.start) + 1
        raise SimnetError(Problem(str(path), line, "", "not UTF-8 text")) from None
    return text.removeprefix("\ufeff")
