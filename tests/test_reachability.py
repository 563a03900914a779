"""The reachability graph: who can open a connection to which socket, and with what.

Expected values come from other derived artefacts (host ports, Garden's NetIn rules, the derived
listeners and routes, the backend TLS verdict) or from the platform's documented behaviour
(seed 002: mTLS plus no unproxied mappings leaves only authenticated clients; seed 004: sidecar
ports are container-local), never from the graph itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet.model.capture import diego_netin_rules
from simnet.model.deployment import derive
from simnet.model.netfilter import load
from simnet.model.reachability import (
    ASG, C2C_POLICY, SOURCES, Client, deployment_graph, reach_matrix, reachability,
    representatives, sidecar_ports,
)
from simnet.scenario.load import bundled, load_scenario
from simnet.scenario.schema import Scenario

ROUTER_SAN = "gorouter.service.cf.internal"
CAS = ("router-backends", "other-ca")
OUTSIDE = ("external", "router", "peer")


# --- generated deployments ---------------------------------------------------------------


@st.composite
def settings(draw, *, mtls=None, unproxied=None, enabled=None, platform="diego"):
    """A small valid scenario with drawn proxy, mTLS and router settings, apps with sidecars."""
    enabled = draw(st.booleans()) if enabled is None else enabled
    unproxied = (draw(st.booleans()) if enabled else True) if unproxied is None else unproxied
    mtls = draw(st.booleans()) if mtls is None else mtls
    trusted = draw(st.lists(st.sampled_from(CAS), min_size=1, max_size=2, unique=True))
    sans = draw(st.sampled_from([[], [ROUTER_SAN], ["someone.else"], [ROUTER_SAN, "x.internal"]]))
    client_cert = draw(st.one_of(st.none(), st.builds(
        lambda ca, san: {"ca": ca, "san": san}, st.sampled_from(CAS),
        st.sampled_from([ROUTER_SAN, "someone.else"]))))
    apps = []
    for a in range(draw(st.integers(1, 3))):
        ports = draw(st.lists(st.sampled_from([8080, 9999, 2222, 3000, 61001]), min_size=1,
                              max_size=3, unique=True))
        sidecars = []
        for k in range(draw(st.integers(0, 2))):
            sc_ports = draw(st.lists(st.sampled_from([8082, 7000, 9000 + k]), max_size=2, unique=True))
            sidecars.append({"name": f"sc{k}", "ports": [p for p in sc_ports if p not in ports],
                             "process_types": draw(st.sampled_from([["web"], ["worker"], ["web", "worker"]]))})
        # a port two sidecars share is refused by the loader: keep the first owner's
        seen: set[int] = set()
        for sc in sidecars:
            sc["ports"] = [p for p in sc["ports"] if not (p in seen or seen.add(p))]
        apps.append({"name": f"app{a}", "instances": draw(st.integers(1, 2)), "ports": ports,
                     "memory_mb": 128, "sidecars": sidecars})
    routes = [{"host": f"app{a}.example.com", "app": f"app{a}",
               "port": draw(st.sampled_from(apps[a]["ports"]))}
              for a in range(len(apps)) if draw(st.booleans())]
    doc = {
        "name": "generated", "platform": platform, "seed": draw(st.integers(0, 1000)),
        "cells": {"count": draw(st.integers(1, 3)), "memory_mb": 4096},
        "proxy": {"enabled": enabled, "enable_unproxied_port_mappings": unproxied,
                  "require_and_verify_client_certificates": mtls,
                  "trusted_ca_certificates": trusted, "verify_subject_alt_name": sans},
        "apps": apps, "routes": routes,
        "routers": {"backends": {"enabled": (not unproxied) or draw(st.booleans()),
                                 "client_cert": client_cert}},
        "ingress": {"kind": draw(st.sampled_from(["load_balancer", "none"]))},
    }
    return Scenario.model_validate(doc)


def _answer(s: Scenario):
    d = derive(s)
    return d, reachability(d)


def _app_ports(r):
    return [p for p in r.ports if p.target.kind == "app-port"]


# --- the properties seed 002 promises ------------------------------------------------------


@given(settings(mtls=True, unproxied=False, enabled=True))
def test_mtls_without_unproxied_mappings_needs_the_router_certificate(s):
    """No path from outside the container reaches an app port without a client certificate
    from a CA the sidecar trusts (and one of its verified SANs)."""
    d, r = _answer(s)
    trusted = tuple(s.proxy.trusted_ca_certificates)
    for pr in _app_ports(r):
        outside = [a for a in pr.access if a.source in OUTSIDE and not a.needs.grants]
        assert outside, f"the router reaches {pr.target} through its TLS proxy port"
        for a in outside:
            assert a.needs.tls and a.needs.client_cert_cas == trusted, a
            assert a.needs.client_sans == tuple(dict.fromkeys(s.proxy.verify_subject_alt_name))
            assert not a.admits(Client()) and not a.admits(Client(tls=True)), a
            assert not a.admits(Client(tls=True, cert_ca="untrusted-ca", cert_san=ROUTER_SAN))
            cert = Client(tls=True, cert_ca=trusted[0],
                          cert_san=(s.proxy.verify_subject_alt_name or [ROUTER_SAN])[0])
            assert a.admits(cert), a


@given(settings(mtls=True, unproxied=False, enabled=True))
def test_router_certificate_verdict_agrees_with_the_backend_handshake(s):
    """Whether the router's own certificate passes the listener is what derive's backend TLS
    verdict says (a separate part of the model: a handshake with stand-in certificates). The
    drawn settings leave the client certificate as the only thing that can fail: the router
    trusts the identity CA and offers the sidecar's ciphers."""
    d, r = _answer(s)
    routed = [a for pr in _app_ports(r) for a in pr.access if a.opened_by == "router"]
    assert routed
    assert {a.met_by_router for a in routed} == {d.backend_verdict.name == "OK"}


