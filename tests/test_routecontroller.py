"""The RouteController model against cf-k8s-networking's own fixtures and tests (at 49d6047:
routecontroller/integration/integration_test.go, resourcebuilders/*_builder_test.go), and the
ingress gateway config istiod derives from it (checked by a real `envoy --mode validate`)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simnet.errors import SimnetError
from simnet.model import pki
from simnet.model.ingress import (
    RETRY_ON,
    UpstreamTLS,
    ingress_bootstrap,
    ingress_routes,
)
from simnet.model.routecontroller import (
    PLACEHOLDER_HOST,
    TranslationError,
    translate,
    virtual_service_name,
)
from simnet.real.envoy import validate
from simnet.real.tls import write_credential
from simnet.scenario.route_schema import RouteResource
from simnet.scenario.routes import load_routes, load_routes_text
from tests.fuzzing import FUZZED

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "cf-k8s-routes"
SEED_STEPS = Path(__file__).resolve().parents[1] / "simnet" / "data" / "routes" / "seed-001"
FIXTURES = sorted(PEERS.glob("*.yaml"))


def _translate(*files: Path):
    return translate([x.route for x in load_routes(*files)])


def _http(t, fqdn="hostname.apps.example.com"):
    (vs,) = [v for v in t.virtual_services if v["spec"]["hosts"] == [fqdn]]
    return vs["spec"]["http"]


def test_every_peer_fixture_loads_and_translates():
    assert len(FIXTURES) == 10
    for f in FIXTURES:
        t = _translate(f)
        routes = [x.route for x in load_routes(f)]
        assert {s["metadata"]["name"] for s in t.services} == \
            {f"s-{d.guid}" for r in routes for d in r.spec.destinations}
        assert {v["metadata"]["name"] for v in t.virtual_services} == \
            {virtual_service_name(r.fqdn) for r in routes}

# What routecontroller/integration/integration_test.go expects of each fixture once the real
# controller reconciled it in a kind cluster: per VirtualService host, (prefix, destination
# hosts) per http route; per Service, its port. route.yaml is not in that test: its entry is
# derived from the builder. route-without-any-destination.yaml: the integration test says
# "does not create a virtualservice", but checks it with Eventually(...).Should(HaveLen(0)),
# which passes before the first reconcile; the builder (and its test "when a route has no
# destinations") gives the placeholder VirtualService, as for single-route-with-no-destination.
HOST = "hostname.apps.example.com"
EXPECTED = {
    "route.yaml": ({HOST: [("/some/path", ["s-destination-guid-1", "s-destination-guid-2"])]},
                   {"s-destination-guid-1": 8080, "s-destination-guid-2": 9000}),
    "route-without-any-destination.yaml": ({HOST: [("/some/path", ["no-destinations"])]}, {}),
    "single-route-with-no-destination.yaml": ({HOST: [("/some/path", ["no-destinations"])]}, {}),
    "single-route-with-single-destination.yaml": (
        {HOST: [("/some/path", ["s-destination-guid-1"])]}, {"s-destination-guid-1": 8080}),
    "single-route-with-updated-single-destination.yaml": (
        {HOST: [("/some/path", ["s-destination-guid-1"])]}, {"s-destination-guid-1": 9090}),
    "single-route-with-multiple-destinations.yaml": (
        {HOST: [("/some/path", ["s-destination-guid-1", "s-destination-guid-2"])]},
        {"s-destination-guid-1": 8080, "s-destination-guid-2": 9000}),
    "multiple-routes-with-same-fqdn.yaml": (
        {HOST: [("/some/path", ["s-destination-guid-1", "s-additional-destination-for-route-1"]),
                ("/some/different/path", ["s-destination-guid-2"])]},
        {"s-destination-guid-1": 8080, "s-additional-destination-for-route-1": 9090,
         "s-destination-guid-2": 8080}),
    "multiple-routes-with-different-fqdn.yaml": (
        {"hostname-1.apps.example.com": [("/some/path", ["s-destination-guid-1"])],
         "hostname-2.apps.example.com": [("/some/different/path", ["s-destination-guid-2"])]},
        {"s-destination-guid-1": 8080, "s-destination-guid-2": 8080}),
    "context-path-route-for-single-fqdn1.yaml": (
        {HOST: [("/hello", ["s-destination-guid-1"])]}, {"s-destination-guid-1": 8080}),
    "context-path-route-for-single-fqdn2.yaml": (
        {HOST: [("/hello/world", ["s-destination-guid-2"])]}, {"s-destination-guid-2": 8080}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_peer_fixture_translates_as_the_integration_test_expects(name):
    assert sorted(f.name for f in FIXTURES) == sorted(EXPECTED)
    vss, svcs = EXPECTED[name]
    t = _translate(PEERS / name)
    assert {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in t.services} == svcs
    got = {v["spec"]["hosts"][0]: [(h["match"][0]["uri"]["prefix"],
                                    [d["destination"]["host"] for d in h["route"]])
                                   for h in v["spec"]["http"]] for v in t.virtual_services}
    assert got == vss
    for v in t.virtual_services:
        assert v["metadata"]["name"] == virtual_service_name(v["spec"]["hosts"][0])
        assert v["spec"]["gateways"] == ["cf-system/istio-ingressgateway"]
        assert v["metadata"]["namespace"] == "cf-workloads"  # the fixtures name none


def test_integration_context_paths_in_succession():
    """integration_test.go "Route resources are created in succession for the same FQDN"."""
    t = _translate(PEERS / "context-path-route-for-single-fqdn1.yaml",
                   PEERS / "context-path-route-for-single-fqdn2.yaml")
    (vs,) = t.virtual_services
    assert [(h["match"][0]["uri"]["prefix"], h["route"][0]["destination"]["host"])
            for h in vs["spec"]["http"]] == [("/hello/world", "s-destination-guid-2"),
                                             ("/hello", "s-destination-guid-1")]


def _go_route(name, host, path, domain, dests, *, internal=False, namespace="workload-namespace"):
    """virtual_service_builder_test.go's constructRoute: space/org labels, uid <name>-k8s-uid,
    process type process-type-1, a selector on app guid and process type."""
    return RouteResource.model_validate({
        "apiVersion": "networking.cloudfoundry.org/v1alpha1", "kind": "Route",
        "metadata": {"name": name, "namespace": namespace, "uid": f"{name}-k8s-uid",
                     "labels": {"cloudfoundry.org/space_guid": "space-guid-0",
                                "cloudfoundry.org/org_guid": "org-guid-0"}},
        "spec": {"host": host, "path": path, "url": f"{host}.{domain}{path}",
                 "domain": {"name": domain, "internal": internal},
                 "destinations": [
                     {"guid": g, "port": port, "weight": w,
                      "app": {"guid": app, "process": {"type": "process-type-1"}},
                      "selector": {"matchLabels": {"cloudfoundry.org/app_guid": app,
                                                   "cloudfoundry.org/process_type": "process-type-1"}}}
                     for g, port, w, app in dests]}})


def _go_vs(fqdn, owners, https, gateways=("cf-system/istio-ingressgateway",)):
    """virtual_service_builder_test.go's constructVirtualService."""
    spec = {"hosts": [fqdn], "gateways": list(gateways)}
    if https:
        spec["http"] = https
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
            "metadata": {"name": virtual_service_name(fqdn), "namespace": "workload-namespace",
                         "labels": {}, "annotations": {"cloudfoundry.org/fqdn": fqdn},
                         "ownerReferences": [
                             {"apiVersion": "networking.cloudfoundry.org/v1alpha1", "kind": "Route",
                              "name": o, "uid": f"{o}-k8s-uid"} for o in owners]},
            "spec": spec}


