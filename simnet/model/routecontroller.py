"""cf-k8s-networking's RouteController: Route resources -> Kubernetes Services and Istio
VirtualServices, as plain manifests.

Reproduces ``routecontroller/resourcebuilders`` at cf-k8s-networking 49d6047 (the commit of the
peer fixtures):

- ``ServiceBuilder``: a Service ``s-<destination guid>`` per destination, selector = the
  destination's ``matchLabels``, one port named ``http``; labels app guid, process type and
  route guid; annotation ``cloudfoundry.org/route-fqdn``; owned by its Route.
- ``VirtualServiceBuilder``: one VirtualService ``vs-<sha256 hex of the fqdn>`` per FQDN, in
  FQDN order, owned by every Route on it; gateway ``mesh`` for internal domains, the ingress
  gateway otherwise; routes sorted by URL descending (longest context path first), each a URI
  prefix match when it has a path; per destination the four CF headers and a weight -- as
  given (all or none, summing to 100) or 100/n with the remainder to the first. A Route
  without destinations is left out when others share its FQDN, else routed to the placeholder
  host ``no-destinations`` (Envoy answers 503: no such cluster has endpoints). When every Route
  on an FQDN lacks destinations, ``spec.http`` stays unset (Go's nil slice, omitted in JSON).
- Errors: internal and external (or two namespaces) on one FQDN, weights on some but not all
  destinations, weights not summing to 100. The real controller then fails the whole
  reconcile and writes no VirtualService; here every error is reported, located.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from simnet.scenario.route_schema import DEFAULT_NAMESPACE, RouteResource
from simnet.errors import Error, Loc

MESH_GATEWAY = "mesh"
INGRESS_GATEWAY = "cf-system/istio-ingressgateway"  # cf-for-k8s's one Gateway
EXPECTED_WEIGHT = 100
PLACEHOLDER_HOST = "no-destinations"
ROUTE_API = "networking.cloudfoundry.org/v1alpha1"


@dataclass(frozen=True)
class Translation:
    """What the RouteController keeps in the cluster for a set of Routes."""

    services: tuple[dict, ...]  # sorted by name
    virtual_services: tuple[dict, ...]  # sorted by name


class TranslationError(Error, ValueError):
    """Routes the RouteController refuses: (index of the route in the input, field, message)."""

    def __init__(self, problems: list[tuple[int, Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(m for _, _, m in problems))


def virtual_service_name(fqdn: str) -> str:
    """``VirtualServiceName``: Kubernetes names cannot hold every FQDN character."""
    return "vs-" + hashlib.sha256(fqdn.encode()).hexdigest()


def service_name(destination_guid: str) -> str:
    """``serviceName``: Service names cannot start with a digit."""
    return f"s-{destination_guid}"


def _owner(route: RouteResource) -> dict:
    ref = {"apiVersion": ROUTE_API, "kind": route.kind, "name": route.metadata.name}
    if route.metadata.uid:
        ref["uid"] = route.metadata.uid
    return ref


def _namespace(route: RouteResource, default: str | None) -> str:
    """The Route's namespace; ``default`` (as ``kubectl apply -n``) when it names none."""
    return route.metadata.namespace or default or DEFAULT_NAMESPACE


def services(route: RouteResource, namespace: str | None = None) -> list[dict]:
    """``ServiceBuilder.Build``: one Service per destination of the Route, in its namespace."""
    out = []
    for d in route.spec.destinations:
        out.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": service_name(d.guid), "namespace": _namespace(route, namespace),
                "labels": {"cloudfoundry.org/app_guid": d.app.guid,
                           "cloudfoundry.org/process_type": d.app.process.type,
                           "cloudfoundry.org/route_guid": route.metadata.name},
                "annotations": {"cloudfoundry.org/route-fqdn": route.fqdn},
                "ownerReferences": [_owner(route)],
            },
            "spec": {"selector": dict(d.selector.matchLabels),
                     "ports": [{"port": d.port, "name": "http"}]},
        })
    return out


