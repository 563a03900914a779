"""`simnet routes`: cf-for-k8s Route resources through the RouteController and istiod.

``translate`` shows what the RouteController keeps in the cluster for a set of Routes (and, with
``--envoy``, the ingress gateway's Envoy config istiod derives from it); ``diff`` shows what
each step of a sequence of states changes in every layer -- seed 001's "Config Diffs".
"""

from __future__ import annotations

import difflib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from ruamel.yaml import YAML

from simnet.errors import SimnetError
from simnet.model.ingress import UpstreamTLS, ingress_bootstrap
from simnet.model.routecontroller import INGRESS_GATEWAY, Translation, TranslationError, translate
from simnet.scenario.routes import load_routes

routes_app = typer.Typer(no_args_is_help=True,
                         help="cf-for-k8s Route resources -> Services, VirtualServices, gateway Envoy.")

# The gateway's credentials where Istio mounted them in the seed's days (/etc/certs).
SEED_TLS = UpstreamTLS("/etc/certs/cert-chain.pem", "/etc/certs/key.pem", "/etc/certs/root-cert.pem")

Files = Annotated[list[Path], typer.Argument(metavar="FILE...", help="Route resource YAML files.")]
Gateway = Annotated[str, typer.Option(
    help="The RouteController's ISTIO_GATEWAY_NAME: the Gateway of non-internal VirtualServices.")]
Namespace = Annotated[Optional[str], typer.Option(
    help="Namespace of Routes that name none (as kubectl apply -n); default cf-workloads.")]


def translation(files: Sequence[str | Path], *, gateway: str = INGRESS_GATEWAY,
                namespace: str | None = None) -> Translation:
    """The translation of every Route in ``files`` together (one namespace, as the controller
    lists them); Routes it refuses raise SimnetError naming their file, line and field."""
    located = load_routes(*files)
    try:
        return translate([x.route for x in located], gateway=gateway, namespace=namespace)
    except TranslationError as e:
        raise SimnetError([located[k].problem(loc, message) for k, loc, message in e.problems]) \
            from None


def envoy_config(t: Translation) -> dict:
    """The gateway Envoy's config for a translation; endpoints come from EDS, so none here."""
    return ingress_bootstrap(t.virtual_services, t.services, {}, tls=SEED_TLS)


def _named(items) -> dict[str, dict]:
    return {i["name"]: i for i in items}


def _envoy_objects(t: Translation) -> dict[str, dict]:
    """The Envoy config as named objects: listeners, virtual hosts and clusters."""
    res = envoy_config(t)["static_resources"]
    hcm = res["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    out = {f"cluster {k}": v for k, v in _named(res["clusters"]).items()}
    out.update({f"virtual_host {k}": v
                for k, v in _named(hcm["route_config"]["virtual_hosts"]).items()})
    return out


Layer = Callable[[Translation], dict[str, dict]]

# The hook for `diff`: each layer's name and the function giving its objects by name from a
# translation. Add a layer here (or pass `layers=`) to diff it too.
LAYERS: dict[str, Layer] = {
    "Service": lambda t: {s["metadata"]["name"]: s for s in t.services},
    "VirtualService": lambda t: {v["metadata"]["name"]: v for v in t.virtual_services},
    "Envoy": _envoy_objects,
}


def _yaml(obj) -> str:
    out = io.StringIO()
    y = YAML()
    y.default_flow_style = False
    y.width = 4096  # one line per value, however long a cluster name is
    y.dump(obj, out)
    return out.getvalue()


def layer_changes(before: Translation, after: Translation,
                  layers: Mapping[str, Layer] = LAYERS) -> dict[str, dict[str, list]]:
    """Per layer, the names of objects added, removed and changed between two states."""
    out = {}
    for layer, objects in layers.items():
        old, new = objects(before), objects(after)
        out[layer] = {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
                      "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k])}
    return out


def diff_report(files: Sequence[str | Path], states: Sequence[Translation],
                layers: Mapping[str, Layer] = LAYERS) -> tuple[list[dict], str]:
    """For each consecutive pair of states, per layer the objects added, removed and changed
    (as data) and the text `diff` prints: each added object in full, a unified diff of each
    changed one."""
    steps: list[dict] = []
    lines: list[str] = []
    for (a, ta), (b, tb) in zip(zip(files, states), zip(files[1:], states[1:])):
        changes = layer_changes(ta, tb, layers)
        steps.append({"from": str(a), "to": str(b), "layers": changes})
        lines.append(f"== {a} -> {b}\n")
        for layer, change in changes.items():
            old, new = layers[layer](ta), layers[layer](tb)
            for kind, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
                for name in change[kind]:
                    lines.append(f"{sign} {layer} {name}\n")
                    if kind == "added":
                        lines += [f"    {line}" for line in _yaml(new[name]).splitlines(True)]
            for name in change["changed"]:
                lines += difflib.unified_diff(
                    _yaml(old[name]).splitlines(True), _yaml(new[name]).splitlines(True),
                    f"{layer} {name} (before)", f"{layer} {name} (after)")
            if not any(change.values()):
                lines.append(f"  {layer}: no change\n")
    return steps, "".join(lines)


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
    try:
        t = translation(files, gateway=gateway, namespace=namespace)
    except SimnetError as e:
        _fail(e)
    if as_json:
        out = {"services": list(t.services), "virtualServices": list(t.virtual_services)}
        if envoy:
            out["envoy"] = envoy_config(t)
        typer.echo(json.dumps(out, indent=2))
        return
    docs = [*t.services, *t.virtual_services]
    text = "".join(f"---\n{_yaml(d)}" for d in docs)
    if envoy:
        text += f"---\n# the ingress gateway's Envoy config\n{_yaml(envoy_config(t))}"
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
    if len(files) < 2:
        raise typer.BadParameter("needs at least two files: the states to compare",
                                 param_hint="FILE FILE...")
    states, problems = [], []
    for f in files:  # every file's problems, not just the first file's
        try:
            states.append(translation([f], gateway=gateway, namespace=namespace))
        except SimnetError as e:
            problems += e.problems
    if problems:
        _fail(SimnetError(problems))
    steps, text = diff_report(files, states)
    if as_json:
        typer.echo(json.dumps({"steps": steps}, indent=2))
    else:
        typer.echo(text, nl=False)


def _fail(e: SimnetError) -> None:
    from simnet.cli import _fail as fail

    fail(e)