@given(settings(unproxied=True))
def test_unproxied_mappings_give_a_plain_host_port_path(s):
    """With unproxied mappings every app port has a plain path: host port -> app port, at the
    host port the executor mapped for it."""
    d, r = _answer(s)
    for pr in _app_ports(r):
        inst = d.instance(pr.target.guid)
        host_port = inst.host_ports[pr.target.port]
        plain = [a for a in pr.by("router") if a.needs.level == "plain"]
        assert [a.name for a in plain] == [f"host port {host_port} -> app port {pr.target.port}"]
        assert plain[0].address == (inst.cell_ip, host_port)
        assert plain[0].admits(Client()) and not plain[0].admits(Client(tls=True))


@given(settings(unproxied=False, enabled=True))
def test_without_unproxied_mappings_no_plain_path_from_outside(s):
    d, r = _answer(s)
    for pr in _app_ports(r):
        assert not [a for a in pr.access if a.source in OUTSIDE and not a.needs.grants
                    and a.needs.level == "plain"], pr.target
        assert pr.target.port not in d.instance(pr.target.guid).host_ports


@given(settings())
def test_sidecar_ports_are_reachable_from_inside_the_container_only(s):
    d, r = _answer(s)
    seen = {}
    for pr in r.ports:
        if pr.target.kind != "sidecar-port":
            continue
        seen.setdefault(pr.target.guid, set()).add(pr.target.port)
        free = [a for a in pr.access if not a.needs.grants]
        assert free and {a.source for a in free} == {"local"}, pr
        assert all(a.needs.loopback and a.address == ("127.0.0.1", pr.target.port) for a in free)
        # only an explicit container-to-container policy would open it to another container
        assert {a.needs.grants for a in pr.access if a.needs.grants} == {(C2C_POLICY,)}
    for guid in d.running:
        inst = d.instance(guid)
        running_here = {p for sc in s.app(inst.app).sidecars
                        if s.app(inst.app).process_type in sc.process_types for p in sc.ports}
        assert seen.get(guid, set()) == running_here


