"""`simnet emulate`: run a scenario on real components in real time and write its report in
the schema `simnet run` writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from simnet.cli.output import bad_argument, console
from simnet.cli.run import LazyProgress, instance_table, summary_table
from simnet.errors import SimnetError

EMULATED_PLATFORMS = ("diego",)


def _emulable(command: str, scenario: Path | None, **scale):
    """The scenario to emulate (a file, a bundled name, the default), cut and scaled: root and
    a platform the twin can build are required up front."""
    from simnet.lenses import load, scaled
    from simnet.scenario.load import bundled, scenario_path

    if os.geteuid() != 0:
        raise bad_argument(command, "needs root: it creates network namespaces and loads rules")
    path = scenario_path(scenario) if scenario is not None else bundled()
    s, source = load(path)
    if s.platform not in EMULATED_PLATFORMS:
        raise SimnetError(source.problem(("platform",), (
            f"{s.platform} scenarios cannot be emulated yet: only "
            f"{', '.join(EMULATED_PLATFORMS)}")))
    return path, scaled(s, **scale) if scale else s, source


def emulate(
    scenario: Annotated[Path | None, typer.Argument(
        help="Scenario file or bundled name; the bundled default scenario when omitted.")] = None,
    reports: Annotated[Path, typer.Option(
        help="Directory for reports/<scenario-name>-emulated/.")] = Path("reports"),
    duration: Annotated[float | None, typer.Option(
        help="Seconds to run (default the scenario's duration_s); later faults are left out.",
        min=1.0)] = None,
    rate_scale: Annotated[float, typer.Option(
        help="Multiply every client's load (open-loop rates, closed-loop users).", min=0.001)] = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only where the report went.")] = False,
) -> None:
    """Emulate a scenario: cells and containers as network namespaces with the derived rules, a
    real Envoy per instance, the twin's apps, routers and load generator (needs root)."""
    from simnet.lenses import derive, emulate_and_report

    path, s, source = _emulable("emulate", scenario, duration_s=duration, rate_scale=rate_scale)
    d = derive(s, source)
    progress = LazyProgress(f"emulating {path.name}")
    try:
        out = emulate_and_report(s, d, reports, progress)
    finally:
        progress.close()
    if not quiet:
        console.print(summary_table(out))
        console.print(instance_table(out))
    console.print(f"report: {reports / f'{s.name}-emulated' / 'report.html'}")


def validate(
    scenario: Annotated[Path | None, typer.Argument(
        help="Scenario file or bundled name; the bundled default scenario when omitted.")] = None,
    reports: Annotated[Path, typer.Option(
        help="Directory for reports/<name>-validation/ and <name>-emulated/.")] = Path("reports"),
    replications: Annotated[int, typer.Option(
        help="Simulated seeds (seed, seed+1, ...) for the simulation's spread.", min=1)] = 3,
    duration: Annotated[float | None, typer.Option(
        help="Seconds to run (default the scenario's duration_s).", min=1.0)] = None,
    rate_scale: Annotated[float, typer.Option(
        help="Multiply every client's load.", min=0.001)] = 1.0,
    hops: Annotated[Path | None, typer.Option(
        help="A `simnet calibrate hops` file: its latency.overhead replaces the scenario's.",
        exists=True, dir_okay=False)] = None,
) -> None:
    """Simulate and emulate a scenario and hold one to the other, metric by metric; exit 1
    when any metric disagrees (needs root)."""
    from rich.table import Table

    from simnet.lenses import derive, validate as validate_pipeline

    path, s, source = _emulable("validate", scenario, duration_s=duration, rate_scale=rate_scale)
    if hops is not None:
        s = s.model_copy(update={"latency": s.latency.model_copy(
            update={"overhead": overhead_of(hops)})})
    d = derive(s, source)
    progress = LazyProgress(f"emulating {path.name}")
    try:
        out = validate_pipeline(s, d, reports, replications=replications, progress=progress)
    finally:
        progress.close()
    t = Table(title=f"simnet validate: {s.name} ({replications} simulated seeds, one emulation)")
    for col in ("metric", "simulated", "seeds", "emulated", "tolerance", "verdict"):
        t.add_column(col, justify="right" if col in ("simulated", "emulated") else "left")
    for c in out.checks:
        t.add_row(c.metric, f"{c.simulated:.2f}", f"{c.simulated_low:.2f}..{c.simulated_high:.2f}",
                  f"{c.emulated:.2f}", c.tolerance,
                  "agrees" if c.agrees else "[bold red]disagrees[/]")
    console.print(t)
    for note in out.notes:
        console.print(f"note: {note}")
    console.print(f"validation: {out.files[0]}")
    if not out.agrees:
        raise typer.Exit(1)


def overhead_of(path: Path):
    """The ``latency.overhead`` block of a calibration file, its problems located."""
    from pydantic import ValidationError

    from simnet.scenario.messages import schema_problems
    from simnet.scenario.schema import HopCalibrationFile
    from simnet.scenario.source import SourceMap, plain, yaml_document

    doc, problems = yaml_document(path.read_text(), str(path))
    source = SourceMap(str(path), doc)
    if problems:
        raise SimnetError(problems)
    try:
        return HopCalibrationFile.model_validate(plain(doc)).latency.overhead
    except ValidationError as e:
        raise SimnetError(list(schema_problems(e, source, HopCalibrationFile))) from None


calibrate_app = typer.Typer(help="Measure this machine's real components for the simulator.",
                            no_args_is_help=True)


@calibrate_app.command("hops")
def calibrate_hops(
    scenario: Annotated[Path | None, typer.Argument(
        help="Scenario file or bundled name; the bundled default scenario when omitted.")] = None,
    duration: Annotated[float, typer.Option(
        help="Seconds to emulate (the first second, a cold start, is left out).",
        min=3.0)] = 6.0,
    rate_scale: Annotated[float, typer.Option(
        help="Multiply every client's load, as the validation it is for will.", min=0.001)] = 1.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the block.")] =
    Path("hops-calibration.yaml"),
) -> None:
    """Emulate the scenario (without its faults) and write the real
    components' processing time as a ``latency.overhead`` block (needs root)."""
    import io

    from ruamel.yaml import YAML

    from simnet.files import write_atomically
    from simnet.lenses import calibrate_hops as measure

    _, s, _ = _emulable("calibrate hops", scenario, rate_scale=rate_scale)
    result = measure(s, duration)
    text = io.StringIO()
    m = result.machine
    text.write(f"# simnet calibrate hops: {s.name}, {duration:g} s emulated on {m['cores']} "
               f"cores, kernel {m['kernel']}, Envoy {m['envoy']}, {m['go']}\n"
               "# round-trip processing per request, less the CPU the simulator already charges:\n")
    for p in result.parts:
        text.write(f"#   {p.name}: p50 {p.p50_ms:.3f} ms, p90 {p.p90_ms:.3f}, p99 {p.p99_ms:.3f} "
                   f"({p.requests} requests; modelled CPU {p.modelled_cpu_ms:.3f} ms)\n")
    YAML().dump({"latency": {"overhead": result.overhead().model_dump()}}, text)
    write_atomically(output, text.getvalue().encode())
    console.print(text.getvalue().rstrip())
    console.print(f"written: {output}")
