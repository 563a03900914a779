"""The BOSH + Istio prototype's Pilot model (seed 003): manifest -> names, VIPs, listeners,
clusters, redirect rule, the VM's Envoy bootstrap; bad manifests as file:line problems; the
bundled scenario built from a sample manifest."""

from __future__ import annotations

import io
import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner

from simnet.cli import app
from simnet.errors import SimnetError
from simnet.model.bosh import (
    Cluster,
    Listener,
    instance_addresses,
    pilot_view,
    round_robin_counts,
    vm_bootstrap,
)
from simnet.lenses import load_and_derive
from simnet.real.envoy import validate
from simnet.scenario.bosh_manifest import (
    load_manifest,
    load_manifest_text,
    sample_manifest_path,
    scenario_parts,
)
from simnet.scenario.bosh_schema import exposed_services
from simnet.scenario.load import bundled, load_text
from tests.fuzzing import FUZZED

SAMPLE = sample_manifest_path()
BANANA = "example-httpbin.banana.sample-deployment.boshy"
APRICOT = "example-httpbin.apricot.sample-deployment.boshy"
runner = CliRunner()


def test_sample_manifest_pilot_view():
    view = pilot_view(load_manifest(SAMPLE))
    assert [(s.name, s.port, s.port_name, s.instances) for s in view.services] == [
        (APRICOT, 9001, "some-port", 5), (BANANA, 9002, "other-http", 3)]
    assert view.vips == {APRICOT: "169.254.255.1", BANANA: "169.254.255.2"}
    assert view.listeners == (
        Listener("tcp_169.254.255.1_9001", "169.254.255.1", 9001, f"out.{APRICOT}|some-port"),
        Listener("tcp_169.254.255.2_9002", "169.254.255.2", 9002, f"out.{BANANA}|other-http"))
    assert view.clusters == (
        Cluster(f"out.{APRICOT}|some-port", APRICOT, 9001,
                tuple((f"198.19.0.{i}", 9001) for i in range(1, 6))),
        Cluster(f"out.{BANANA}|other-http", BANANA, 9002,
                (("198.19.0.6", 9002), ("198.19.0.7", 9002), ("198.19.0.8", 9002))))
    assert view.redirect_rule.splitlines() == [
        "* nat", "-F OUTPUT", "-A OUTPUT -d 169.254.255.0/24 -p tcp -j REDIRECT --to-ports 15001",
        "COMMIT"]


def test_address_plan_is_overridable_and_bounded():
    m = load_manifest(SAMPLE)
    plan = instance_addresses(m, "198.18.2.0/24")
    assert list(plan) == [("apricot", i) for i in range(5)] + [("banana", i) for i in range(3)]
    assert plan["banana", 0] == "198.18.2.6"
    view = pilot_view(m, network="198.18.2.0/24")
    assert view.cluster(f"out.{BANANA}|other-http").endpoints[0] == ("198.18.2.6", 9002)
    mine = {k: f"10.0.0.{n}" for n, k in enumerate(plan, 1)}
    assert pilot_view(m, mine).cluster(f"out.{BANANA}|other-http").endpoints == (
        ("10.0.0.6", 9002), ("10.0.0.7", 9002), ("10.0.0.8", 9002))
    with pytest.raises(SimnetError, match="8 instances but 198.18.2.0/30 has only 2 addresses"):
        instance_addresses(m, "198.18.2.0/30")


def test_round_robin_counts():
    eps = (("a", 1), ("b", 1), ("c", 1))
    assert round_robin_counts(eps, 30) == {ep: 10 for ep in eps}
    assert round_robin_counts(eps, 4, start=2) == {("a", 1): 1, ("b", 1): 1, ("c", 1): 2}
    assert sum(round_robin_counts(eps, 7, start=1).values()) == 7


@pytest.mark.envoy
def test_vm_bootstrap_passes_envoy_validate():
    bootstrap = vm_bootstrap(pilot_view(load_manifest(SAMPLE)), admin_port=0)
    listener = bootstrap["static_resources"]["listeners"][0]
    assert listener["name"] == "virtual"
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 15001}
    assert [c["filter_chain_match"] for c in listener["filter_chains"]] == [
        {"prefix_ranges": [{"address_prefix": "169.254.255.1", "prefix_len": 32}],
         "destination_port": 9001},
        {"prefix_ranges": [{"address_prefix": "169.254.255.2", "prefix_len": 32}],
         "destination_port": 9002}]
    assert [(c["name"], c["type"], c["lb_policy"]) for c in bootstrap["static_resources"]["clusters"]] \
        == [(f"out.{APRICOT}|some-port", "STATIC", "ROUND_ROBIN"),
            (f"out.{BANANA}|other-http", "STATIC", "ROUND_ROBIN")]
    validate(bootstrap)


