"""The `simnet` command: ``app``, the typer application, and ``main``, the console script.

Each command group is a module of this package; here they are put together, in the order
``simnet --help`` lists them. Failure output is :mod:`simnet.cli.output`'s alone.
"""

from __future__ import annotations

import typer

from simnet.cli import (
    analyze,
    bosh,
    conform,
    cpu,
    emulate,
    iptables,
    memory,
    ports,
    reach,
    routes,
    run,
    sweep,
    tls,
)
from simnet.cli.output import SimnetGroup

app = typer.Typer(
    cls=SimnetGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Model the network path of sidecar-proxy platforms and check it against real components.",
)
for command in (run.run, run.compare, run.schema, ports.ports, reach.reach, sweep.sweep,
                emulate.emulate, emulate.validate, conform.conform, analyze.analyze):
    app.command()(command)
for group, name in ((tls.tls_app, "tls"), (memory.memory_app, "memory"), (cpu.cpu_app, "cpu"),
                    (iptables.iptables_app, "iptables"), (routes.routes_app, "routes"),
                    (bosh.bosh_app, "bosh"), (emulate.calibrate_app, "calibrate")):
    app.add_typer(group, name=name)


def main() -> None:
    app(prog_name="simnet")


__all__ = ["app", "main"]
