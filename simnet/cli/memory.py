"""`simnet memory estimate|calibrate`: the command line of :mod:`simnet.memory_estimate` and the
real Envoy's calibration run, with their tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from simnet import memory_estimate
from simnet.cli.output import COMMAND_LINE, console, not_one_of
from simnet.cli.params import csv, within
from simnet.errors import Problem, SimnetError
from simnet.memory_estimate import MAX_CONNECTIONS
from simnet.model.envoy import LISTENER_KINDS

memory_app = typer.Typer(no_args_is_help=True,
                         help="Envoy sidecar memory: calibrate on the real Envoy, estimate for planning.")

ListenerKind = Literal[LISTENER_KINDS]  # tcp, tls, mtls, http1, http2


@memory_app.command("estimate")
def estimate(
    connections: Annotated[int, typer.Option(
        callback=within(0, MAX_CONNECTIONS, what="a connection count"),
        help="Peak concurrent connections to one sidecar (N).")],
    listener: Annotated[ListenerKind, typer.Option(
        help="Listener kind: tcp, tls, mtls, http1 or http2.")] = "tls",
    mappings: Annotated[int, typer.Option(callback=within(1, 3000), help=
        "Port mappings (listeners and clusters) in the sidecar.")] = 1,
    margin: Annotated[float, typer.Option(callback=within(0, 10, note=" (a fraction)"), help=
        "Safety margin on the prediction for the recommendation.")] = 0.10,
    calibration: Annotated[Path | None, typer.Option(help=
        "A calibration file from `simnet memory calibrate` (default: the packaged one).")] = None,
    any_envoy: Annotated[bool, typer.Option("--any-envoy-version", help=
        "Use a calibration made for another Envoy version than the installed one.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Predicted Envoy memory at N connections and the additional_memory_allocation_mb to set,
    next to the seed's 10 + 0.03*N rule."""
    result = memory_estimate.estimate(connections, listener, mappings, margin, calibration, any_envoy)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    print_estimate(result)


def print_estimate(r: dict) -> None:
    kept, measured = r["measured_kept_after_close"]["fraction"], r["measured_kept_after_close"]["after_connections"]
    t = Table(title=f"Envoy {r['envoy_version']} sidecar, {r['listener']} listener, "
                    f"{r['connections']:,} connections")
    t.add_column("")
    t.add_column("MB", justify="right")
    t.add_row("predicted Envoy memory (private, high-water)", f"{r['predicted_envoy_mb']:.1f}")
    t.add_row(f"recommended additional_memory_allocation_mb (+{r['margin']:.0%})",
              str(r["recommended_additional_memory_allocation_mb"]))
    t.add_row("seed rule 10 + 0.03*N", str(r["seed_rule_mb"]))
    console.print(t)
    console.print(f"measured: after {measured:,} connections closed, Envoy kept "
                  f"{kept:.0%} of what they took (the model keeps all)")
    if r["extrapolated"]:
        console.print(f"note: beyond the calibrated range (up to {measured:,} connections)")


def calibration_plan(kinds: str, connections: str) -> tuple[list[str], list[int]]:
    """--kinds and --connections as lists, checked (with root) before anything is measured;
    every problem is reported at once."""
    import os

    chosen = csv(kinds)
    problems = [Problem(COMMAND_LINE, None, "--kinds", not_one_of(k, LISTENER_KINDS))
                for k in chosen if k not in LISTENER_KINDS]
    counts = []
    for k, part in enumerate(csv(connections)):
        if not part.isdigit() or int(part) > MAX_CONNECTIONS:
            problems.append(Problem(COMMAND_LINE, None, f"--connections[{k}]",
                                    f"{part!r} is not a connection count"))
        else:
            counts.append(int(part))
    if counts != sorted(set(counts)) or len(counts) < 2:
        problems.append(Problem(COMMAND_LINE, None, "--connections",
                                "give at least two different counts, increasing"))
    if os.geteuid() != 0:
        problems.append(Problem(COMMAND_LINE, None, "", "calibration needs root: Envoy "
                                "and its load run in a private network namespace"))
    if problems:
        raise SimnetError(problems)
    return chosen, counts


@memory_app.command("calibrate")
def calibrate(
    kinds: Annotated[str, typer.Option(help="Listener kinds to measure.")] = "tcp,tls,mtls,http1,http2",
    connections: Annotated[str, typer.Option(help="Connection counts to hold, increasing.")] =
        "0,250,500,1000,2000,4000,6000",
    output: Annotated[Path | None, typer.Option("--output", "-o", help=
        "Where to write the calibration (default: the packaged simnet/data/envoy_memory.json).")] = None,
) -> None:
    """Measure the installed Envoy's memory per listener kind and connection count, and write
    the fitted model (needs root: Envoy runs in a private network namespace)."""
    chosen, counts = calibration_plan(kinds, connections)
    from simnet.real.memory import calibrate as run_calibration

    target = output or memory_estimate.packaged_calibration_path()
    cal = run_calibration(chosen, counts, progress=lambda line: console.print(line, markup=False))
    memory_estimate.write_calibration(cal, target)
    t = Table(title=f"Envoy {cal.envoy_version} memory, calibrated {cal.measured_on}")
    for col in ("listener", "base MB", "KB per connection", "kept after closing all"):
        t.add_column(col, justify="right")
    for name, k in cal.kinds.items():
        t.add_row(name, f"{k.base_mb:.2f}", f"{k.per_connection_kb:.2f}", f"{k.retained_fraction:.0%}")
    console.print(t)
    console.print(f"each further port mapping: {cal.per_mapping_kb:.1f} KB; written to {target}")