def _go_dest(service, app, weight):
    return {"destination": {"host": service}, "weight": weight,
            "headers": {"request": {"set": {"CF-App-Id": app, "CF-App-Process-Type": "process-type-1",
                                            "CF-Space-Id": "space-guid-0",
                                            "CF-Organization-Id": "org-guid-0"}}}}


def test_builder_test_a_virtual_service_per_fqdn():
    """virtual_service_builder_test.go "returns a VirtualService resource for each route
    destination", and service_builder_test.go "returns a Service resource for each route
    destination", object for object."""
    routes = [_go_route("route-guid-0", "test0", "/path0", "domain0.example.com",
                        [("route-0-destination-guid-0", 9000, 91, "app-guid-0"),
                         ("route-0-destination-guid-1", 9001, 9, "app-guid-1")]),
              _go_route("route-guid-1", "test1", "", "domain1.example.com",
                        [("route-1-destination-guid-0", 8080, 100, "app-guid-1")])]
    t = translate(routes)
    assert list(t.virtual_services) == sorted([
        _go_vs("test0.domain0.example.com", ["route-guid-0"], [
            {"match": [{"uri": {"prefix": "/path0"}}],
             "route": [_go_dest("s-route-0-destination-guid-0", "app-guid-0", 91),
                       _go_dest("s-route-0-destination-guid-1", "app-guid-1", 9)]}]),
        _go_vs("test1.domain1.example.com", ["route-guid-1"], [
            {"route": [_go_dest("s-route-1-destination-guid-0", "app-guid-1", 100)]}]),
    ], key=lambda v: v["metadata"]["name"])
    svc = next(s for s in t.services if s["metadata"]["name"] == "s-route-0-destination-guid-1")
    assert svc == {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s-route-0-destination-guid-1", "namespace": "workload-namespace",
                     "labels": {"cloudfoundry.org/route_guid": "route-guid-0",
                                "cloudfoundry.org/app_guid": "app-guid-1",
                                "cloudfoundry.org/process_type": "process-type-1"},
                     "annotations": {"cloudfoundry.org/route-fqdn": "test0.domain0.example.com"},
                     "ownerReferences": [{"apiVersion": "networking.cloudfoundry.org/v1alpha1",
                                          "kind": "Route", "name": "route-guid-0",
                                          "uid": "route-guid-0-k8s-uid"}]},
        "spec": {"selector": {"cloudfoundry.org/app_guid": "app-guid-1",
                              "cloudfoundry.org/process_type": "process-type-1"},
                 "ports": [{"port": 9001, "name": "http"}]}}


