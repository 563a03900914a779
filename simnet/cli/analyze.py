"""`simnet analyze`: a linter for the platform configuration a scenario describes, in the
spirit of ``istioctl analyze``. Findings carry stable codes (docs/analyze.md) and the file and
line of the element they are about; the exit code is 1 when any finding is at or above
``--failure-threshold``, 2 when the input cannot be read, else 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from simnet.cli.params import iso_time_with_zone

Format = Literal["text", "json", "yaml"]
Level = Literal["info", "warning", "error"]


def analyze(
    scenario: Annotated[Path, typer.Argument(metavar="SCENARIO", help=
        "A scenario file, or the name of a bundled scenario.")],
    format: Annotated[Format, typer.Option("--format", "-o", help="Output format.")] = "text",
    failure_threshold: Annotated[Level, typer.Option(help=
        "Exit 1 when a finding is at or above this level.")] = "error",
    at: Annotated[str | None, typer.Option(callback=iso_time_with_zone, help=
        "When the run starts, for certificate validity (ISO 8601); default: the scenario's "
        "starts_at, else now.")] = None,
) -> None:
    """Check a scenario for configuration problems: findings with stable codes (SIM0001...)."""
    from simnet.analysis import analyze as run_analysis
    from simnet.scenario.load import scenario_path

    result = run_analysis(scenario_path(scenario), at=at)
    if format == "json":
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    elif format == "yaml":
        from ruamel.yaml import YAML

        YAML().dump(result.to_json(), sys.stdout)
    else:
        print_text(result)
    if result.at_or_above(failure_threshold):
        raise typer.Exit(1)


def print_text(result) -> None:
    """Each finding with where to read about it, what was not checked, and the counts."""
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