def test_bundled_scenario_takes_apps_and_routes_from_the_manifest():
    s, d = load_and_derive(bundled("bosh-istio"))
    assert {(a.name, a.instances, tuple(a.ports)) for a in s.apps} == {
        ("example-httpbin-banana", 3, (9002,)), ("example-httpbin-apricot", 5, (9001,))}
    assert s.app("example-httpbin-banana").service_time.dist == "lognormal"  # the scenario's
    assert {r.host for r in s.routes} == {BANANA, APRICOT}
    assert len(d.routes[BANANA]) == 3
    assert d.client_paths[BANANA].via_proxy  # the egress rule sends the VIP into Envoy


def test_scenario_parts_of_the_sample():
    assert scenario_parts(load_manifest(SAMPLE)) == {
        "apps": [{"name": "example-httpbin-apricot", "instances": 5, "ports": [9001]},
                 {"name": "example-httpbin-banana", "instances": 3, "ports": [9002]}],
        "routes": [{"host": APRICOT, "app": "example-httpbin-apricot", "port": 9001},
                   {"host": BANANA, "app": "example-httpbin-banana", "port": 9002}]}


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


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    at = -1
    for _ in range(occurrence):
        at = text.index(needle, at + 1)
    return text.count("\n", 0, at) + 1


BANANA_PORTS = "    - name: other-http\n      number: 9002\n"