def test_builder_test_longest_prefix_first_on_the_mesh():
    """virtual_service_builder_test.go "when two routes have the same fqdn" / "orders the paths
    by longest matching prefix": owners in the same order as the http routes."""
    routes = [_go_route("route-guid-0", "test0", "/path0", "domain0.example.com",
                        [("route-0-destination-guid-0", 9000, 100, "app-guid-0")], internal=True),
              _go_route("route-guid-1", "test0", "/path0/deeper", "domain0.example.com",
                        [("route-1-destination-guid-0", 8080, 100, "app-guid-1")], internal=True)]
    assert list(translate(routes).virtual_services) == [
        _go_vs("test0.domain0.example.com", ["route-guid-1", "route-guid-0"], [
            {"match": [{"uri": {"prefix": "/path0/deeper"}}],
             "route": [_go_dest("s-route-1-destination-guid-0", "app-guid-1", 100)]},
            {"match": [{"uri": {"prefix": "/path0"}}],
             "route": [_go_dest("s-route-0-destination-guid-0", "app-guid-0", 100)]}],
            gateways=["mesh"])]


def test_builder_test_placeholder_for_a_route_without_destinations():
    """virtual_service_builder_test.go "creates a virtual services with a placeholder
    destination" (no headers, no weight); "and one of the routes has no destinations": beside a
    routed one it is left out, though it still owns the VirtualService (the Go appends its
    owner reference before `continue`)."""
    alone = [_go_route("route-guid-0", "test0", "/path0", "domain0.example.com", [])]
    assert list(translate(alone).virtual_services) == [_go_vs(
        "test0.domain0.example.com", ["route-guid-0"],
        [{"match": [{"uri": {"prefix": "/path0"}}], "route": [{"destination": {"host": "no-destinations"}}]}])]
    assert translate(alone).services == ()
    beside = [_go_route("route-guid-0", "test0", "/path0", "domain0.example.com",
                        [("route-0-destination-guid-0", 9000, 100, "app-guid-0")]),
              _go_route("route-guid-1", "test0", "/path0/deeper", "domain0.example.com", [])]
    (vs,) = translate(beside).virtual_services
    assert [h["match"][0]["uri"]["prefix"] for h in vs["spec"]["http"]] == ["/path0"]
    assert [o["name"] for o in vs["metadata"]["ownerReferences"]] == ["route-guid-1", "route-guid-0"]


def test_only_routes_without_destinations_on_an_fqdn_leave_http_unset():
    """Two destination-less Routes on one FQDN: each is skipped, Go's Http stays nil (omitted)."""
    (vs,) = translate([_go_route("a", "t", "/x", "d.example.com", []),
                       _go_route("b", "t", "/y", "d.example.com", [])]).virtual_services
    assert "http" not in vs["spec"] and vs["spec"]["hosts"] == ["t.d.example.com"]