def _weight_problems(k: int, route: RouteResource) -> list[tuple[int, Loc, str]]:
    """``validateWeights``: all or none of the destinations weighted, summing to 100."""
    dests = route.spec.destinations
    name = route.metadata.name
    for j, d in enumerate(dests):
        if (d.weight is None) != (dests[0].weight is None):
            return [(k, ("spec", "destinations", j, "weight"),
                     f"invalid destinations for route {name}: weights must be set on all or none")]
    if dests[0].weight is not None and sum(d.weight for d in dests) != EXPECTED_WEIGHT:
        return [(k, ("spec", "destinations"),
                 f"invalid destinations for route {name}: weights must sum up to 100 "
                 f"(they sum to {sum(d.weight for d in dests)})")]
    return []


def _weights(route: RouteResource) -> list[int]:
    """The weights as given, or 100/n with the remainder padded onto the first."""
    dests = route.spec.destinations
    if dests[0].weight is not None:
        return [d.weight for d in dests]
    n = len(dests)
    weights = [EXPECTED_WEIGHT // n] * n
    weights[0] += EXPECTED_WEIGHT - n * weights[0]
    return weights


def _http_route(route: RouteResource, alone: bool) -> dict | None:
    if route.spec.destinations:
        labels = route.metadata.labels
        destinations = [
            {"destination": {"host": service_name(d.guid)},
             # in the order Kubernetes serialises a Go map (sorted), as the seed's dump shows
             "headers": {"request": {"set": {
                 "CF-App-Id": d.app.guid,
                 "CF-App-Process-Type": d.app.process.type,
                 "CF-Organization-Id": labels.get("cloudfoundry.org/org_guid", ""),
                 "CF-Space-Id": labels.get("cloudfoundry.org/space_guid", ""),
             }}},
             "weight": w}
            for d, w in zip(route.spec.destinations, _weights(route))]
    elif not alone:
        return None
    else:
        destinations = [{"destination": {"host": PLACEHOLDER_HOST}}]
    http: dict = {}
    if route.spec.path:
        http["match"] = [{"uri": {"prefix": route.spec.path}}]
    http["route"] = destinations
    return http


def translate(routes: Sequence[RouteResource], *, gateway: str = INGRESS_GATEWAY,
              namespace: str | None = None) -> Translation:
    """The Services and VirtualServices for ``routes`` (Routes naming no namespace are in
    ``namespace``, else cf-workloads); raise TranslationError, listing every refused Route, when
    the RouteController would refuse them."""
    ns = [_namespace(r, namespace) for r in routes]
    problems: list[tuple[int, Loc, str]] = []
    by_fqdn: dict[str, list[int]] = {}
    for k, r in enumerate(routes):
        by_fqdn.setdefault(r.fqdn, []).append(k)
        if r.spec.destinations:
            problems += _weight_problems(k, r)
    virtual_services = []
    for fqdn in sorted(by_fqdn):
        members = by_fqdn[fqdn]
        first = routes[members[0]]
        for k in members[1:]:
            r = routes[k]
            if r.spec.domain.internal != first.spec.domain.internal:
                problems.append((k, ("spec", "domain", "internal"), (
                    f"route guid {first.metadata.name} and route guid {r.metadata.name} disagree "
                    "on whether or not the domain is internal")))
            if ns[k] != ns[members[0]]:
                problems.append((k, ("metadata", "namespace"), (
                    f"route guid {first.metadata.name} and route guid {r.metadata.name} share the "
                    "same FQDN but have different namespaces")))
        ordered = sorted(members, key=lambda k: routes[k].spec.url, reverse=True)
        http = [h for k in ordered if (h := _http_route(routes[k], len(members) == 1)) is not None]
        spec = {"hosts": [fqdn],
                "gateways": [MESH_GATEWAY] if first.spec.domain.internal else [gateway]}
        if http:
            spec["http"] = http
        virtual_services.append({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
            "metadata": {"name": virtual_service_name(fqdn), "namespace": ns[members[0]],
                         "labels": {}, "annotations": {"cloudfoundry.org/fqdn": fqdn},
                         "ownerReferences": [_owner(routes[k]) for k in ordered]},
            "spec": spec,
        })
    if problems:
        raise TranslationError(problems)
    svcs = {s["metadata"]["name"]: s for r in routes for s in services(r, namespace)}
    return Translation(tuple(svcs[n] for n in sorted(svcs)),
                       tuple(sorted(virtual_services, key=lambda v: v["metadata"]["name"])))
