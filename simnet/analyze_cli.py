"""`simnet analyze`: a linter for the platform configuration a scenario describes, in the
spirit of ``istioctl analyze``. Findings carry stable codes (docs/analyze.md) and the file and
line of the element they are about; the exit code is 1 when any finding is at or above
``--failure-threshold``, 2 when the input cannot be read, else 0.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from simnet.errors import SimnetError


class Format(str, Enum):
    text = "text"
    json = "json"
    yaml = "yaml"


class Level(str, Enum):
    info = "info"
    warning = "warning"
    error = "error"


def _moment(value: Optional[str]) -> Optional[datetime]:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time with a zone, e.g. "
                                 "2026-12-01T09:00:00Z")
    return moment


def analyze(
    scenario: Annotated[Path, typer.Argument(metavar="SCENARIO", help=
        "A scenario file, or the name of a bundled scenario.")],
    format: Annotated[Format, typer.Option("--format", "-o", help="Output format.")] = Format.text,
    failure_threshold: Annotated[Level, typer.Option(help=
        "Exit 1 when a finding is at or above this level.")] = Level.error,
    at: Annotated[Optional[str], typer.Option(callback=_moment, help=
        "When the run starts, for certificate validity (ISO 8601); default: the scenario's "
        "starts_at, else now.")] = None,
) -> None:
    """Check a scenario for configuration problems: findings with stable codes (SIM0001...)."""
    from simnet.analysis import analyze as run_analysis
    from simnet.cli import _fail
    from simnet.scenario.load import scenario_path

    try:
        result = run_analysis(scenario_path(scenario), at=at)
    except SimnetError as e:
        _fail(e)
    if format is Format.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    elif format is Format.yaml:
        from ruamel.yaml import YAML

        YAML().dump(result.to_json(), sys.stdout)
    else:
        _print_text(result)
    if result.at_or_above(failure_threshold.value):
        raise typer.Exit(1)


def _print_text(result) -> None:
    for f in result.findings:
        sys.stdout.write(f"{f}\n  see {f.docs}\n")
    for reason in result.not_checked:
        sys.stdout.write(f"not checked: {reason}\n")
    counts = result.to_json()["counts"]
    if not result.findings:
        sys.stdout.write(f"{result.file}: no findings\n")
    else:
        sys.stdout.write(f"{result.file}: {counts['error']} error(s), {counts['warning']} "
                         f"warning(s), {counts['info']} info\n")
