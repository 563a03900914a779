"""`simnet bosh pilot`: the BOSH + Istio prototype's Pilot view of a manifest (seed 003) -- the
names, VIPs, Envoy listeners and clusters every VM gets, as tables or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simnet.cli.output import console
from simnet.model.bosh import INSTANCE_NETWORK

bosh_app = typer.Typer(no_args_is_help=True,
                       help="BOSH manifests with expose_ports: names, VIPs, Envoy listeners.")


@bosh_app.command("pilot")
def pilot(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="A BOSH manifest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, with the VM's "
                                                         "Envoy bootstrap.")] = False,
    network: Annotated[str, typer.Option(help="Where the instances' addresses come from, "
                                              "in manifest order.")] = INSTANCE_NETWORK,
) -> None:
    """What the prototype's Pilot adapter gives every VM for this manifest: a
    <job>.<group>.<deployment>.boshy name and VIP per exposed job, an Envoy listener per
    VIP:port, a cluster per name and port with the instances behind it, and the egress rule
    sending VIP traffic into the VM's Envoy."""
    from simnet.model.bosh import pilot_view
    from simnet.scenario.bosh_manifest import load_manifest

    view = pilot_view(load_manifest(manifest), network=network)
    if as_json:
        typer.echo(json.dumps(view_json(view), indent=2))
        return
    names, routes = view_tables(view)
    console.print(names)
    console.print(routes)
    console.print("egress rule (iptables-restore):")
    console.print(view.redirect_rule, markup=False, highlight=False, end="")


def view_json(view) -> dict:
    """The Pilot view as ``--json`` prints it, with the VM's Envoy bootstrap."""
    from simnet.model.bosh import vm_bootstrap

    return {
        "names": [{"name": s.name, "vip": view.vips[s.name], "port": s.port,
                   "port_name": s.port_name, "instance_group": s.group, "job": s.job,
                   "instances": s.instances} for s in view.services],
        "listeners": [{"name": lst.name, "address": f"{lst.vip}:{lst.port}",
                       "cluster": lst.cluster} for lst in view.listeners],
        "clusters": [{"name": c.name, "endpoints": [f"{ip}:{p}" for ip, p in c.endpoints]}
                     for c in view.clusters],
        "redirect_rule": view.redirect_rule,
        "envoy": vm_bootstrap(view),
    }


def view_tables(view) -> tuple[Table, Table]:
    """The names the VIP agent resolves, and each VM's Envoy listeners and clusters."""
    names = Table(title="names the VIP agent resolves")
    for col in ("name", "VIP", "instance group / job", "port (name)"):
        names.add_column(col, overflow="fold")
    for s in view.services:
        names.add_row(s.name, view.vips[s.name], f"{s.group} / {s.job}",
                      f"{s.port} ({s.port_name})")
    routes = Table(title="Envoy on every VM: listener -> cluster -> endpoints (round robin)")
    for col in ("listener", "VIP:port", "cluster", "endpoints"):
        routes.add_column(col, overflow="fold")
    for lst, c in zip(view.listeners, view.clusters):
        routes.add_row(lst.name, f"{lst.vip}:{lst.port}", c.name,
                       ", ".join(f"{ip}:{p}" for ip, p in c.endpoints))
    return names, routes
