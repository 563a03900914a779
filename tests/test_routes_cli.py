"""`simnet routes translate|diff`: the RouteController's objects for Route files, located
errors for Routes it refuses, and seed 001's "CloudFoundry, Istio and Envoy Config Diffs"
steps diffed layer by layer (Services, VirtualServices, the ingress gateway's Envoy config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from simnet.cli import app
from simnet.errors import SimnetError
from simnet.model.routecontroller import virtual_service_name
from simnet.routes import LAYERS, diff_report, layer_changes, translation

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers" / "cf-k8s-routes"
SEED_STEPS = Path(__file__).resolve().parents[1] / "simnet" / "data" / "routes" / "seed-001"
DOMAIN = "cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
runner = CliRunner()


def _line_of(path: Path, text: str) -> int:
    (n,) = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return n


def test_translate_prints_yaml_manifests():
    result = runner.invoke(app, ["routes", "translate", str(PEERS / "multiple-routes-with-same-fqdn.yaml")])
    assert result.exit_code == 0, result.output
    docs = list(YAML(typ="safe").load_all(result.stdout))
    assert [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("v1", "Service", "s-additional-destination-for-route-1"),
        ("v1", "Service", "s-destination-guid-1"),
        ("v1", "Service", "s-destination-guid-2"),
        ("networking.istio.io/v1alpha3", "VirtualService",
         virtual_service_name("hostname.apps.example.com"))]
    vs = docs[-1]
    assert vs["spec"]["gateways"] == ["cf-system/istio-ingressgateway"]
    assert [h["match"][0]["uri"]["prefix"] for h in vs["spec"]["http"]] == [
        "/some/path", "/some/different/path"]
    assert vs["spec"]["http"][0]["route"][1]["headers"]["request"]["set"]["CF-App-Id"] == "cc-app1-guid"


def test_translate_json_takes_all_files_together_with_gateway_and_namespace():
    result = runner.invoke(app, [
        "routes", "translate", "--json", "--gateway", "cf-test-gateway", "--namespace", "tests",
        str(PEERS / "context-path-route-for-single-fqdn1.yaml"),
        str(PEERS / "context-path-route-for-single-fqdn2.yaml")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [s["metadata"]["name"] for s in out["services"]] == ["s-destination-guid-1",
                                                                 "s-destination-guid-2"]
    (vs,) = out["virtualServices"]
    assert vs["spec"]["gateways"] == ["cf-test-gateway"] and vs["metadata"]["namespace"] == "tests"
    assert [h["match"][0]["uri"]["prefix"] for h in vs["spec"]["http"]] == ["/hello/world", "/hello"]


def test_translate_with_the_gateways_envoy_config():
    result = runner.invoke(app, ["routes", "translate", "--json", "--envoy", str(PEERS / "route.yaml")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["envoy"]["static_resources"]["listeners"][0]["address"]["socket_address"][
        "port_value"] == 8080


@pytest.mark.parametrize("edit, needle, field, message", [
    (("weight: 20", "weight: 30"), "destinations:", "spec.destinations",
     "invalid destinations for route cc-route-guid: weights must sum up to 100"),
    (("- weight: 20 # weights must add to 100\n    port: 9000", "- port: 9000"), "- port: 9000",
     "spec.destinations.1.weight",
     "invalid destinations for route cc-route-guid: weights must be set on all or none"),
])
def test_refused_routes_name_file_line_and_field(tmp_path, edit, needle, field, message):
    bad = tmp_path / "bad.yaml"
    text = (PEERS / "route.yaml").read_text()
    assert edit[0] in text
    bad.write_text(text.replace(*edit))
    with pytest.raises(SimnetError) as e:
        translation([bad])
    (p,) = e.value.problems
    assert (p.file, p.line, p.field) == (str(bad), _line_of(bad, needle), field)
    assert p.message.startswith(message)
    result = runner.invoke(app, ["routes", "translate", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{bad}:{p.line}: {field}: {message}" in result.stderr


def test_internal_and_external_on_one_fqdn_names_the_second_file(tmp_path):
    internal = tmp_path / "internal.yaml"
    internal.write_text((PEERS / "context-path-route-for-single-fqdn2.yaml").read_text()
                        .replace("internal: false", "internal: true"))
    first = PEERS / "context-path-route-for-single-fqdn1.yaml"
    result = runner.invoke(app, ["routes", "translate", str(first), str(internal)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == (
        f"{internal}:{_line_of(internal, 'internal: true')}: spec.domain.internal: route guid "
        "context-path-route-guid-1 and route guid context-path-route-guid-2 disagree on whether "
        "or not the domain is internal\n")


def test_bad_files_exit_2_with_every_problem(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed")
    missing = tmp_path / "missing.yaml"
    result = runner.invoke(app, ["routes", "diff", str(broken), str(PEERS / "route.yaml"), str(missing)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{broken}:1: invalid YAML" in result.stderr and f"{missing}: cannot read" in result.stderr
    result = runner.invoke(app, ["routes", "diff", str(PEERS / "route.yaml")])
    assert result.exit_code == 2 and "needs at least two files" in result.output


def test_diff_of_the_seed_steps_adds_one_route_per_step():
    """Seed 001: push test-app-a, push test-app-b, map an additional route to test-app-b (host
    test-app-b-second, simnet's choice). Each step adds one Service, one VirtualService, one
    gateway cluster and virtual host, and changes nothing that was there."""
    files = sorted(SEED_STEPS.glob("*.yaml"))
    assert [f.name for f in files] == ["0-no-routes.yaml", "1-push-test-app-a.yaml",
                                       "2-push-test-app-b.yaml", "3-map-additional-route.yaml"]
    result = runner.invoke(app, ["routes", "diff", "--json", *map(str, files)])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    assert [(s["from"], s["to"]) for s in steps] == list(zip(map(str, files), map(str, files[1:])))
    hosts = ["test-app-a", "test-app-b", "test-app-b-second"]
    guids = ["7afcae7d-d2ff-4310-9e74-2ec9ca4cca19", "833a86e8-414f-4ac7-882b-6bc0c3c40366",
             "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a05"]
    for step, host, guid in zip(steps, hosts, guids, strict=True):
        fqdn = f"{host}.{DOMAIN}"
        layers = step["layers"]
        assert list(layers) == ["Service", "VirtualService", "Envoy"]
        assert layers["Service"] == {"added": [f"s-{guid}"], "removed": [], "changed": []}
        assert layers["VirtualService"] == {"added": [virtual_service_name(fqdn)], "removed": [],
                                            "changed": []}
        assert layers["Envoy"] == {"added": sorted([
            f"cluster outbound|8080||s-{guid}.cf-workloads.svc.cluster.local",
            f"virtual_host {fqdn}:80"]), "removed": [], "changed": []}


def test_diff_text_shows_added_objects_in_full():
    files = sorted(SEED_STEPS.glob("*.yaml"))[1:3]
    result = runner.invoke(app, ["routes", "diff", *map(str, files)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith(f"== {files[0]} -> {files[1]}\n")
    # the seed's VirtualService for test-app-b, its name and headers as the seed shows them
    assert "+ VirtualService vs-655ad2c2a8644d313a4105e611888b8b9b1762e579a2719e26827f5d9c1887ab\n" in text
    assert "+ Service s-833a86e8-414f-4ac7-882b-6bc0c3c40366\n" in text
    headers = ["CF-App-Id: 673ab4f3-101c-41a6-b1e3-aca13da1dd45", "CF-App-Process-Type: web",
               "CF-Organization-Id: e9aab7d8-298f-4aa7-9a77-46a721a36197",
               "CF-Space-Id: e7bb5fa9-9496-4179-b244-806b268a8c64"]
    positions = [text.index(h) for h in headers]
    assert positions == sorted(positions)  # in the seed's (Kubernetes') order
    assert "\n- " not in text and "\n~ " not in text  # nothing removed or changed


def test_diff_shows_a_changed_object_as_a_unified_diff():
    """integration_test.go "updating the destination port": the Service's port goes 8080 -> 9090,
    the VirtualService stays."""
    files = [PEERS / "single-route-with-single-destination.yaml",
             PEERS / "single-route-with-updated-single-destination.yaml"]
    result = runner.invoke(app, ["routes", "diff", *map(str, files)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "~ Service s-destination-guid-1\n" in text
    assert "--- Service s-destination-guid-1 (before)\n+++ Service s-destination-guid-1 (after)\n" in text
    assert "\n-  - port: 8080\n" in text and "\n+  - port: 9090\n" in text
    assert "  VirtualService: no change\n" in text


def test_layers_hook_takes_another_layer():
    """A third layer is a function from a Translation to named objects, passed as `layers`."""
    files = [PEERS / "context-path-route-for-single-fqdn1.yaml",
             PEERS / "context-path-route-for-single-fqdn2.yaml"]
    before, after = translation(files[:1]), translation(files)

    def prefixes(t):
        return {f"{v['spec']['hosts'][0]}{h['match'][0]['uri']['prefix']}": h
                for v in t.virtual_services for h in v["spec"].get("http", [])}

    layers = {**{k: LAYERS[k] for k in ("Service", "VirtualService")}, "Prefix": prefixes}
    changes = layer_changes(before, after, layers)
    assert list(changes) == ["Service", "VirtualService", "Prefix"]
    assert changes["Prefix"] == {"added": ["hostname.apps.example.com/hello/world"], "removed": [],
                                 "changed": []}
    assert changes["VirtualService"]["changed"] == [virtual_service_name("hostname.apps.example.com")]
    steps, text = diff_report(["a.yaml", "b.yaml"], [before, after], layers)
    assert steps[0]["layers"] == changes
    assert "+ Prefix hostname.apps.example.com/hello/world\n" in text and "Envoy" not in text


def test_help_says_what_is_reproduced():
    for command, words in (("translate", "RouteController"), ("diff", "Config Diffs")):
        result = runner.invoke(app, ["routes", command, "--help"])
        assert result.exit_code == 0 and words in result.stdout
