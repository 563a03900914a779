"""cf-for-k8s: what the ingress gateway routes each host to, derived as the platform derives it.

Cloud Controller writes one Route resource per route (host and path) with a destination per
mapped app; the RouteController turns them into Services and VirtualServices
(``simnet.model.routecontroller``); istiod gives the ingress gateway's Envoy a route per
VirtualService (``simnet.model.ingress``). The simulator follows the gateway's decision for a
request to ``/``: one Service by weight, then a pod of that Service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from simnet.model.ingress import ingress_routes, route_for
from simnet.model.routecontroller import Translation, translate
from simnet.scenario.route_schema import RouteResource
from simnet.scenario.schema import Scenario

ORG_GUID = "cc-org-guid"  # a scenario has one org and space, as the peer fixtures do
SPACE_GUID = "cc-space-guid"
NAMESPACE = "cf-workloads"


@dataclass(frozen=True)
class Destination:
    """One weighted destination of a host's route on the gateway."""

    service: str  # the Kubernetes Service, ``s-<destination guid>``
    app: str
    port: int
    weight: int


def _guid(*parts: object) -> str:
    h = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def app_guid(s: Scenario, app: str) -> str:
    """A stable Cloud Controller app guid for a scenario's app."""
    return _guid(s.seed, "app", app)


def route_resources(s: Scenario, mapped: Iterable[int]) -> list[dict]:
    """The Route resources Cloud Controller writes for the mapped routes (by index into
    ``s.routes``): one per host and path, a destination per mapping, in mapping order."""
    groups: dict[tuple[str, str], dict[tuple[str, int], int]] = {}
    for k in sorted(mapped, key=lambda k: (s.routes[k].at_s, k)):
        r = s.routes[k]  # mapping an app's port again later sets its new weight
        groups.setdefault((r.host, r.path), {})[r.app, r.port] = k
    resources = []
    for (host, path), latest in groups.items():
        members = sorted(latest.values())
        first, _, domain = host.partition(".")
        route_guid = _guid(s.seed, "route", host, path)
        destinations = []
        for k in members:
            r = s.routes[k]
            app = s.app(r.app)
            d = {"guid": _guid(s.seed, "destination", host, path, r.app, r.port), "port": r.port,
                 "app": {"guid": app_guid(s, r.app), "process": {"type": app.process_type}},
                 "selector": {"matchLabels": {"cloudfoundry.org/app_guid": app_guid(s, r.app),
                                              "cloudfoundry.org/process_type": app.process_type}}}
            if r.weight is not None:
                d["weight"] = r.weight
            destinations.append(d)
        resources.append({
            "apiVersion": "networking.cloudfoundry.org/v1alpha1", "kind": "Route",
            "metadata": {"name": route_guid, "namespace": NAMESPACE, "labels": {
                "cloudfoundry.org/org_guid": ORG_GUID, "cloudfoundry.org/space_guid": SPACE_GUID,
                "cloudfoundry.org/route_guid": route_guid}},
            "spec": {"host": first, "path": path, "url": f"{host}{path}",
                     "domain": {"name": domain, "internal": False},
                     "destinations": destinations},
        })
    return resources


def gateway_translation(s: Scenario, mapped: Iterable[int]) -> Translation:
    """The RouteController's Services and VirtualServices for the mapped routes."""
    return translate([RouteResource.model_validate(r) for r in route_resources(s, mapped)])


def gateway_destinations(s: Scenario, mapped: Iterable[int]) -> dict[str, tuple[Destination, ...]]:
    """Per host, the weighted destinations of the gateway's route for a request to ``/``
    (``ingress.route_for``): Route resources -> RouteController -> gateway routes."""
    t = gateway_translation(s, mapped)
    apps = {app_guid(s, a.name): a.name for a in s.apps}
    app_of = {svc["metadata"]["name"]: apps[svc["metadata"]["labels"]["cloudfoundry.org/app_guid"]]
              for svc in t.services}
    out = {}
    for host, routes in ingress_routes(t.virtual_services, t.services).items():
        r = route_for(routes, "/")
        if r is not None:
            out[host] = tuple(Destination(d.service, app_of[d.service], d.port, d.weight)
                              for d in r.destinations if d.service in app_of)
    return out
