"""The RouteController model against cf-k8s-networking's own fixtures and rules, and the
ingress gateway config istiod derives from it (checked by a real `envoy --mode validate`)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simnet.cli import app
from simnet.errors import SimnetError
from simnet.model import pki
from simnet.model.ingress import RETRY_ON, UpstreamTLS, ingress_bootstrap, ingress_routes
from simnet.model.routecontroller import (PLACEHOLDER_HOST, TranslationError, translate,
                                          virtual_service_name)
from simnet.real.envoy import validate
from simnet.real.tls import write_credential
from simnet.scenario.routes import RouteResource, load_routes, load_routes_text
from tests.fuzzing import FUZZED

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "cf-k8s-routes"
SEED_STEPS = Path(__file__).resolve().parents[1] / "simnet" / "data" / "routes" / "seed-001"
FIXTURES = sorted(PEERS.glob("*.yaml"))
runner = CliRunner()


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
    bad.write_text(good.replace("weight: 20", "weight: 30"))
    result = runner.invoke(app, ["routes", "translate", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{bad}:" in result.stderr and "spec.destinations: invalid destinations for route " \
        "cc-route-guid: weights must sum up to 100" in result.stderr
    bad.write_text("spec: [unclosed")
    result = runner.invoke(app, ["routes", "translate", str(bad)])
    assert result.exit_code == 2 and f"{bad}:1: invalid YAML" in result.stderr


def test_routes_translate_cli_json():
    result = runner.invoke(app, ["routes", "translate", "--json", "--envoy", str(PEERS / "route.yaml")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [s["metadata"]["name"] for s in out["services"]] == ["s-destination-guid-1",
                                                                 "s-destination-guid-2"]
    assert out["envoy"]["static_resources"]["listeners"][0]["address"]["socket_address"][
        "port_value"] == 8080


def test_routes_diff_shows_the_seed_steps():
    """Seed 001's three steps: each adds one Service, one VirtualService, one gateway cluster
    and one virtual host, and changes nothing that was there."""
    files = sorted(SEED_STEPS.glob("*.yaml"))
    assert len(files) == 4
    result = runner.invoke(app, ["routes", "diff", "--json", *map(str, files)])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    hosts = ["test-app-a", "test-app-b", "test-app-b-second"]
    guids = ["7afcae7d-d2ff-4310-9e74-2ec9ca4cca19", "833a86e8-414f-4ac7-882b-6bc0c3c40366",
             "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a05"]
    for step, host, guid in zip(steps, hosts, guids):
        fqdn = f"{host}.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
        layers = step["layers"]
        assert layers["Service"] == {"added": [f"s-{guid}"], "removed": [], "changed": []}
        assert layers["VirtualService"]["added"] == [virtual_service_name(fqdn)]
        assert layers["Envoy"] == {"added": sorted([
            f"cluster outbound|8080||s-{guid}.cf-workloads.svc.cluster.local",
            f"virtual_host {fqdn}:80"]), "removed": [], "changed": []}
    text = runner.invoke(app, ["routes", "diff", *map(str, files)]).stdout
    assert "+ VirtualService vs-655ad2c2" in text and "CF-App-Id: 673ab4f3-101c-41a6-b1e3-aca13da1dd45" in text


# --- the gateway's Envoy config ------------------------------------------------------------


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    d = tmp_path_factory.mktemp("gw")
    now = datetime.now(timezone.utc)
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