@given(settings(enabled=True))
def test_envoy_admin_is_reachable_from_inside_the_container_only(s):
    d, r = _answer(s)
    admin = [pr for pr in r.ports if pr.target.kind == "envoy-admin"]
    assert sorted((pr.target.guid, pr.target.port) for pr in admin) == \
        sorted((g, d.instance(g).proxy.admin) for g in d.running)
    for pr in admin:
        assert pr.access and {a.source for a in pr.access} == {"local"}
        assert pr.target.address == ("127.0.0.1", pr.target.port)


@given(settings())
def test_host_ports_agree_with_derived_listeners_and_netin_rules(s):
    """Every host port in the graph is a DNAT rule of Garden's NetIn rules, leading to the
    same container port, and TLS exactly where derive's listeners say the cell serves TLS."""
    d = derive(s)
    g = deployment_graph(d)
    for guid in d.running:
        inst = d.instance(guid)
        nat = load(diego_netin_rules(inst), "<netin>").tables["nat"]
        dnat = {}
        for chain in nat.chains.values():
            for rule in chain.rules:
                if rule.target is not None and rule.target.name == "DNAT":
                    dport = next(m for m in rule.matches if getattr(m, "field", "") == "dport")
                    dnat[dport.ranges[0][0]] = (rule.target.address, rule.target.port)
        tls_at = {addr[1]: lst.tls for addr, lst in d.listeners[guid]}
        graph = {}
        for n, a in g.nodes(data=True):
            if a["kind"] == "host-port" and a["address"][0] == inst.cell_ip:
                (sock,) = g.successors(n)
                t = g.nodes[sock].get("target")
                if t is not None and t.guid == guid:
                    graph[a["address"][1]] = ((inst.container_ip, t.port), t.kind == "listener")
        assert {hp: dest for hp, (dest, _) in graph.items()} == dnat
        assert {hp: tls for hp, (_, tls) in graph.items()} == tls_at


@given(settings())
def test_every_route_endpoint_is_an_external_path(s):
    d, r = _answer(s)
    by_target = {(p.target.guid, p.target.port): p for p in _app_ports(r)}
    for route in s.routes:
        for ep in d.routes.get(route.host, ()):
            pr = by_target[(ep.guid, route.port)]
            ext = [a for a in pr.by("external") if route.host in a.name]
            assert [a.address for a in ext] == [ep.address]
            assert ext[0].needs.tls is ep.tls
            assert ext[0].needs.server_san == (ep.guid if ep.tls else None)


def test_container_to_container_policy_bypasses_the_router_certificate():
    """Silk sends an allowed container-to-container connection straight to the app port (or
    to 61443, which never asks for a client certificate): the graph keeps those paths, each
    marked with the policy it needs."""
    s = Scenario.model_validate({
        "name": "c2c", "cells": {"count": 1, "memory_mb": 1024},
        "proxy": {"enable_unproxied_port_mappings": False,
                  "require_and_verify_client_certificates": True,
                  "trusted_ca_certificates": ["router-backends"]},
        "apps": [{"name": "web", "ports": [8080]}]})
    d, r = _answer(s)
    (pr,) = _app_ports(r)
    granted = [a for a in pr.by("peer", grants=True) if a.needs.grants == (C2C_POLICY,)]
    assert sorted(a.name for a in granted) == ["C2C TLS 61443 -> app port 8080",
                                               "TLS proxy 61001 -> app port 8080", "app port 8080"]
    policy = Client(grants=frozenset({C2C_POLICY}))
    assert [a.name for a in granted if a.admits(policy)] == ["app port 8080"]
    c2c = next(a for a in granted if "61443" in a.name)
    assert c2c.admits(Client(tls=True, grants=frozenset({C2C_POLICY}))), \
        "61443 gets no client-certificate validation (executor)"
    cell = [a for a in pr.by("peer", grants=True) if ASG in a.needs.grants]
    assert cell and all(a.needs.client_cert for a in cell)


# --- istio and bosh ----------------------------------------------------------------------


