"""simnet.questions and simnet.asserts: answers agree with the models they come from, tables
have the records' columns, and assertions fail with messages that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnet import questions as q
from simnet.asserts import (assert_all_rules_reachable, assert_memory_fits, assert_no_bypass,
                            assert_no_findings)
from simnet.model.capture import istio_capture
from simnet.model.interception import INJECTED_FIELDS, ISTIO_INJECTED
from simnet.model.istio_config import IstioConfig
from simnet.model.memory import recommended_allocation_mb
from simnet.model.packet_path import compile_ruleset
from simnet.model.netfilter import load
from simnet.scenario.load import load_scenario

BROKEN = Path(__file__).parent / "analyze"


def with_proxy(name: str, **changes):
    s = q.deployment_of(name).scenario
    return s.model_copy(update={"proxy": s.proxy.model_copy(update=changes)})


def test_reachability_with_and_without_the_routers_certificate():
    path = BROKEN / "sim0005-unproxied-bypass.yaml"
    anonymous = q.reachability(path, source="router", target="web:8080")
    router = q.reachability(path, source="router", target="web:8080", with_cert="router")
    by_path = {r.path: r for r in anonymous}
    plain = next(r for r in anonymous if not r.proxied)
    assert plain.level == "plain" and plain.reachable  # the bypass needs nothing
    mtls = [r for r in anonymous if r.level == "mtls"]
    assert mtls and not any(r.reachable for r in mtls)  # no client certificate, no entry
    assert all(r.reachable for r in router if r.path in by_path)
    stranger = q.reachability(path, with_cert=("some-other-ca", None), target="web:8080")
    assert [r for r in stranger if r.level == "mtls"] and not any(
        r.reachable for r in stranger if r.level == "mtls")  # a certificate from another CA


def test_bypasses_are_the_unproxied_paths_and_go_when_the_mappings_do():
    before = q.bypasses("sidecar-patches")
    assert before and all(not r.proxied and r.source != "local" for r in before)
    assert {r.path.split(" -> ")[0].split()[0] for r in before} == {"host"}
    assert q.bypasses(with_proxy("sidecar-patches", enable_unproxied_port_mappings=False)) == ()


def test_capture_is_the_evaluators_trace_of_the_platforms_rules():
    c = q.capture("cf-for-k8s", "test-app-a", 8080)
    s = q.deployment_of("cf-for-k8s")
    inst = s.instance(s.running[0])
    direct = compile_ruleset(load(istio_capture(ISTIO_INJECTED).v4)).trace(q._connection(
        s, inst, 8080, "inbound", 2000, q.EXTERNAL_ADDRESS))
    assert c.rules == direct.path and c.captured and c.destination.endswith(":15006")
    proxy = q.capture("cf-for-k8s", "test-app-a", 443, direction="outbound", uid=1337)
    app = q.capture("cf-for-k8s", "test-app-a", 443, direction="outbound")
    assert app.captured and not proxy.captured and proxy.rules[-1] == "nat/ISTIO_OUTPUT#4"


def test_diego_capture_lands_on_the_tls_proxy_the_route_uses():
    d = q.deployment_of("diego-route-integrity")
    c = q.capture(d, "billing", 8080)
    inst = next(i for i in d.instances if i.app == "billing")
    assert c.captured and c.destination == f"{inst.container_ip}:{inst.proxy.proxy_for(8080)}"
    assert c.rules[-1].startswith("nat/w--instance-")


def test_unreachable_rules_in_text_a_ruleset_and_a_scenario():
    config = IstioConfig(**{**INJECTED_FIELDS, "InboundPortsExclude": "15090,15021,15090"})
    text = istio_capture(config).v4
    [u] = q.unreachable_rules(text)
    assert u.reason == "shadowed" and "15090" in u.text and u.by.startswith("nat/ISTIO_INBOUND#")
    assert q.unreachable_rules(load(text)) == (u,)
    [s] = q.unreachable_rules(BROKEN / "sim0008-unreachable-rule.yaml")
    assert s.ruleset == "istio-iptables (pod)" and s.reason == "shadowed"
    for name in ("cf-for-k8s", "bosh-istio", "diego-route-integrity"):
        assert q.unreachable_rules(name) == (), name
    with pytest.raises(AssertionError, match=r"1 rule\(s\) can never match:\n  - .*15090"):
        assert_all_rules_reachable(text)
    assert_all_rules_reachable("cf-for-k8s")


def test_tls_path_verdicts_come_from_the_handshake_model():
    d = q.deployment_of("diego-route-integrity")
    hops = {h.hop: h for h in q.tls_path(d)}
    sidecar = hops["gorouter -> Envoy sidecar"]
    assert sidecar.verdict == d.backend_verdicts[True, False].name == "OK"
    assert sidecar.stale_route == d.backend_verdicts[False, False].name != "OK"
    legacy = {h.hop for h in q.tls_path("diego-route-integrity-legacy")}
    assert "gorouter -> app" in legacy and "gorouter -> Envoy sidecar" not in legacy
    with pytest.raises(ValueError, match="no route for host"):
        q.tls_path(d, host="nowhere.example.com")


def test_memory_headroom_and_the_allocation_that_fits():
    [h] = q.memory_headroom("sidecar-buildpack")
    d = q.deployment_of("sidecar-buildpack")
    fp = d.instance(d.running[0]).envoy
    assert h.envoy_mb == pytest.approx(fp.memory_mb(h.peak_connections), abs=1e-3)
    assert not h.fits and h.recommended_mb == recommended_allocation_mb(fp, h.peak_connections)
    assert h.oom_at_connections == fp.connections_until(h.additional_mb) < h.peak_connections
    with pytest.raises(AssertionError, match=f"at least {h.recommended_mb}"):
        assert_memory_fits("sidecar-buildpack")
    fixed = with_proxy("sidecar-buildpack", additional_memory_allocation_mb=h.recommended_mb)
    assert_memory_fits(fixed)
    [f] = q.memory_headroom(fixed)
    assert f.fits and f.headroom_mb > 0
    assert_memory_fits("sidecar-buildpack", peak_connections=50)  # fits at a lower peak


def test_compare_reports_what_changed_and_nothing_else():
    assert q.compare("diego-route-integrity", "diego-route-integrity") == ()
    diff = q.compare("diego-route-integrity", "diego-route-integrity-legacy")
    assert {d.question for d in diff} == {"reachability", "tls"}
    tls = {d.subject: d for d in diff if d.question == "tls"}
    assert tls["gorouter -> app"].before == "-"
    memory = q.compare("sidecar-buildpack",
                       with_proxy("sidecar-buildpack", additional_memory_allocation_mb=32))
    assert [(d.question, d.subject) for d in memory] == [("memory", "app-using-config-server")]


def test_records_become_frames_with_the_records_columns():
    frame = q.memory_headroom("diego-route-integrity").to_frame()
    assert list(frame.columns) == [f for f in q.Headroom.__dataclass_fields__]
    assert len(frame) == 2
    empty = q.compare("cf-for-k8s", "cf-for-k8s").to_frame()
    assert len(empty) == 0


def test_assert_no_bypass_names_each_path():
    with pytest.raises(AssertionError, match=r"host port \d+ -> app port 8080"):
        assert_no_bypass("sidecar-patches")
    assert_no_bypass(BROKEN / "clean-diego.yaml")


def test_assert_no_findings_lists_them():
    with pytest.raises(AssertionError, match="SIM0006"):
        assert_no_findings(BROKEN / "sim0006-memory-below-need.yaml")
    assert_no_findings(BROKEN / "sim0003-port-in-proxy-range.yaml")  # a warning only
    with pytest.raises(AssertionError, match="SIM0003"):
        assert_no_findings(BROKEN / "sim0003-port-in-proxy-range.yaml", "warning")


def test_questions_accept_a_path_a_bundled_name_a_scenario_and_a_deployment():
    path = BROKEN / "clean-diego.yaml"
    scenario, _ = load_scenario(path)
    answers = {q.memory_headroom(x) for x in (path, str(path), scenario, q.deployment_of(path))}
    assert len(answers) == 1