@pytest.mark.parametrize("old, new, field, needle, occurrence, message", [
    ("instances: 3", "instances: many", "instance_groups.1.instances", "instances: many", 1,
     "expected"),
    ("      number: 9002\n", "      number: 0\n", "instance_groups.1.jobs.0.expose_ports.0.number",
     "number: 0", 1, "must be at least 1, got 0"),
    ("    - name: other-http\n", "    - nam: other-http\n",
     "instance_groups.1.jobs.0.expose_ports.0.name", "nam: other-http", 1, "required"),
    (BANANA_PORTS, BANANA_PORTS + "    - name: other-http\n      number: 9003\n",
     "instance_groups.1.jobs.0.expose_ports.1.name", "name: other-http", 2, "cluster per port name"),
    (BANANA_PORTS, BANANA_PORTS + "    - name: again\n      number: 9002\n",
     "instance_groups.1.jobs.0.expose_ports.1.number", "number: 9002", 2, "already exposed"),
    ("- name: banana\n", "- name: Banana_VMs\n", "instance_groups.1.name", "Banana_VMs", 1,
     "DNS label"),
    ("- name: banana\n", "- name: apricot\n", "instance_groups.1.name", "- name: apricot", 2,
     "declared twice"),
])
def test_bad_manifests_name_file_line_and_field(tmp_path, old, new, field, needle, occurrence,
                                                message):
    text = SAMPLE.read_text()
    assert old in text
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace(old, new, 1))
    line = _line_of(bad.read_text(), needle, occurrence)
    result = runner.invoke(app, ["bosh", "pilot", str(bad)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{bad}:{line}: {field}: " in result.stderr, result.stderr
    assert message in result.stderr.split(f": {field}: ", 1)[1].splitlines()[0], result.stderr


def test_other_bosh_keys_and_names_are_tolerated():
    text = SAMPLE.read_text().replace("  - name: bpm\n    release: bpm\n\n",
                                      "  - name: route_registrar\n    release: routing\n"
                                      "    consumes: {nats: {from: nats}}\n    custom_provider_definitions: []\n\n", 1)
    text += "variables:\n- name: some_cert\n  type: certificate\naddons: []\nfeatures: {use_dns_addresses: true}\n"
    view = pilot_view(load_manifest_text(text, "m.yml"))
    assert [s.name for s in view.services] == [APRICOT, BANANA]


def test_a_group_without_instances_exposes_nothing():
    m = load_manifest_text(SAMPLE.read_text().replace("instances: 3", "instances: 0"), "m.yml")
    view = pilot_view(m)
    assert list(view.vips) == [APRICOT] and len(view.listeners) == len(view.clusters) == 1


def test_cli_bad_file_and_bad_network(tmp_path):
    missing = runner.invoke(app, ["bosh", "pilot", str(tmp_path / "nope.yml")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    small = runner.invoke(app, ["bosh", "pilot", "--network", "198.18.0.0/30", str(SAMPLE)])
    assert small.exit_code == 2 and "network: 8 instances" in small.stderr, small.stderr
    assert "Traceback" not in small.output


def test_bosh_pilot_cli_json():
    result = runner.invoke(app, ["bosh", "pilot", "--json", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [(n["name"], n["vip"], n["port"]) for n in out["names"]] == [
        (APRICOT, "169.254.255.1", 9001), (BANANA, "169.254.255.2", 9002)]
    assert out["listeners"][1] == {"name": "tcp_169.254.255.2_9002",
                                   "address": "169.254.255.2:9002",
                                   "cluster": f"out.{BANANA}|other-http"}
    assert out["clusters"][1]["endpoints"] == ["198.19.0.6:9002", "198.19.0.7:9002",
                                               "198.19.0.8:9002"]
    assert "REDIRECT --to-ports 15001" in out["redirect_rule"]
    assert out["envoy"]["static_resources"]["listeners"][0]["name"] == "virtual"


def test_bosh_pilot_cli_table():
    result = runner.invoke(app, ["bosh", "pilot", str(SAMPLE)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert BANANA in result.stdout and "tcp_169.254.255.2_9002" in result.stdout
    assert "198.19.0.8:9002" in result.stdout and "-F OUTPUT" in result.stdout


# --- property: generated manifests --------------------------------------------------------------

_labels = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)


@st.composite
def manifest_texts(draw) -> str:
    """A BOSH manifest as YAML text, with extra BOSH keys the adapter ignores."""
    groups = draw(st.lists(st.tuples(_labels, st.integers(0, 6), st.lists(
        st.tuples(_labels, st.lists(st.integers(1, 65535), max_size=3, unique=True)),
        max_size=3, unique_by=lambda j: j[0])), min_size=1, max_size=4, unique_by=lambda g: g[0]))
    doc = {"name": draw(_labels), "releases": [{"name": "r", "version": "latest"}],
           "instance_groups": [
               {"name": g, "instances": n, "azs": ["z1"], "vm_type": "minimal",
                "networks": [{"name": "default"}], "jobs": [
                    {"name": j, "release": "r", "properties": {"port": ports[0] if ports else 80},
                     **({"expose_ports": [{"name": f"p{p}", "number": p} for p in ports]}
                        if ports else {})}
                    for j, ports in jobs]} for g, n, jobs in groups]}
    out = io.StringIO()
    YAML().dump(doc, out)
    return out.getvalue()


@settings(max_examples=60)
@given(manifest_texts())
def test_every_name_gets_one_vip_and_a_cluster_of_exactly_its_instances(text):
    m = load_manifest_text(text, "m.yml")
    plan = instance_addresses(m)
    view = pilot_view(m)
    names = {s.name for s in view.services}
    assert set(view.vips) == names
    assert len(set(view.vips.values())) == len(names)
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network("169.254.255.0/24")
               for v in view.vips.values())
    expected = {(f"{j.name}.{g.name}.{m.name}.boshy", p.number)
                for g in m.instance_groups if g.instances for j in g.jobs for p in j.expose_ports}
    assert {(s.name, s.port) for s in view.services} == expected
    for s in view.services:
        [cluster] = [c for c in view.clusters if c.service == s.name and c.port == s.port]
        assert cluster.endpoints == tuple((plan[s.group, i], s.port) for i in range(s.instances))
        [listener] = [lst for lst in view.listeners
                      if (lst.vip, lst.port) == (view.vips[s.name], s.port)]
        assert listener.cluster == cluster.name
    assert len({(lst.vip, lst.port) for lst in view.listeners}) == len(view.listeners)
    assert len({c.name for c in view.clusters}) == len(view.clusters)
    parts = scenario_parts(m)
    assert {(r["host"], r["port"]) for r in parts["routes"]} == expected
    assert all(a["instances"] > 0 for a in parts["apps"])


@settings(max_examples=150)
@given(st.integers(0, len(SAMPLE.read_text())),
       st.text(alphabet=st.sampled_from(list("abc:- \n[]{}0123456789#&*")), max_size=60))
def test_any_manifest_text_gives_a_view_or_located_problems(cut, noise):
    FUZZED["BOSH manifests"] += 1
    text = SAMPLE.read_text()[:cut] + noise
    try:
        m = load_manifest_text(text, "m.yml")
    except SimnetError as e:
        assert e.problems and all(p.file == "m.yml" and p.line for p in e.problems)
        return
    view = pilot_view(m)  # names that passed the loader always get VIPs
    assert len(view.listeners) == len(exposed_services(m))


def test_sample_is_the_bundled_scenarios_manifest():
    s, _ = load_and_derive(bundled("bosh-istio"))
    assert SAMPLE == bundled("bosh-istio").with_name(s.bosh_manifest)