def _istio(ports, mtls=True):
    return Scenario.model_validate({
        "name": "mesh", "platform": "istio", "cells": {"count": 1, "memory_mb": 2048},
        "proxy": {"require_and_verify_client_certificates": mtls,
                  "trusted_ca_certificates": ["istio-ca"]},
        "apps": [{"name": "web", "ports": ports,
                  "sidecars": [{"name": "helper", "ports": [8082]}]}],
        "routes": [{"host": "web.example.com", "app": "web", "port": ports[0]}],
        "ingress": {"kind": "istio_gateway"},
        "routers": {"backends": {"trusted_ca": "instance-identity",
                                 "client_cert": {"ca": "istio-ca"}}},
    })


def test_istio_captured_ports_need_mtls_and_excluded_ports_do_not():
    """The injector's rules capture every inbound port but Envoy's own (15090, 15021, 15020):
    an app port there is reached in plain text; the others only through Envoy's mTLS."""
    d, r = _answer(_istio([8080, 15021]))
    by_port = {p.target.port: p for p in r.ports}
    for a in by_port[8080].access:
        if a.source != "local":
            assert a.needs.level == "mtls" and "Envoy inbound 15006" in a.name, a
    assert {a.source for a in by_port[15021].access if a.needs.level == "plain"} == \
        {"router", "peer", "local"}
    # the sidecar process's port is captured too: on Kubernetes it is not container-local
    assert by_port[8082].easiest("peer").needs.level == "mtls"
    assert {a.source for a in by_port[15000].access} == {"local"}
    assert any("istio: limited" in line for line in r.limits)


def test_istio_without_strict_mtls_accepts_plain_text():
    d, r = _answer(_istio([8080], mtls=False))
    (pr,) = _app_ports(r)
    assert pr.easiest("router").needs.level == "plain"


@pytest.mark.parametrize("addon", [True, False])
def test_bosh_vip_reaches_the_job_only_through_the_local_envoy(addon):
    s, _ = load_scenario(bundled("bosh-istio"))
    s = s.model_copy(update={"proxy": s.proxy.model_copy(update={"enabled": addon})})
    d, r = _answer(s)
    assert all(p.via_proxy is addon for p in d.client_paths.values())
    for pr in _app_ports(r):
        via_vip = [a for a in pr.by("peer") if a.name.startswith("VIP")]
        routed = any(pr.target.app == route.app for route in s.routes)
        assert bool(via_vip) is (addon and routed)
        assert pr.easiest("peer").needs.level == "plain"
        assert not pr.by("external")


# --- determinism, the matrix, the CLI -------------------------------------------------------


@pytest.mark.parametrize("name", ["diego-route-integrity", "cf-for-k8s", "bosh-istio",
                                  "sidecar-buildpack", "sidecar-patches"])
def test_answers_are_deterministic_and_plain_json(name):
    s, _ = load_scenario(bundled(name))
    a = json.dumps(reachability(derive(s)).to_json(), sort_keys=True)
    b = json.dumps(reachability(derive(s)).to_json(), sort_keys=True)
    assert a == b
    assert reach_matrix(derive(s)) == reach_matrix(derive(s))


def test_matrix_is_one_instance_per_app_with_every_source():
    s, _ = load_scenario(bundled("sidecar-buildpack"))
    d = derive(s)
    m = reach_matrix(d)
    assert {r.app for r in m.rows} == {a.name for a in s.apps}
    assert len(representatives(d)) == len(s.apps)
    rows = {(r.app, r.port): r for r in m.rows}
    sidecar = rows[("app-using-config-server", 8082)]
    assert [c.level for c in sidecar.cells] == ["none", "none", "none", "plain"]
    assert sidecar.cells[SOURCES.index("local")].loopback
    assert sidecar_ports(s.apps[0]) == (8082,)
    facts = m.facts()
    assert facts[0].keys() == {"app", "port", "kind", *SOURCES}


