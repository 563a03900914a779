"""`simnet sweep`: run a scenario's sweep, resumable, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from simnet.errors import Problem, SimnetError


def sweep(
    scenario: Annotated[Path, typer.Argument(metavar="SCENARIO", help="A scenario with a sweep: section.")],
    workers: Annotated[int, typer.Option("--workers", min=1, max=256,
                                         help="Worker processes (1: run in this process).")] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped sweep: runs "
                                                          "already stored are not redone.")] = False,
    reports: Annotated[Path, typer.Option("--reports", metavar="<path>",
                                          help="Directory for reports/<scenario-name>/.")] = Path("reports"),
) -> None:
    """Run every point of the scenario's sweep (grid, random or Latin hypercube, with
    replications), storing each run in reports/<name>/sweep.sqlite as it ends, then export
    sweep.csv. Every point is checked before anything runs."""
    from simnet import __version__
    from simnet.cli import _fail
    from simnet.sweep.run import checked_points, run_local, sweep_source
    from simnet.sweep.store import Store

    try:
        s, data, source = sweep_source(scenario)
        pts = checked_points(s, data, source)
    except SimnetError as e:
        _fail(e)
    out = reports / s.name
    out.mkdir(parents=True, exist_ok=True)
    db = out / "sweep.sqlite"
    if db.exists() and not resume:
        _fail(SimnetError(Problem(str(db), None, "", "a sweep is stored here already: "
                                  "--resume continues it; remove the file to start over")))
    console = Console(stderr=True)
    with Store(db, __version__) as store:
        done = store.finished()
        todo = [p for p in pts if p.key(__version__) not in done]
        failed = 0
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), "{task.fields[failed]} failed", TimeRemainingColumn(),
                      console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"sweep {s.name}", total=len(pts), completed=len(pts) - len(todo),
                                failed=0)

            def advance(n: int, f: int) -> None:
                nonlocal failed
                failed = f
                bar.update(task, advance=n, failed=f)

            for _ in run_local(data, todo, store, workers, advance):
                pass
        csv = store.export_csv(out / "sweep.csv")
    typer.echo(f"{len(pts)} runs ({len(pts) - len(todo)} already stored, {len(todo)} run now, "
               f"{failed} failed): {db}, {csv}")
