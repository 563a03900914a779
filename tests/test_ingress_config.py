"""The ingress gateway's Envoy config (``simnet.model.ingress``) built from hand-written
Service and VirtualService dicts, compared field by field with seed 001's config dump, and
accepted by a real ``envoy --mode validate`` (also for hypothesis-generated VirtualServices)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simnet.model import pki
from simnet.model.ingress import (Destination, UpstreamTLS, ingress_bootstrap, ingress_routes,
                                  route_for)
from simnet.real.envoy import validate
from simnet.real.tls import write_credential

NS = "cf-workloads"
GATEWAY = "cf-system/istio-ingressgateway"
# seed 001, "Push Single App" (test-app-b): the VirtualService, its Service, the headers
SEED_FQDN = "test-app-b.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
SEED_GUID = "833a86e8-414f-4ac7-882b-6bc0c3c40366"
SEED_HEADERS = {"CF-App-Id": "673ab4f3-101c-41a6-b1e3-aca13da1dd45", "CF-App-Process-Type": "web",
                "CF-Organization-Id": "e9aab7d8-298f-4aa7-9a77-46a721a36197",
                "CF-Space-Id": "e7bb5fa9-9496-4179-b244-806b268a8c64"}
SEED_SVC = f"s-{SEED_GUID}.{NS}.svc.cluster.local"
# the seed's retry_policy, as dumped (v2); v3 adds only the predicate's typed_config
SEED_RETRY = {
    "host_selection_retry_max_attempts": "5", "num_retries": 2, "retriable_status_codes": [503],
    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,resource-exhausted,"
                "retriable-status-codes",
}
PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"


def service(guid: str, port: int = 8080, namespace: str = NS) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"s-{guid}", "namespace": namespace},
            "spec": {"selector": {"cloudfoundry.org/app_guid": f"app-{guid}"},
                     "ports": [{"port": port, "name": "http"}]}}


def headers(app: str) -> dict:
    return {"CF-App-Id": app, "CF-App-Process-Type": "web", "CF-Organization-Id": "org-1",
            "CF-Space-Id": "space-1"}


def dest(guid: str, weight: int | None = None, cf: dict | None = None) -> dict:
    d = {"destination": {"host": f"s-{guid}"},
         "headers": {"request": {"set": cf or headers(f"app-{guid}")}, "response": {}}}
    if weight is not None:
        d["weight"] = weight
    return d


def http(*dests: dict, prefix: str | None = None) -> dict:
    h = {"route": list(dests)}
    if prefix is not None:
        h["match"] = [{"uri": {"prefix": prefix}}]
    return h


def virtual_service(fqdn: str, *https: dict, gateways=(GATEWAY,), namespace: str = NS) -> dict:
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
            "metadata": {"name": "vs-" + hashlib.sha256(fqdn.encode()).hexdigest(),
                         "namespace": namespace},
            "spec": {"hosts": [fqdn], "gateways": list(gateways), "http": list(https)}}


def _hcm(boot: dict) -> dict:
    (listener,) = boot["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (f,) = chain["filters"]
    return f["typed_config"]


def _vhosts(boot: dict) -> dict[str, dict]:
    return {v["name"]: v for v in _hcm(boot)["route_config"]["virtual_hosts"]}


def _clusters(boot: dict) -> dict[str, dict]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def _overwrite(cf: dict) -> list[dict]:
    return [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in cf.items()]


TLS_FILES = UpstreamTLS("/etc/certs/cert-chain.pem", "/etc/certs/key.pem", "/etc/certs/root-cert.pem")


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> UpstreamTLS:
    """Real files for ``envoy --mode validate``, which loads the certificates it is given."""
    d = tmp_path_factory.mktemp("gateway-certs")
    now = datetime.now(timezone.utc)
    ca = pki.make_ca("istio-ca", now=now)
    (d / "root-cert.pem").write_bytes(pki.bundle_pem(ca.cert))
    cert, key = write_credential(d, "cert-chain", pki.spiffe_identity(
        ca, "cluster.local", "istio-system", "istio-ingressgateway-service-account", now=now))
    return UpstreamTLS(cert, key, str(d / "root-cert.pem"))


# --- structure ---------------------------------------------------------------------------


def test_one_destination_is_the_seeds_virtual_host_and_route():
    vs = virtual_service(SEED_FQDN, http(dest(SEED_GUID, cf=SEED_HEADERS)))
    assert vs["metadata"]["name"] == \
        "vs-655ad2c2a8644d313a4105e611888b8b9b1762e579a2719e26827f5d9c1887ab"  # the seed's
    boot = ingress_bootstrap([vs], [service(SEED_GUID)], {}, tls=TLS_FILES)
    assert _vhosts(boot) == {f"{SEED_FQDN}:80": {
        "name": f"{SEED_FQDN}:80", "domains": [SEED_FQDN, f"{SEED_FQDN}:80"],
        "routes": [{
            "match": {"prefix": "/"},
            "decorator": {"operation": f"{SEED_SVC}:8080/*"},
            "metadata": {"filter_metadata": {"istio": {"config": (
                f"/apis/networking.istio.io/v1alpha3/namespaces/{NS}/virtual-service/"
                f"{vs['metadata']['name']}")}}},
            "request_headers_to_add": _overwrite(SEED_HEADERS),
            "route": {"cluster": f"outbound|8080||{SEED_SVC}", "timeout": "0s",
                      "retry_policy": {**SEED_RETRY, "retry_host_predicate": [
                          {"name": "envoy.retry_host_predicates.previous_hosts",
                           "typed_config": {"@type": PREVIOUS_HOSTS}}]}},
        }]}}


def test_retry_policy_is_exactly_the_seeds_on_every_route():
    vs = virtual_service("a.example.com", http(dest("x"), prefix="/p"),
                         http(dest("x", 60), dest("y", 40)))
    boot = ingress_bootstrap([vs], [service("x"), service("y")], {}, tls=None)
    (vh,) = _vhosts(boot).values()
    assert len(vh["routes"]) == 2
    for r in vh["routes"]:
        policy = dict(r["route"]["retry_policy"])
        (predicate,) = policy.pop("retry_host_predicate")
        assert policy == {k: v for k, v in SEED_RETRY.items() if k != "retry_host_predicate"}
        assert predicate == {"name": "envoy.retry_host_predicates.previous_hosts",
                             "typed_config": {"@type": PREVIOUS_HOSTS}}
        assert r["route"]["timeout"] == "0s" and "max_grpc_timeout" not in r["route"]


def test_cluster_name_sni_and_san_are_the_seeds():
    endpoints = {f"s-{SEED_GUID}": [("198.18.0.10", 8080), ("198.18.0.11", 8080)]}
    vs = virtual_service(SEED_FQDN, http(dest(SEED_GUID, cf=SEED_HEADERS)))
    boot = ingress_bootstrap([vs], [service(SEED_GUID)], endpoints, tls=TLS_FILES)
    name = f"outbound|8080||{SEED_SVC}"
    assert list(_clusters(boot)) == [name]
    cluster = _clusters(boot)[name]
    assert cluster["type"] == "STATIC" and cluster["connect_timeout"] == "10s"  # istio default
    assert [e["endpoint"]["address"]["socket_address"]
            for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]] == [
        {"address": "198.18.0.10", "port_value": 8080}, {"address": "198.18.0.11", "port_value": 8080}]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["@type"] == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    assert tls["sni"] == f"outbound_.8080_._.{SEED_SVC}"
    assert tls["common_tls_context"] == {
        "alpn_protocols": ["istio"],
        "tls_certificates": [{"certificate_chain": {"filename": "/etc/certs/cert-chain.pem"},
                              "private_key": {"filename": "/etc/certs/key.pem"}}],
        "validation_context": {
            "trusted_ca": {"filename": "/etc/certs/root-cert.pem"},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {
                "exact": "spiffe://cluster.local/ns/cf-workloads/sa/eirini-privileged"}}]}}


def test_service_account_namespace_port_and_plain_upstream_are_parameters():
    other = UpstreamTLS("c", "k", "ca", service_account="app-sa")
    vs = virtual_service("a.example.com", http(dest("g")), namespace="apps")
    boot = ingress_bootstrap([vs], [service("g", port=9090, namespace="apps")], {}, tls=other)
    (cluster,) = _clusters(boot).values()
    assert cluster["name"] == "outbound|9090||s-g.apps.svc.cluster.local"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "outbound_.9090_._.s-g.apps.svc.cluster.local"
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0][
        "matcher"]["exact"] == "spiffe://cluster.local/ns/apps/sa/app-sa"
    plain = ingress_bootstrap([vs], [service("g", port=9090, namespace="apps")], {}, tls=None)
    assert "transport_socket" not in next(iter(_clusters(plain).values()))


def test_listener_and_admin_addresses():
    vs = virtual_service("a.example.com", http(dest("g")))
    boot = ingress_bootstrap([vs], [service("g")], {}, tls=None)
    (listener,) = boot["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}
    boot = ingress_bootstrap([vs], [service("g")], {}, tls=None, admin_port=15000,
                             listen=("127.0.0.1", 18080))
    (listener,) = boot["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    assert [f["name"] for f in _hcm(boot)["http_filters"]] == ["envoy.filters.http.router"]


def test_two_hosts_get_a_virtual_host_each_and_nothing_else_is_served():
    """No ``*`` virtual host: Envoy answers any other Host with 404 (route not found)."""
    vss = [virtual_service("a.example.com", http(dest("a"))),
           virtual_service("b.example.com", http(dest("b"))),
           virtual_service("internal.apps.internal", http(dest("a")), gateways=("mesh",))]
    boot = ingress_bootstrap(vss, [service("a"), service("b")], {}, tls=None)
    vhosts = _vhosts(boot)
    assert sorted(vhosts) == ["a.example.com:80", "b.example.com:80"]
    assert [d for v in vhosts.values() for d in v["domains"]] == [
        "a.example.com", "a.example.com:80", "b.example.com", "b.example.com:80"]
    assert vhosts["b.example.com:80"]["routes"][0]["route"]["cluster"] == \
        f"outbound|8080||s-b.{NS}.svc.cluster.local"
    assert set(ingress_routes(vss, [service("a"), service("b")])) == {"a.example.com", "b.example.com"}


@pytest.mark.parametrize("weights", [[80, 20], [50, 30, 20]])
def test_several_destinations_become_weighted_clusters_with_their_own_headers(weights):
    guids = [f"g{i}" for i in range(len(weights))]
    vs = virtual_service("split.example.com", http(*(dest(g, w) for g, w in zip(guids, weights))))
    boot = ingress_bootstrap([vs], [service(g) for g in guids], {}, tls=None)
    (vh,) = _vhosts(boot).values()
    (r,) = vh["routes"]
    assert "request_headers_to_add" not in r and "cluster" not in r["route"]
    assert r["route"]["weighted_clusters"] == {"clusters": [
        {"name": f"outbound|8080||s-{g}.{NS}.svc.cluster.local", "weight": w,
         "request_headers_to_add": _overwrite(headers(f"app-{g}"))}
        for g, w in zip(guids, weights)]}
    (hostroutes,) = ingress_routes([vs], [service(g) for g in guids]).values()
    assert [(d.service, d.port, d.weight) for d in hostroutes[0].destinations] == [
        (f"s-{g}", 8080, w) for g, w in zip(guids, weights)]


def test_path_routes_keep_the_virtual_services_order():
    """Routes are matched first to last, as the VirtualService lists them (the RouteController
    puts longer paths first): the generator must not reorder them."""
    vs = virtual_service("b.example.com", http(dest("w"), prefix="/hello/world"),
                         http(dest("h"), prefix="/hello"), http(dest("r")))
    services = [service("w"), service("h"), service("r")]
    (vh,) = _vhosts(ingress_bootstrap([vs], services, {}, tls=None)).values()
    assert [(r["match"]["prefix"], r["route"]["cluster"].rsplit("|", 1)[1]) for r in vh["routes"]] == [
        ("/hello/world", f"s-w.{NS}.svc.cluster.local"), ("/hello", f"s-h.{NS}.svc.cluster.local"),
        ("/", f"s-r.{NS}.svc.cluster.local")]
    routes = ingress_routes([vs], services)["b.example.com"]
    assert route_for(routes, "/hello/world/x").destinations[0].service == "s-w"
    assert route_for(routes, "/hello/there").destinations[0].service == "s-h"
    assert route_for(routes, "/").destinations[0].service == "s-r"
    # a catch-all listed first shadows the rest, in Envoy and in the helper alike
    shadowing = virtual_service("b.example.com", http(dest("r")), http(dest("h"), prefix="/hello"))
    (vh,) = _vhosts(ingress_bootstrap([shadowing], services, {}, tls=None)).values()
    assert [r["match"]["prefix"] for r in vh["routes"]] == ["/", "/hello"]
    assert route_for(ingress_routes([shadowing], services)["b.example.com"],
                     "/hello").destinations[0].service == "s-r"


def test_ingress_routes_is_the_gateways_decision():
    vs = virtual_service("a.example.com", http(dest("a", cf=SEED_HEADERS), prefix="/api"),
                         http(dest("a", 70), dest("b", 30)))
    routes = ingress_routes([vs], [service("a"), service("b", port=9000)])
    (api, rest) = routes["a.example.com"]
    assert api.prefix == "/api" and rest.prefix == "/"
    assert api.destinations == (Destination("s-a", 8080, 100, tuple(SEED_HEADERS.items())),)
    assert [(d.service, d.port, d.weight, dict(d.headers)) for d in rest.destinations] == [
        ("s-a", 8080, 70, headers("app-a")), ("s-b", 9000, 30, headers("app-b"))]
    assert api.virtual_service == vs["metadata"]["name"] and api.namespace == NS
    assert route_for(routes["a.example.com"], "/ap") is rest


# --- the real Envoy accepts it ----------------------------------------------------------------


SETS = {
    "seed": ([virtual_service(SEED_FQDN, http(dest(SEED_GUID, cf=SEED_HEADERS)))], [service(SEED_GUID)]),
    "weighted": ([virtual_service("s.example.com", http(dest("a", 50), dest("b", 30), dest("c", 20)))],
                 [service("a"), service("b"), service("c")]),
    "paths-and-mesh": ([virtual_service("p.example.com", http(dest("a"), prefix="/x/y"),
                                        http(dest("b", 80), dest("a", 20), prefix="/x"), http(dest("c"))),
                        virtual_service("m.apps.internal", http(dest("a")), gateways=("mesh",))],
                       [service("a"), service("b", port=9090), service("c")]),
}


@pytest.mark.envoy
@pytest.mark.parametrize("name", sorted(SETS))
def test_envoy_validates(credentials, name):
    vss, services = SETS[name]
    endpoints = {s["metadata"]["name"]: [("198.18.0.10", s["spec"]["ports"][0]["port"])] for s in services}
    validate(ingress_bootstrap(vss, services, endpoints, tls=credentials, admin_port=0))
    validate(ingress_bootstrap(vss, services, {}, tls=None))


_label = st.builds(str.__add__, st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
                   st.text("abcdefghijklmnopqrstuvwxyz0123456789", max_size=11))
_segment = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=8)
_prefix = st.lists(_segment, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))


@st.composite
def _weights(draw, n: int) -> list[int | None]:
    """RouteController's weights: none for one destination, n positive ones summing to 100."""
    if n == 1:
        return [None]
    cuts = sorted(draw(st.lists(st.integers(1, 99), min_size=n - 1, max_size=n - 1, unique=True)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, 100])]