def test_namespaces():
    """A Route's own namespace wins; `namespace=` is for Routes naming none (kubectl apply -n);
    two namespaces on one FQDN is the builder test's "different namespaces" error."""
    fixture = [x.route for x in load_routes(PEERS / "route.yaml")]
    t = translate(fixture, namespace="cf-k8s-networking-tests")
    assert {o["metadata"]["namespace"] for o in (*t.services, *t.virtual_services)} == {
        "cf-k8s-networking-tests"}
    r = _go_route("route-guid-0", "test0", "/p", "d.example.com",
                  [("g", 8080, None, "a")], namespace="ns-a")
    t = translate([r], namespace="ignored")
    assert t.services[0]["metadata"]["namespace"] == t.virtual_services[0]["metadata"]["namespace"] == "ns-a"
    other = _go_route("route-guid-1", "test0", "/q", "d.example.com", [], namespace="ns-b")
    with pytest.raises(TranslationError, match="route guid route-guid-0 and route guid route-guid-1 "
                                               "share the same FQDN but have different namespaces"):
        translate([r, other])


def test_gateway_is_a_parameter():
    t = translate([_route("r", "h", [None])], gateway="cf-test-gateway")
    assert t.virtual_services[0]["spec"]["gateways"] == ["cf-test-gateway"]



def test_route_fixture_weights_headers_and_services():
    """route.yaml: two destinations weighted 80/20 (the fixture's own comment: weights must
    add to 100), each with its Service and its CF headers."""
    t = _translate(PEERS / "route.yaml")
    s1, s2 = t.services
    assert s1["metadata"]["name"] == "s-destination-guid-1" and s1["spec"]["ports"] == [
        {"port": 8080, "name": "http"}]
    assert s2["spec"]["selector"] == {"cloudfoundry.org/app_guid": "cc-app1-guid",
                                      "cloudfoundry.org/process_type": "other-web"}
    assert s2["metadata"]["labels"] == {"cloudfoundry.org/app_guid": "cc-app2-guid",
                                        "cloudfoundry.org/process_type": "other-web",
                                        "cloudfoundry.org/route_guid": "cc-route-guid"}
    assert s2["metadata"]["annotations"] == {"cloudfoundry.org/route-fqdn": "hostname.apps.example.com"}
    (vs,) = t.virtual_services
    assert vs["metadata"]["name"] == "vs-" + hashlib.sha256(b"hostname.apps.example.com").hexdigest()
    assert vs["spec"]["gateways"] == ["cf-system/istio-ingressgateway"]
    (http,) = vs["spec"]["http"]
    assert http["match"] == [{"uri": {"prefix": "/some/path"}}]
    assert [d["weight"] for d in http["route"]] == [80, 20]
    assert http["route"][1]["headers"]["request"]["set"] == {
        "CF-App-Id": "cc-app2-guid", "CF-App-Process-Type": "other-web",
        "CF-Space-Id": "cc-space-guid", "CF-Organization-Id": "cc-org-guid"}


def test_routes_on_one_fqdn_share_a_virtual_service_longest_url_first():
    t = _translate(PEERS / "multiple-routes-with-same-fqdn.yaml")
    assert len(t.services) == 3 and len(t.virtual_services) == 1
    http = _http(t)
    assert [h["match"][0]["uri"]["prefix"] for h in http] == ["/some/path", "/some/different/path"]
    assert [d["weight"] for d in http[0]["route"]] == [50, 50]
    t = _translate(PEERS / "context-path-route-for-single-fqdn1.yaml",
                   PEERS / "context-path-route-for-single-fqdn2.yaml")
    assert [h["match"][0]["uri"]["prefix"] for h in _http(t)] == ["/hello/world", "/hello"]
    assert [o["name"] for o in t.virtual_services[0]["metadata"]["ownerReferences"]] == [
        "context-path-route-guid-2", "context-path-route-guid-1"]


def test_routes_without_destinations():
    """Alone on its FQDN: the placeholder host `no-destinations`; beside other routes: left out."""
    for name in ("route-without-any-destination.yaml", "single-route-with-no-destination.yaml"):
        t = _translate(PEERS / name)
        assert t.services == ()
        (http,) = _http(t)
        assert http["route"] == [{"destination": {"host": PLACEHOLDER_HOST}}]
    t = _translate(PEERS / "context-path-route-for-single-fqdn1.yaml",
                   PEERS / "route-without-any-destination.yaml")
    assert [h["match"][0]["uri"]["prefix"] for h in _http(t)] == ["/hello"]


