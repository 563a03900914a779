"""`simnet routes translate|diff`: the command line of :mod:`simnet.routes` -- what the
RouteController keeps in the cluster for Route files (and the gateway Envoy config istiod
derives), and what each step of a sequence of states changes in every layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from simnet.cli.output import bad_argument
from simnet.model.routecontroller import INGRESS_GATEWAY

routes_app = typer.Typer(no_args_is_help=True,
                         help="cf-for-k8s Route resources -> Services, VirtualServices, gateway Envoy.")

Files = Annotated[list[Path], typer.Argument(metavar="FILE...", help="Route resource YAML files.")]
Gateway = Annotated[str, typer.Option(
    help="The RouteController's ISTIO_GATEWAY_NAME: the Gateway of non-internal VirtualServices.")]
Namespace = Annotated[str | None, typer.Option(
    help="Namespace of Routes that name none (as kubectl apply -n); default cf-workloads.")]


@routes_app.command("translate")
def translate_command(
    files: Files,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
    envoy: Annotated[bool, typer.Option(
        "--envoy", help="Also the ingress gateway's Envoy config istiod derives.")] = False,
    gateway: Gateway = INGRESS_GATEWAY,
    namespace: Namespace = None,
) -> None:
    """Reproduce cf-k8s-networking's RouteController (resourcebuilders at 49d6047): the
    Services (s-<destination guid>) and VirtualServices (vs-<sha256 of the FQDN>) it keeps in
    the cluster for all these Routes taken together."""
    from simnet.routes import envoy_config, to_yaml, translation

    t = translation(files, gateway=gateway, namespace=namespace)
    if as_json:
        out = {"services": list(t.services), "virtualServices": list(t.virtual_services)}
        if envoy:
            out["envoy"] = envoy_config(t)
        typer.echo(json.dumps(out, indent=2))
        return
    docs = [*t.services, *t.virtual_services]
    text = "".join(f"---\n{to_yaml(d)}" for d in docs)
    if envoy:
        text += f"---\n# the ingress gateway's Envoy config\n{to_yaml(envoy_config(t))}"
    typer.echo(text, nl=False)


@routes_app.command("diff")
def diff_command(
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE FILE...", help="Route files, each the full set of Routes after one step.")],
    as_json: Annotated[bool, typer.Option("--json", help="Only the names, as JSON.")] = False,
    gateway: Gateway = INGRESS_GATEWAY,
    namespace: Namespace = None,
) -> None:
    """Reproduce seed 001's "CloudFoundry, Istio and Envoy Config Diffs": what each step (each
    FILE the Routes after it) changes in the RouteController's Services and VirtualServices and
    in the ingress gateway's Envoy config -- objects added, removed, changed, with diffs."""
    from simnet.routes import diff_report, translations

    if len(files) < 2:
        raise bad_argument("FILE FILE...", "needs at least two files: the states to compare")
    steps, text = diff_report(files, translations(files, gateway=gateway, namespace=namespace))
    if as_json:
        typer.echo(json.dumps({"steps": steps}, indent=2))
    else:
        typer.echo(text, nl=False)
