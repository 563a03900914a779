"""`simnet bosh`: the BOSH + Istio prototype's Pilot view of a manifest (seed 003)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from simnet.errors import SimnetError
from simnet.model.bosh import exposed_services, pilot_view, vm_bootstrap
from simnet.scenario.bosh_manifest import load_manifest

bosh_app = typer.Typer(no_args_is_help=True,
                       help="BOSH manifests with expose_ports: names, VIPs, Envoy listeners.")


@bosh_app.command("pilot")
def pilot(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="A BOSH manifest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, with the VM's "
                                                         "Envoy bootstrap.")] = False,
) -> None:
    """What the prototype's Pilot adapter gives every VM for this manifest: a
    <job>.<group>.<deployment>.boshy name and VIP per exposed port, the Envoy listener and
    cluster behind it, and the egress rule sending VIP traffic into the VM's Envoy."""
    from simnet.cli import _fail

    try:
        m = load_manifest(manifest)
    except SimnetError as e:
        _fail(e)
    view = pilot_view(m)
    services = exposed_services(m)
    if as_json:
        typer.echo(json.dumps({
            "names": [{"name": s.name, "vip": view.vips[s.name], "port": s.port,
                       "port_name": s.port_name, "instance_group": s.group, "job": s.job}
                      for s in services],
            "clusters": {k: [f"{ip}:{p}" for ip, p in v] for k, v in view.clusters.items()},
            "redirect_rule": view.redirect_rule,
            "envoy": vm_bootstrap(view),
        }, indent=2))
        return
    t = Table(title=f"{m.name}: names the Pilot adapter serves")
    for col in ("name", "VIP:port", "cluster", "instances"):
        t.add_column(col)
    for s, (vip, port, cluster) in zip(services, view.listeners):
        t.add_row(s.name, f"{vip}:{port}", cluster,
                  ", ".join(f"{ip}:{p}" for ip, p in view.clusters[cluster]))
    console = Console()
    console.print(t)
    console.print("egress rule (iptables-restore):")
    console.print(view.redirect_rule, markup=False, highlight=False)