def test_updated_destination_changes_the_service_port():
    before = _translate(PEERS / "single-route-with-single-destination.yaml")
    after = _translate(PEERS / "single-route-with-updated-single-destination.yaml")
    assert before.services[0]["spec"]["ports"][0]["port"] == 8080
    assert after.services[0]["spec"]["ports"][0]["port"] == 9090
    assert before.virtual_services == after.virtual_services


def _route(name, fqdn_host, dests, *, internal=False, path="", domain="apps.example.com"):
    return RouteResource.model_validate({
        "apiVersion": "networking.cloudfoundry.org/v1alpha1", "kind": "Route",
        "metadata": {"name": name, "labels": {}},
        "spec": {"host": fqdn_host, "path": path, "url": f"{fqdn_host}.{domain}{path}",
                 "domain": {"name": domain, "internal": internal},
                 "destinations": [{"guid": f"{name}-{i}", "port": 8080, "weight": w,
                                   "app": {"guid": f"app-{i}", "process": {"type": "web"}}}
                                  for i, w in enumerate(dests)]}})


@pytest.mark.parametrize("n, weights", [(1, [100]), (3, [34, 33, 33]), (6, [20, 16, 16, 16, 16, 16]),
                                        (4, [25, 25, 25, 25])])
def test_unweighted_destinations_split_100_over_n_remainder_first(n, weights):
    t = translate([_route("r", "h", [None] * n)])
    assert [d["weight"] for d in t.virtual_services[0]["spec"]["http"][0]["route"]] == weights


def test_internal_domains_use_the_mesh_gateway_and_the_gateway_skips_them():
    t = translate([_route("r", "h", [None], internal=True, domain="apps.internal")])
    assert t.virtual_services[0]["spec"]["gateways"] == ["mesh"]
    assert ingress_routes(t.virtual_services, t.services) == {}


def test_a_host_of_its_own_domain():
    r = _route("r", "", [None])
    assert r.fqdn == "apps.example.com"


@pytest.mark.parametrize("routes, message", [
    ([_route("r", "h", [60, 30])], "invalid destinations for route r: weights must sum up to 100"),
    ([_route("r", "h", [60, None])], "weights must be set on all or none"),
    ([_route("r", "h", [None]), _route("q", "h", [None], internal=True, path="/x")],
     "route guid r and route guid q disagree on whether or not the domain is internal"),
])
def test_refused_routes(routes, message):
    with pytest.raises(TranslationError, match=message):
        translate(routes)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["", "/x", "/x/y"]),
                          st.one_of(st.integers(1, 6).map(lambda n: [None] * n),
                                    st.lists(st.integers(1, 99), min_size=1, max_size=4)
                                    .filter(lambda w: sum(w) < 100).map(lambda w: [*w, 100 - sum(w)]))),
                min_size=1, max_size=6, unique_by=lambda r: (r[0], r[1])))
def test_translation_properties(spec):
    routes = [_route(f"r{k}", host, dests, path=path) for k, (host, path, dests) in enumerate(spec)]
    t = translate(routes)
    guids = [d.guid for r in routes for d in r.spec.destinations]
    assert [s["metadata"]["name"] for s in t.services] == sorted(f"s-{g}" for g in set(guids))
    for vs in t.virtual_services:
        (fqdn,) = vs["spec"]["hosts"]
        assert vs["metadata"]["name"] == "vs-" + hashlib.sha256(fqdn.encode()).hexdigest()
        prefixes = [h.get("match", [{}])[0].get("uri", {}).get("prefix", "") for h in vs["spec"]["http"]]
        assert prefixes == sorted(prefixes, reverse=True)  # longest URL first
        for h in vs["spec"]["http"]:
            assert sum(d["weight"] for d in h["route"]) == 100


def test_seed_virtual_service_name_is_the_seeds():
    """Seed 001 shows test-app-b's VirtualService as vs-655ad2c2...: our name for its FQDN."""
    t = _translate(SEED_STEPS / "2-push-test-app-b.yaml")
    names = {v["spec"]["hosts"][0]: v["metadata"]["name"] for v in t.virtual_services}
    assert names["test-app-b.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"] == \
        "vs-655ad2c2a8644d313a4105e611888b8b9b1762e579a2719e26827f5d9c1887ab"


