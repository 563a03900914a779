"""`simnet reach`: who can open a connection to an app's ports and what the connection needs,
as one matrix per app, every path into one app or port, or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simnet.cli.output import bad_argument, console
from simnet.errors import SimnetError


def reach_target(value: str, deployment) -> tuple[str, int | None]:
    """``--to APP[/PORT]`` checked against the derived deployment: the app must exist and run,
    the port must be one of its sockets (app, sidecar, Envoy listener or admin port)."""
    from simnet.model.reachability import reachability, representatives

    def bad(message: str) -> SimnetError:
        return bad_argument("--to", message)

    name, slash, port_text = value.partition("/")
    apps = [a.name for a in deployment.scenario.apps]
    if name not in apps:
        raise bad(f"no app {name!r} in {deployment.scenario.name} (its apps: {', '.join(apps)})")
    if not slash:
        return name, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad(f"{port_text!r} is not a port number 1-65535 (write APP/PORT, e.g. {name}/8080)")
    guids = [g for g in representatives(deployment) if deployment.instance(g).app == name]
    if not guids:
        raise bad(f"app {name!r} has no running instance")
    known = reachability(deployment, app=name, guids=guids).ports
    if not any(p.target.port == int(port_text) for p in known):
        listing = ", ".join(f"{p.target.port} ({p.target.label})" for p in known)
        raise bad(f"app {name!r} has no port {port_text} (its ports: {listing})")
    return name, int(port_text)


def matrix_tables(matrix) -> list[Table]:
    """One table per app: its sockets down, the sources across, the easiest way in."""
    from simnet.model.reachability import SOURCES

    tables: dict[str, Table] = {}
    for r in matrix.rows:
        t = tables.get(r.app)
        if t is None:
            t = tables[r.app] = Table(title=f"{r.app} (instance 0): who can open a connection, "
                                            "with what")
            t.add_column("port", justify="right")
            t.add_column("socket", overflow="fold")
            for s in SOURCES:
                t.add_column(s, overflow="fold")
        socket = r.label[: -len(str(r.port))].strip() if r.label.endswith(str(r.port)) else r.label
        t.add_row(str(r.port), socket, *(c.text() for c in r.cells))
    return list(tables.values())


def print_paths(pr) -> None:
    """Every path into one socket: the source, the hops by name, what the connection needs."""
    t = pr.target
    console.print(f"[bold]{t.app}/{t.index} {t.label}[/bold] (listens on "
                  f"{t.address[0]}:{t.address[1]})")
    for a in sorted(pr.access, key=lambda a: bool(a.needs.grants)):
        console.print(f"  {a.source:<8} {a.name}", markup=False, soft_wrap=True)
        line = f"dial {a.address[0]}:{a.address[1]}; " if a.address else ""
        line += a.needs.text()
        if a.met_by_router is not None and a.needs.client_cert:
            line += f"; the router's certificate {'passes' if a.met_by_router else 'does not pass'}"
        console.print(f"           {line}", markup=False, soft_wrap=True)


def reach(
    scenario: Annotated[Path, typer.Argument(help="Scenario file, or the name of a bundled scenario.")],
    to: Annotated[str | None, typer.Option("--to", metavar="APP[/PORT]", help=
        "Only this app (every port of it), or one port: an app, sidecar, Envoy listener or "
        "admin port.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=
        "Machine-readable: every path of every running instance.")] = False,
) -> None:
    """Who can open a connection to an app's ports (external client, router, another
    container, the container itself), and what each connection needs (TLS, client cert, SAN)."""
    from simnet.model.reachability import reach_matrix, reachability, representatives
    from simnet.lenses import load_and_derive
    from simnet.scenario.load import scenario_path

    _, deployment = load_and_derive(scenario_path(scenario))
    name, port = reach_target(to, deployment) if to is not None else (None, None)
    if as_json:
        answer = reachability(deployment, app=name, port=port)
        sys.stdout.write(json.dumps(answer.to_json(), indent=2) + "\n")
        return
    if name is None:
        matrix = reach_matrix(deployment)
        for table in matrix_tables(matrix):
            console.print(table)
        limits = matrix.limits
    else:
        answer = reachability(deployment, app=name, port=port, guids=representatives(deployment))
        for pr in answer.ports:
            print_paths(pr)
        limits = answer.limits
        running = sum(1 for g in deployment.running if deployment.instance(g).app == name)
        if running > 1:
            console.print(f"{name}'s {running} instances are configured alike; instance 0 is "
                          "shown, --json lists every instance.", markup=False)
    for line in limits:
        console.print(f"note: {line}", markup=False)