def simnet(*args):
    return subprocess.run([sys.executable, "-m", "simnet", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_json_answers_for_one_port_of_every_instance():
    out = simnet("reach", "diego-route-integrity", "--to", "billing/8080", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    s, _ = load_scenario(bundled("diego-route-integrity"))
    d = derive(s)
    billing = sorted(g for g in d.running if d.instance(g).app == "billing")
    assert sorted(t["guid"] for t in data["targets"]) == billing
    assert {(t["port"], t["kind"]) for t in data["targets"]} == {(8080, "app-port")}
    expected = reachability(d, app="billing", port=8080).to_json()
    assert data == json.loads(json.dumps(expected))


def test_cli_text_shows_the_matrix_and_the_limits():
    out = simnet("reach", "sidecar-buildpack")
    assert out.returncode == 0, out.stderr
    assert "8082" in out.stdout and "loopback" in out.stdout and "note:" in out.stdout
    out = simnet("reach", "sidecar-buildpack", "--to", "app-using-config-server")
    assert out.returncode == 0, out.stderr
    assert "host port" in out.stdout and "configured alike" in out.stdout


@pytest.mark.parametrize("to, message", [
    ("nope/8080", "<command line>: --to: no app 'nope' in diego-route-integrity (its apps: dashboard, billing)"),
    ("billing/http", "<command line>: --to: 'http' is not a port number 1-65535"),
    ("billing/70000", "<command line>: --to: '70000' is not a port number 1-65535"),
    ("billing/9999", "<command line>: --to: app 'billing' has no port 9999 (its ports: 8080 (app port 8080)"),
])
def test_cli_bad_target_exits_2_without_traceback(to, message):
    out = simnet("reach", "diego-route-integrity", "--to", to)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_cli_bad_scenario_exits_2_with_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\ncells: {count: 1, memory_mb: 1024}\napps:\n  - {name: a, ports: [8080, 61443]}\n")
    out = simnet("reach", str(f))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{f}:4: apps.0.ports.1: port 61443 is reserved" in out.stderr
    out = simnet("reach", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr


# --- the report ---------------------------------------------------------------------------


def test_run_report_has_the_reachability_figure_and_facts(tmp_path):
    """`simnet run`'s report: the figure after the others, the matrix in summary.json, and
    both byte-identical from run to run."""
    from simnet.lenses import simulate_and_report

    s, _ = load_scenario(bundled("sidecar-buildpack"))
    s = s.model_copy(update={"duration_s": 1.0})
    outs = [simulate_and_report(s, derive(s), tmp_path / run) for run in ("a", "b")]
    a, b = (tmp_path / run / s.name for run in ("a", "b"))
    assert [p.name for p in outs[0].report_files][-1] == "reachability.png"
    for name in ("reachability.png", "summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    facts = json.loads((a / "summary.json").read_text())["facts"]["reachability"]
    m = reach_matrix(derive(s))
    assert facts == json.loads(json.dumps({"limits": list(m.limits), "ports": m.facts()}))
    html = (a / "report.html").read_text()
    assert '<figure id="reachability">' in html
    assert html.index('<figure id="connections">') < html.index('<figure id="reachability">')


def test_reachability_figure_draws_one_cell_per_source_and_port():
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    from simnet.report import figures

    d = derive(load_scenario(bundled("diego-route-integrity"))[0])
    m = reach_matrix(d)
    fig = figures.reachability(m)
    (ax,) = fig.axes
    cells = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(cells) == len(m.rows) * len(SOURCES)
    flat = [c for r in m.rows for c in r.cells]
    assert sum(1 for p in cells if p.get_hatch()) == sum(1 for c in flat if c.granted)
    categories = {to_rgba(colour): kind for kind, (colour, _) in figures.REACH_COLOURS.items()}
    drawn = [categories[tuple(p.get_facecolor())] for p in cells]
    assert drawn == ["none" if c.level == "none" else "loopback" if c.loopback else c.level
                     for c in flat]
    empty = figures.reachability(type(m)(m.platform, (), m.limits))
    assert "no running instances" in [t.get_text() for t in empty.axes[0].texts]