def test_bad_route_files_name_file_line_and_field(tmp_path):
    good = (PEERS / "route.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.replace("port: 9000", "port: ninety"))
    with pytest.raises(SimnetError) as e:
        load_routes(bad)
    (p,) = e.value.problems
    assert p.file == str(bad) and p.field == "spec.destinations.1.port"
    assert good.splitlines()[p.line - 1].strip() == "port: 9000"


# --- the gateway's Envoy config ------------------------------------------------------------


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    d = tmp_path_factory.mktemp("gw")
    now = datetime.now(UTC)
    ca = pki.make_ca("istio-ca", now=now)
    (d / "ca.pem").write_bytes(pki.bundle_pem(ca.cert))
    cert, key = write_credential(d, "gw", pki.spiffe_identity(ca, "cluster.local", "istio-system",
                                                              "gw", now=now))
    return UpstreamTLS(cert, key, str(d / "ca.pem"))


def test_gateway_route_is_the_seeds(credentials):
    t = _translate(SEED_STEPS / "2-push-test-app-b.yaml")
    boot = ingress_bootstrap(t.virtual_services, t.services, {}, tls=credentials)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    vh = next(v for v in hcm["route_config"]["virtual_hosts"] if "test-app-b" in v["name"])
    fqdn = "test-app-b.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
    assert vh["name"] == f"{fqdn}:80" and vh["domains"] == [fqdn, f"{fqdn}:80"]
    (r,) = vh["routes"]
    svc = "s-833a86e8-414f-4ac7-882b-6bc0c3c40366.cf-workloads.svc.cluster.local"
    assert r["route"]["cluster"] == f"outbound|8080||{svc}"
    assert r["decorator"]["operation"] == f"{svc}:8080/*"
    assert r["metadata"]["filter_metadata"]["istio"]["config"].endswith(
        "virtual-service/vs-655ad2c2a8644d313a4105e611888b8b9b1762e579a2719e26827f5d9c1887ab")
    policy = r["route"]["retry_policy"]
    assert policy["num_retries"] == 2 and policy["retriable_status_codes"] == [503]
    assert policy["retry_on"] == RETRY_ON == ("connect-failure,refused-stream,unavailable,"
                                              "cancelled,resource-exhausted,retriable-status-codes")
    assert policy["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert policy["host_selection_retry_max_attempts"] == "5"
    assert [h["header"]["key"] for h in r["request_headers_to_add"]] == [
        "CF-App-Id", "CF-App-Process-Type", "CF-Organization-Id", "CF-Space-Id"]
    cluster = next(c for c in boot["static_resources"]["clusters"] if svc in c["name"])
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == f"outbound_.8080_._.{svc}"
    assert tls["common_tls_context"]["alpn_protocols"] == ["istio"]
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/cf-workloads/sa/eirini-privileged"}}]


@pytest.mark.envoy
def test_envoy_accepts_the_gateway_config_for_every_fixture(credentials):
    t = _translate(*FIXTURES[:1], PEERS / "multiple-routes-with-different-fqdn.yaml",
                   PEERS / "route-without-any-destination.yaml", *sorted(SEED_STEPS.glob("3-*")))
    endpoints = {s["metadata"]["name"]: [("198.18.0.10", 8080), ("198.18.0.11", 8080)]
                 for s in t.services}
    validate(ingress_bootstrap(t.virtual_services, t.services, endpoints, tls=credentials))
    for f in FIXTURES:
        t = _translate(f)
        validate(ingress_bootstrap(t.virtual_services, t.services, {}, tls=None))


_yamlish = st.text(alphabet=st.sampled_from(list("abcdefgh:- \n[]{}\"'0123456789#&*!|>%@,.")),
                   max_size=120)


@settings(max_examples=150)
@given(st.one_of(_yamlish, st.sampled_from([f.read_text() for f in FIXTURES]).flatmap(
    lambda text: st.tuples(st.integers(0, len(text)), _yamlish).map(
        lambda cut: text[:cut[0]] + cut[1]))))
def test_any_route_text_gives_routes_or_located_problems(text):
    """Fuzz: any text (arbitrary, or a fixture cut short and continued with noise) loads, or
    fails with the project's own located problems -- never another exception."""
    FUZZED["Route YAML"] += 1
    try:
        routes = load_routes_text(text, "f.yaml")
    except SimnetError as e:
        assert e.problems and all(p.file == "f.yaml" for p in e.problems)
        return
    try:
        translate([x.route for x in routes])
    except TranslationError as e:
        assert all(0 <= k < len(routes) for k, _, _ in e.problems)
