"""Where a sweep comes from, and its points checked before anything runs.

A sweep is a scenario's ``sweep:`` section, or a file of its own that names the scenario it
varies (``scenario: diego-route-integrity`` and the same fields at the top level), so several
sweeps can share one scenario. Either way every point is validated as a scenario first, and a
bad path or value is reported at the sweep parameter's line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from simnet.errors import Problem, SimnetError
from simnet.scenario.bosh_manifest import merge_manifest
from simnet.scenario.bundled import bundled
from simnet.scenario.load import load_scenario
from simnet.scenario.messages import message, schema_problems
from simnet.scenario.schema import Scenario
from simnet.scenario.source import Loc, SourceMap, plain, yaml_document
from simnet.sweep.design import Point, points
from simnet.sweep.point import applied


class _SweepFileMap(SourceMap):
    """A sweep file's lines, addressed as the scenario's ``sweep`` section would be: problems
    name the sweep file and the field as written there (``parameters.routers.count``)."""

    def problem(self, loc: Loc, message: str) -> Problem:
        return _in_sweep_file(super().problem(loc, message))


def _in_sweep_file(p: Problem) -> Problem:
    return replace(p, field=p.field.removeprefix("sweep").removeprefix("."))


def _scenario_path(ref: str, sweep_file: Path) -> Path:
    """A sweep file's ``scenario:``: a path relative to the sweep file, or a bundled name."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        return path if path.is_absolute() else sweep_file.parent / path
    return bundled(ref)


def _sweep_file(path: Path, doc: CommentedMap) -> tuple[Scenario, dict, SourceMap]:
    root = CommentedMap(sweep=doc)  # so lines and messages resolve as for a sweep: section
    source = _SweepFileMap(str(path), root)
    ref = doc["scenario"]
    if not isinstance(ref, str) or not ref:
        raise SimnetError(source.problem(("sweep", "scenario"), "expected a scenario file "
                                         "(.yaml, relative to this file) or a bundled name"))
    scenario_file = _scenario_path(ref, path)
    if not scenario_file.exists():
        raise SimnetError(source.problem(("sweep", "scenario"), f"no scenario {ref!r} "
                                         f"(looked for {scenario_file})"))
    scenario, scenario_source = load_scenario(scenario_file)
    data = _scenario_data(scenario, scenario_source, scenario_file)
    sweep = {k: v for k, v in plain(doc).items() if k != "scenario"}
    try:
        scenario = Scenario.model_validate({**data, "sweep": sweep}, strict=True)
    except ValidationError as err:
        raise SimnetError([_in_sweep_file(p) for p in schema_problems(err, source, Scenario)]
                          ) from None
    return scenario, data, source


def _scenario_data(scenario: Scenario, source: SourceMap, path: Path) -> dict:
    """The scenario as loaded, without its sweep: what each point's values are applied to."""
    data = plain(source.doc)
    data.pop("sweep", None)
    if scenario.bosh_manifest is not None:  # apps and routes come from the manifest, as on load
        merge_manifest(data, str(path), source)
    return data


def sweep_source(path: str | Path) -> tuple[Scenario, dict, SourceMap]:
    """The scenario with its sweep, its data without the sweep, and where the sweep is.

    ``path`` is a scenario with a ``sweep:`` section, or a sweep file: the same fields at the
    top level plus ``scenario:`` naming the scenario it varies (a path or a bundled name)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None  # load_scenario says what is wrong with the file
    doc = yaml_document(text, str(path))[0] if text is not None else None
    if isinstance(doc, CommentedMap) and "scenario" in doc:
        return _sweep_file(path, doc)
    scenario, source = load_scenario(path)
    if scenario.sweep is None:
        raise SimnetError(Problem(str(path), 1, "sweep", "the scenario has no sweep: section "
                                  "(or, for a sweep file, no scenario: naming one)"))
    return scenario, _scenario_data(scenario, source, path), source


def checked_points(scenario: Scenario, data: dict, source: SourceMap) -> list[Point]:
    """Every point, each checked as a scenario; problems at the sweep parameter's line."""
    problems: dict[tuple, Problem] = {}
    pts = points(scenario.sweep, scenario.seed)
    for p in pts:
        try:
            Scenario.model_validate(applied(data, {**p.params, "seed": p.seed}), strict=True)
        except KeyError as e:
            for name in p.params:
                try:
                    applied(data, {name: p.params[name]})
                except KeyError:
                    loc = ("sweep", "parameters", name)
                    problems.setdefault(loc, source.problem(loc, str(e).strip("'\"")))
        except ValidationError as err:
            for e in err.errors(include_url=False):
                where = ".".join(map(str, e["loc"]))
                name = next((n for n in p.params if where == n or where.startswith(n + ".")
                             or n.startswith(where + ".")), None)
                loc = ("sweep", "parameters", name) if name else tuple(e["loc"])
                text = message(e, tuple(e["loc"]), Scenario)
                problems.setdefault(loc, source.problem(loc, (
                    f"{text} (value {p.params.get(name)!r})" if name else text)))
    if problems:
        raise SimnetError(list(problems.values()))
    return pts


