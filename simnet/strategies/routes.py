"""Hypothesis strategies for cf-for-k8s Route resources (``networking.cloudfoundry.org``).

Drawn as the RouteController sees them: a host and optional path on a shared or internal
domain, destinations with guids, ports and (all or none) weights summing to 100, so every
drawn list translates; ``weights_sum_to_100=False`` draws lists the controller must refuse.
"""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from simnet.scenario.route_schema import RouteResource

DOMAINS = (("apps.example.com", False), ("apps.internal", True))
HOSTS = ("test-app-a", "test-app-b", "api", "")
PATHS = ("", "/hello", "/hello/world", "/v2")


def _guid(draw) -> str:
    return str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))


def _weights(draw, n: int, sums: bool) -> list[int | None]:
    if sums and not draw(st.booleans()):
        return [None] * n
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100])]
    if not sums:
        weights[0] += draw(st.integers(1, 50))
    return weights


@st.composite
def route_resources(draw, *, max_destinations: int = 3, weights_sum_to_100: bool = True
                    ) -> RouteResource:
    """One Route: host, path, domain and 0..``max_destinations`` destinations."""
    domain, internal = draw(st.sampled_from(DOMAINS))
    host, path = draw(st.sampled_from(HOSTS)), draw(st.sampled_from(PATHS))
    n = draw(st.integers(0 if weights_sum_to_100 else 1, max_destinations))
    weights = _weights(draw, n, weights_sum_to_100) if n else []
    destinations = []
    for w in weights:
        app = _guid(draw)
        d = {"guid": _guid(draw), "port": draw(st.sampled_from([8080, 9000, 3000])),
             "app": {"guid": app, "process": {"type": "web"}},
             "selector": {"matchLabels": {"cloudfoundry.org/app_guid": app,
                                          "cloudfoundry.org/process_type": "web"}}}
        if w is not None:
            d["weight"] = w
        destinations.append(d)
    name = _guid(draw)
    url = ".".join(p for p in (host, domain) if p) + path
    return RouteResource.model_validate({
        "apiVersion": "networking.cloudfoundry.org/v1alpha1", "kind": "Route",
        "metadata": {"name": name, "namespace": "cf-workloads",
                     "labels": {"cloudfoundry.org/route_guid": name}},
        "spec": {"host": host, "path": path, "url": url,
                 "domain": {"name": domain, "internal": internal},
                 "destinations": destinations}})


def route_sets(max_routes: int = 4) -> st.SearchStrategy[list[RouteResource]]:
    """Routes with distinct names whose FQDNs are each only internal or only external, as the
    controller requires."""
    return st.lists(route_resources(), max_size=max_routes,
                    unique_by=lambda r: r.metadata.name).filter(_one_domain_kind_per_fqdn)


def _one_domain_kind_per_fqdn(routes: list[RouteResource]) -> bool:
    kinds: dict[str, set[bool]] = {}
    for r in routes:
        kinds.setdefault(r.fqdn, set()).add(r.spec.domain.internal)
    return all(len(k) == 1 for k in kinds.values())
