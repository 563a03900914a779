"""`simnet run`, `simnet compare` and `simnet schema`: simulate scenarios through the lenses
and show the summary tables, or print the scenario JSON Schema."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simnet.cli.output import bad_argument, console


class LazyProgress:
    """A progress bar that only appears once a run has taken longer than a second."""

    def __init__(self, label: str):
        self.label, self.start, self.bar, self.task = label, time.monotonic(), None, None

    def __call__(self, fraction: float) -> None:
        if self.bar is None:
            if time.monotonic() - self.start < 1.0 or not console.is_terminal:
                return
            from rich.progress import BarColumn, Progress, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                                "{task.percentage:>3.0f}%", TimeRemainingColumn(),
                                console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=1.0)
        self.bar.update(self.task, completed=fraction)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def summary_table(out) -> Table:
    m = out.metrics
    s = m.summary()
    how = ("emulate", "emulated") if out.emulation is not None else ("run", "simulated")
    t = Table(title=f"simnet {how[0]}: {out.scenario.name} (seed {out.scenario.seed}, "
                    f"{out.scenario.duration_s:g} s {how[1]}, {out.wall_s:.2f} s wall)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    req = s["requests"]
    t.add_row("requests issued", f"{req['issued']:,}")
    t.add_row("completed / in flight at end", f"{req['completed']:,} / {req['in_flight']:,}")
    for status, n in req["outcomes"].items():
        t.add_row(f"  status {status}", f"{n:,}")
    t.add_row("misdelivered (wrong app answered)", f"{req['misdelivered']:,}")
    t.add_row("retries / endpoints pruned", f"{req['retries']:,} / {s['endpoints_pruned']:,}")
    for q in ("p50", "p95", "p99"):
        v = s["latency_ms"][q]
        t.add_row(f"latency {q}", "-" if v is None else f"{v:.2f} ms")
    t.add_row("connections opened", f"{s['connections_opened']:,}")
    t.add_row("TLS handshakes", f"{s['tls_handshakes']:,}")
    return t


def instance_table(out) -> Table:
    t = Table(title="sidecars")
    for col in ("instance", "guid", "cell", "peak conns", "peak Envoy MB", "quota MB", "OOM kills"):
        t.add_column(col, justify="right" if col not in ("instance", "guid") else "left")
    for i in out.metrics.instances:
        t.add_row(f"{i.app}/{i.index}", i.guid[:8], str(i.cell), f"{i.peak_connections:,}",
                  f"{i.peak_memory_mb:.2f}", f"{i.quota_mb:g}", str(i.oom_kills))
    return t


def compare_table(outputs) -> Table:
    t = Table(title="side by side")
    t.add_column("")
    for o in outputs:
        t.add_column(o.scenario.name, justify="right")
    rows = [("completed", lambda s: f"{s['requests']['completed']:,}"),
            ("misdelivered", lambda s: f"{s['requests']['misdelivered']:,}"),
            ("retries", lambda s: f"{s['requests']['retries']:,}"),
            ("endpoints pruned", lambda s: f"{s['endpoints_pruned']:,}")]
    summaries = [o.metrics.summary() for o in outputs]
    for label, cell in rows:
        t.add_row(label, *(cell(s) for s in summaries))
    for code in sorted({c for o in outputs for c in o.metrics.outcomes}):
        t.add_row(f"status {code}", *(f"{o.metrics.outcomes.get(code, 0):,}" for o in outputs))
    return t


def run(
    scenario: Annotated[Path | None, typer.Argument(
        help="Scenario file; the bundled default scenario when omitted.")] = None,
    reports: Annotated[Path, typer.Option(help="Directory for reports/<scenario-name>/.")] = Path("reports"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only where the report went.")] = False,
) -> None:
    """Simulate a scenario and write its report (HTML, summary.json, figures)."""
    from simnet.lenses import run as run_pipeline
    from simnet.scenario.load import bundled, scenario_path

    path = scenario_path(scenario) if scenario is not None else bundled()
    progress = LazyProgress(f"simulating {path.name}")
    try:
        out = run_pipeline(path, reports, progress)
    finally:
        progress.close()
    if not quiet:
        console.print(summary_table(out))
        console.print(instance_table(out))
    report = out.report_files[0].parent if out.report_files else reports
    console.print(f"report: {report / 'report.html'}")


def compare(
    scenarios: Annotated[list[Path], typer.Argument(metavar="SCENARIO...", help=
        "Two or more scenario files (or bundled names) to run and show side by side.")],
    reports: Annotated[Path, typer.Option(help="Directory for the reports.")] = Path("reports"),
) -> None:
    """Run variants of a deployment and write a side-by-side report, reports/<a>-vs-<b>/."""
    from simnet.lenses import compare as compare_pipeline
    from simnet.scenario.load import scenario_path

    if len(scenarios) < 2:
        raise bad_argument("SCENARIO", "give at least two scenarios")
    progress = LazyProgress("simulating variants")
    try:
        outputs, files = compare_pipeline([scenario_path(p) for p in scenarios], reports, progress)
    finally:
        progress.close()
    console.print(compare_table(outputs))
    console.print(f"report: {files[0]}")


def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the scenario JSON Schema (for editor completion and validation)."""
    from simnet.scenario.schema import Scenario

    text = json.dumps(Scenario.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)
