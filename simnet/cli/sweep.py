"""`simnet sweep`: run a scenario's sweep, resumable, with a progress bar, then export the
runs and write the comparison report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from simnet.cli.output import err_console
from simnet.errors import Problem, SimnetError

ExecutorKind = Literal["local", "dask"]


def sweep(
    scenario: Annotated[Path, typer.Argument(
        metavar="SWEEP", help="A scenario with a sweep: section (a file or a bundled name), or a "
                              "sweep file naming its scenario.")],
    workers: Annotated[int, typer.Option("--workers", min=1, max=256,
                                         help="Worker processes (local: 1 runs in this process; "
                                              "dask without --scheduler: a LocalCluster of N).")] = 1,
    executor: Annotated[ExecutorKind, typer.Option("--executor", help="Where runs execute.")] = "local",
    scheduler: Annotated[str | None, typer.Option("--scheduler", metavar="ADDR",
                                                  help="A Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                                                       "(its workers need simnet installed).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped sweep: runs "
                                                          "already stored are not redone.")] = False,
    reports: Annotated[Path, typer.Option("--reports", metavar="<path>",
                                          help="Directory for reports/<sweep-name>/.")] = Path("reports"),
) -> None:
    """Run every point of the scenario's sweep (grid, random or Latin hypercube, with
    replications), storing each run in reports/<sweep-name>/sweep.sqlite as it ends; then write
    sweep.csv (and sweep.parquet with pyarrow) and the comparison report sweep.html. Every
    point is checked before anything runs."""
    from simnet import __version__
    from simnet.report.sweep import write_sweep_report
    from simnet.scenario.load import scenario_path
    from simnet.sweep.executors import executor as make_executor
    from simnet.sweep.run import run
    from simnet.sweep.source import checked_points, sweep_source
    from simnet.sweep.store import Store

    s, data, source = sweep_source(scenario_path(scenario))
    pts = checked_points(s, data, source)
    runs_on = make_executor(executor, workers, scheduler)
    out = reports / (s.sweep.name or f"{s.name}-sweep")
    out.mkdir(parents=True, exist_ok=True)
    db = out / "sweep.sqlite"
    if db.exists() and not resume:
        raise SimnetError(Problem(str(db), None, "", "a sweep is stored here already: "
                                  "--resume continues it; remove the file to start over"))
    with Store(db, __version__) as store:
        done = store.finished()
        todo = [p for p in pts if p.key(__version__) not in done]
        failed = 0
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), "{task.fields[failed]} failed", TimeRemainingColumn(),
                      console=err_console, disable=not err_console.is_terminal) as bar:
            task = bar.add_task(f"sweep {out.name}", total=len(pts), completed=len(pts) - len(todo),
                                failed=0)

            def advance(n: int, f: int) -> None:
                nonlocal failed
                failed = f
                bar.update(task, advance=n, failed=f)

            for _ in run(data, todo, store, runs_on, advance):
                pass
        rows = store.rows()
        written = [store.export_csv(out / "sweep.csv"), store.export_parquet(out / "sweep.parquet"),
                   write_sweep_report(s.sweep, s.name, rows, out, len(pts))]
    typer.echo(f"{len(pts)} runs ({len(pts) - len(todo)} already stored, {len(todo)} run now, "
               f"{failed} failed) on {runs_on.workers} {executor} worker"
               f"{'s' if runs_on.workers != 1 else ''}: {db}, "
               + ", ".join(str(p) for p in written if p))