@st.composite
def _gateway_objects(draw):
    guids = draw(st.lists(_label, min_size=1, max_size=4, unique=True))
    services = [service(g, port=draw(st.sampled_from([8080, 9000, 3000]))) for g in guids]
    vss = []
    for host in draw(st.lists(_label, min_size=1, max_size=3, unique=True)):
        prefixes = draw(st.lists(_prefix, max_size=3, unique=True))
        routes = []
        for p in [*sorted(prefixes, key=len, reverse=True), None]:
            chosen = draw(st.lists(st.sampled_from(guids), min_size=1, max_size=3, unique=True))
            routes.append(http(*(dest(g, w) for g, w in zip(chosen, draw(_weights(len(chosen))))),
                               prefix=p))
        vss.append(virtual_service(f"{host}.apps.example.com", *routes,
                                   gateways=draw(st.sampled_from([(GATEWAY,), ("mesh",)]))))
    return vss, services


@pytest.mark.envoy
@settings(max_examples=10, deadline=None)
@given(_gateway_objects())
def test_envoy_validates_generated_virtual_services(credentials, objects):
    vss, services = objects
    endpoints = {s["metadata"]["name"]: [("198.18.0.20", s["spec"]["ports"][0]["port"])] for s in services}
    boot = ingress_bootstrap(vss, services, endpoints, tls=credentials)
    served = [vs for vs in vss if vs["spec"]["gateways"] != ["mesh"]]
    assert sorted(_vhosts(boot)) == sorted(f"{vs['spec']['hosts'][0]}:80" for vs in served)
    routes = ingress_routes(vss, services)
    for vs in served:
        host = vs["spec"]["hosts"][0]
        vh = _vhosts(boot)[f"{host}:80"]
        assert [r["match"]["prefix"] for r in vh["routes"]] == [r.prefix for r in routes[host]] == [
            (h.get("match") or [{}])[0].get("uri", {}).get("prefix", "/") for h in vs["spec"]["http"]]
    validate(boot)
