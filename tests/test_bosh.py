"""The BOSH + Istio prototype's Pilot model (seed 003): manifest -> names, VIPs, listeners,
clusters, redirect rule; the bundled scenario built from the sample manifest."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simnet.cli import app
from simnet.errors import SimnetError
from simnet.model.bosh import exposed_services, pilot_view, scenario_parts, vm_bootstrap
from simnet.pipeline import load_and_derive
from simnet.real.envoy import validate
from simnet.scenario.bosh_manifest import Manifest, load_manifest, load_manifest_text
from simnet.scenario.load import bundled, load_text

SAMPLE = Path(__file__).resolve().parents[1] / "scenarios" / "sample-bosh-manifest.yml"
BANANA = "example-httpbin.banana.sample-deployment.boshy"
APRICOT = "example-httpbin.apricot.sample-deployment.boshy"
runner = CliRunner()


def test_sample_manifest_pilot_view():
    view = pilot_view(load_manifest(SAMPLE))
    assert view.vips == {APRICOT: "169.254.255.1", BANANA: "169.254.255.2"}
    assert view.listeners == (("169.254.255.1", 9001, f"out.{APRICOT}|9001"),
                              ("169.254.255.2", 9002, f"out.{BANANA}|9002"))
    assert view.clusters[f"out.{BANANA}|9002"] == (
        ("198.19.0.6", 9002), ("198.19.0.7", 9002), ("198.19.0.8", 9002))
    assert len(view.clusters[f"out.{APRICOT}|9001"]) == 5
    assert "-A OUTPUT -d 169.254.255.0/24 -p tcp -j BOSHY_VIP" in view.redirect_rule
    assert "REDIRECT --to-ports 15001" in view.redirect_rule


@pytest.mark.envoy
def test_vm_bootstrap_passes_envoy_validate():
    validate(vm_bootstrap(pilot_view(load_manifest(SAMPLE))))


def test_bundled_scenario_takes_apps_and_routes_from_the_manifest():
    s, d = load_and_derive(bundled("bosh-istio"))
    assert {(a.name, a.instances, tuple(a.ports)) for a in s.apps} == {
        ("example-httpbin-banana", 3, (9002,)), ("example-httpbin-apricot", 5, (9001,))}
    assert s.app("example-httpbin-banana").service_time.dist == "lognormal"  # the scenario's
    assert {r.host for r in s.routes} == {BANANA, APRICOT}
    assert len(d.routes[BANANA]) == 3
    assert d.client_paths[BANANA].via_proxy  # the egress rule sends the VIP into Envoy


def test_manifest_and_scenario_must_agree(tmp_path):
    (tmp_path / "m.yml").write_text(SAMPLE.read_text())
    text = bundled("bosh-istio").read_text().replace(
        "bosh_manifest: sample-bosh-manifest.yml", "bosh_manifest: m.yml").replace(
        "  - name: example-httpbin-banana     # instance group banana, job example-httpbin (3 VMs, 9002)\n",
        "  - name: example-httpbin-banana\n    instances: 4\n")
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(SimnetError, match=r"s.yaml:\d+: apps.0.instances: 4 here, but 3 in the manifest"):
        load_text(text, str(f))
    with pytest.raises(SimnetError, match="bosh_manifest: a BOSH manifest needs platform: bosh"):
        load_text(text.replace("platform: bosh", "platform: diego"), str(f))


@pytest.mark.parametrize("change, field", [
    (("instances: 3", "instances: many"), "instance_groups.1.instances"),
    (("      port: 9002\n", "      port: 0\n"), "instance_groups.1.jobs.0.expose_ports.0.port"),
    (("    - name: other-http\n", "    - nam: other-http\n"), "instance_groups.1.jobs.0.expose_ports.0.name"),
])
def test_bad_manifests_name_file_line_and_field(tmp_path, change, field):
    bad = tmp_path / "bad.yml"
    bad.write_text(SAMPLE.read_text().replace(*change))
    result = runner.invoke(app, ["bosh", "pilot", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{bad}:" in result.stderr and f": {field}: " in result.stderr, result.stderr


def test_bosh_pilot_cli_json():
    result = runner.invoke(app, ["bosh", "pilot", "--json", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [n["name"] for n in out["names"]] == [APRICOT, BANANA]
    assert out["envoy"]["static_resources"]["listeners"][0]["address"]["socket_address"][
        "port_value"] == 15001


_names = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@st.composite
def manifests(draw) -> Manifest:
    groups = draw(st.lists(st.tuples(_names, st.integers(0, 6), st.lists(
        st.tuples(_names, st.lists(st.integers(1, 65535), max_size=3, unique=True)),
        max_size=3, unique_by=lambda j: j[0])), min_size=1, max_size=4, unique_by=lambda g: g[0]))
    return Manifest.model_validate({"name": draw(_names), "instance_groups": [
        {"name": g, "instances": n, "jobs": [
            {"name": j, "expose_ports": [{"name": f"p{p}", "port": p} for p in ports]}
            for j, ports in jobs]} for g, n, jobs in groups]})


@settings(max_examples=40)
@given(manifests())
def test_every_name_gets_one_vip_and_a_cluster_of_exactly_its_instances(m):
    view = pilot_view(m)
    services = exposed_services(m)
    names = {s.name for s in services}
    assert set(view.vips) == names
    assert len(set(view.vips.values())) == len(names)
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network("169.254.255.0/24")
               for v in view.vips.values())
    for s in services:
        eps = view.clusters[f"out.{s.name}|{s.port}"]
        assert len(eps) == s.instances and {p for _, p in eps} <= {s.port}
    parts = scenario_parts(m)
    assert sum(len(a["ports"]) for a in parts["apps"]) == len({(s.group, s.job, s.port) for s in services})
    assert {r["host"] for r in parts["routes"]} == names


def test_duplicate_exposed_port_is_an_error():
    text = SAMPLE.read_text().replace("    - name: other-http\n      port: 9002\n",
                                      "    - name: other-http\n      port: 9002\n"
                                      "    - name: again\n      port: 9002\n")
    with pytest.raises(SimnetError, match="expose_ports.1.port: port 9002 is already exposed"):
        load_manifest_text(text, "m.yml")


@settings(max_examples=150)
@given(st.integers(0, len(SAMPLE.read_text())),
       st.text(alphabet=st.sampled_from(list("abc:- \n[]{}0123456789#&*")), max_size=60))
def test_any_manifest_text_gives_a_view_or_located_problems(cut, noise):
    text = SAMPLE.read_text()[:cut] + noise
    try:
        m = load_manifest_text(text, "m.yml")
    except SimnetError as e:
        assert e.problems and all(p.file == "m.yml" for p in e.problems)
        return
    try:
        pilot_view(m)
    except SimnetError as e:  # e.g. more names than VIPs, or a name DNS cannot hold
        assert e.problems
