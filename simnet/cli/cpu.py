"""`simnet cpu calibrate|show`: measure the real Envoy's CPU per request and per new connection,
and print a calibration's figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simnet.cli.output import COMMAND_LINE, console, err_console, not_one_of
from simnet.cli.params import csv
from simnet.errors import Problem, SimnetError
from simnet.model.envoy import LISTENER_KINDS

cpu_app = typer.Typer(no_args_is_help=True,
                      help="Envoy sidecar CPU per request and per TLS handshake: calibrate on the real Envoy, show.")


def packaged_cpu_calibration_path() -> Path:
    """simnet/data/envoy_cpu.json, the CPU calibration simnet ships."""
    import simnet.data

    return Path(simnet.data.__file__).with_name(simnet.data.CPU_CALIBRATION_FILE)


def calibration_plan(kinds: str) -> list[str]:
    """--kinds as a list, checked (with root) before anything is measured; every problem is
    reported at once."""
    import os

    chosen = csv(kinds)
    problems = [Problem(COMMAND_LINE, None, "--kinds", not_one_of(k, LISTENER_KINDS))
                for k in chosen if k not in LISTENER_KINDS]
    if not chosen:
        problems.append(Problem(COMMAND_LINE, None, "--kinds", "give at least one listener kind"))
    elif len(set(chosen)) != len(chosen):
        problems.append(Problem(COMMAND_LINE, None, "--kinds", "a listener kind is given twice"))
    if os.geteuid() != 0:
        problems.append(Problem(COMMAND_LINE, None, "", "calibration needs root: Envoy "
                                "and its load run in a private network namespace"))
    if problems:
        raise SimnetError(problems)
    return chosen


def cpu_calibration_from(path: Path | None):
    """The CPU calibration in ``path`` (the packaged one for None); problems name the file."""
    from simnet.files import read_text
    from simnet.model.cpu import load_cpu_calibration, packaged_cpu_calibration

    if path is None:
        return packaged_cpu_calibration()
    return load_cpu_calibration(read_text(path, "--calibration"), str(path))


def cpu_table(cal) -> Table:
    """A calibration's figures per listener kind (a handshake: what a new connection adds), with
    their repetitions' quartiles and what one worker thread can serve at those costs."""
    where = cal.machine.get("cpu") or cal.machine.get("arch", "")
    t = Table(title=f"Envoy {cal.envoy_version} CPU, calibrated {cal.measured_on}"
                    + (f" on {where} ({cal.machine.get('cores', '?')} cores)" if where else ""))
    for col in ("listener", "µs per request (quartiles)", "µs per handshake (quartiles)",
                "requests/s per worker", "new connections/s per worker"):
        t.add_column(col, justify="right")
    for name, k in cal.kinds.items():
        spread = k.spread()
        req, hs = (f" ({lo:,.0f}-{hi:,.0f})" for lo, hi in spread) if spread else ("", "")
        t.add_row(name, f"{k.per_request_us:,.1f}{req}", f"{k.per_handshake_us:,.0f}{hs}",
                  f"{1 / cal.service_s(name):,.0f}", f"{1 / cal.service_s(name, True):,.0f}")
    return t


@cpu_app.command("show")
def show(
    calibration: Annotated[Path | None, typer.Option(help=
        "A calibration file from `simnet cpu calibrate` (default: the packaged one).")] = None,
) -> None:
    """Print a CPU calibration: Envoy's CPU per request on a reused connection and per new
    connection's handshake, per listener kind."""
    cal = cpu_calibration_from(calibration)
    console.print(cpu_table(cal))
    if cal.method:
        console.print(f"method: {cal.method}", markup=False)


@cpu_app.command("calibrate")
def calibrate(
    kinds: Annotated[str, typer.Option(help="Listener kinds to measure.")] = "tcp,tls,mtls,http1,http2",
    output: Annotated[Path | None, typer.Option("--output", "-o", help=
        "Where to write the calibration (default: the packaged simnet/data/envoy_cpu.json).")] = None,
) -> None:
    """Measure the installed Envoy's CPU per request and per new connection for each listener
    kind, and write the calibration (needs root: Envoy runs in a private network namespace)."""
    chosen = calibration_plan(kinds)
    from simnet.files import write_atomically
    from simnet.real.cpu import MeasurementError, calibrate_cpu
    from simnet.real.envoy import EnvoyError

    target = output or packaged_cpu_calibration_path()
    try:
        cal = calibrate_cpu(chosen, progress=lambda line: console.print(line, markup=False))
    except (MeasurementError, EnvoyError) as e:
        err_console.print(f"calibration failed, {target} left as it was: {e}", markup=False)
        raise typer.Exit(1) from None
    write_atomically(target, (json.dumps(cal.to_json(), indent=1) + "\n").encode("utf-8"))
    console.print(cpu_table(cal))
    console.print(f"written to {target}", markup=False)
