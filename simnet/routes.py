"""cf-for-k8s Route files through the RouteController and istiod, and what a change of Routes
changes: the objects of each layer (Services, VirtualServices, the ingress gateway's Envoy
config) added, removed and changed between states -- seed 001's "Config Diffs".
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ruamel.yaml import YAML

from simnet.errors import SimnetError
from simnet.model.ingress import UpstreamTLS, ingress_bootstrap
from simnet.model.routecontroller import (
    INGRESS_GATEWAY,
    Translation,
    TranslationError,
    translate,
)
from simnet.scenario.routes import load_routes

# The gateway's credentials where Istio mounted them in the seed's days (/etc/certs).
SEED_TLS = UpstreamTLS("/etc/certs/cert-chain.pem", "/etc/certs/key.pem", "/etc/certs/root-cert.pem")


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


def to_yaml(obj) -> str:
    """Block-style YAML, one line per value however long (as kubectl shows manifests)."""
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
                        lines += [f"    {line}" for line in to_yaml(new[name]).splitlines(True)]
            for name in change["changed"]:
                lines += difflib.unified_diff(
                    to_yaml(old[name]).splitlines(True), to_yaml(new[name]).splitlines(True),
                    f"{layer} {name} (before)", f"{layer} {name} (after)")
            if not any(change.values()):
                lines.append(f"  {layer}: no change\n")
    return steps, "".join(lines)


def translations(files: Sequence[str | Path], *, gateway: str = INGRESS_GATEWAY,
                 namespace: str | None = None) -> list[Translation]:
    """Each file's translation on its own (each file one state); every file's problems are
    reported, not just the first file's."""
    states, problems = [], []
    for f in files:
        try:
            states.append(translation([f], gateway=gateway, namespace=namespace))
        except SimnetError as e:
            problems += e.problems
    if problems:
        raise SimnetError(problems)
    return states
