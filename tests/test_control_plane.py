"""Control-plane changes in time: pushes and route mappings reach routers after the
propagation delay; meanwhile requests see 404 (no route) or 503 (a route without a ready
instance), and weighted routes split traffic as configured."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simnet.errors import SimnetError
from simnet.model.deployment import derive
from simnet.lenses import load_and_derive
from simnet.scenario.load import bundled, load_text
from simnet.sim.run import simulate

ISTIO = """
name: t
platform: {platform}
seed: {seed}
duration_s: 12
cells: {{count: 2, memory_mb: 4096, instance_identity_ca: ca}}
proxy: {{trusted_ca_certificates: [ca]}}
apps:
  - {{name: a, instances: 2}}
  - {{name: b, instances: 2, start_s: 5}}
routes:
  - {{host: a.example.com, app: a}}
  - {{host: b.example.com, app: b, at_s: {map_b}}}
routers: {{count: 2, route_propagation_delay_s: {delay}, backends: {{trusted_ca: ca}}}}
clients:
  - {{host: a.example.com, rate_per_s: 50}}
  - {{host: b.example.com, rate_per_s: 200}}
"""


def _run(text: str):
    s, _ = load_text(text, "t.yaml")
    d = derive(s)
    return d, simulate(d)


def _failed_times(m, host: str, status: int) -> list[float]:
    return list(m.failures.get((host, status), ()))


@pytest.mark.parametrize("platform", ["istio", "diego"])
def test_push_window_is_the_propagation_delay(platform):
    """b's route is mapped at 2 s and its instances start at 5 s; the routers learn of each
    change `delay` later. Istio's gateway knows the VirtualService from 2+delay on and answers
    503 until the pods are known (5+delay); gorouter has no route at all until then: 404."""
    delay = 0.75
    d, m = _run(ISTIO.format(platform=platform, seed=3, map_b=2, delay=delay))
    host = "b.example.com"
    assert [(c.what, c.at_s, c.effective_s) for c in d.changes] == [
        (f"map {host} -> b:8080", 2.0, 2 + delay), ("push b", 5.0, 5 + delay)]
    not_found = _failed_times(m, host, 404)
    unavailable = _failed_times(m, host, 503)
    if platform == "istio":
        assert not_found and max(not_found) < 2 + delay
        assert unavailable and min(unavailable) >= 2 + delay - 0.1
        assert max(unavailable) < 5 + delay
    else:
        assert unavailable == []
        assert not_found and max(not_found) < 5 + delay and min(not_found) < 2 + delay
    assert m.served[host, "b"] > 0
    # every request to b issued after the push has propagated (plus the path's latency) is served
    late = [t for t in not_found + unavailable if t >= 5 + delay]
    assert late == []
    windows = m.windows(d.changes)
    assert sum(w["requests"] for c in windows for w in c["failed"].values()) == \
        len([t for t in not_found + unavailable if t >= 2])


def test_route_change_reaches_routers_only_after_the_delay():
    """With a longer delay the window grows by exactly the difference (same seed)."""
    short = _run(ISTIO.format(platform="istio", seed=1, map_b=0, delay=0.5))[1]
    long = _run(ISTIO.format(platform="istio", seed=1, map_b=0, delay=2.0))[1]
    assert max(_failed_times(short, "b.example.com", 503)) < 5.5
    assert max(_failed_times(long, "b.example.com", 503)) > 6.5
    assert long.outcomes[503] > short.outcomes[503]


WEIGHTED = """
name: w
platform: istio
seed: {seed}
duration_s: 20
cells: {{count: 2, memory_mb: 4096}}
apps:
  - {{name: a, instances: 2}}
  - {{name: b, instances: 3}}
  - {{name: c, instances: 1}}
routes:
{routes}
routers: {{count: 3, backends: {{enabled: true}}}}
clients:
  - {{host: s.example.com, rate_per_s: 400}}
"""


def _chi_square_ok(counts: list[int], weights: list[int], z: float = 3.29) -> bool:
    """Pearson's chi-square against the expected split, at alpha ~0.001 (Wilson-Hilferty)."""
    n = sum(counts)
    stat = sum((o - n * w / 100) ** 2 / (n * w / 100) for o, w in zip(counts, weights))
    k = len(counts) - 1
    critical = k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3
    return stat < critical


@settings(max_examples=8)
@given(weights=st.lists(st.integers(5, 90), min_size=1, max_size=2).filter(
    lambda w: sum(w) <= 95).map(lambda w: [*w, 100 - sum(w)]),
    seed=st.integers(0, 1000))
def test_weighted_route_splits_traffic_as_configured(weights, seed):
    apps = ["a", "b", "c"][:len(weights)]
    routes = "\n".join(f"  - {{host: s.example.com, app: {a}, weight: {w}}}"
                       for a, w in zip(apps, weights))
    d, m = _run(WEIGHTED.format(seed=seed, routes=routes))
    assert [w for _, w in d.weights["s.example.com"]] == weights
    counts = [m.served["s.example.com", a] for a in apps]
    assert sum(counts) == m.outcomes[200] > 6000
    assert _chi_square_ok(counts, weights), (counts, weights)
    # the check can fail: the same counts against a split 10 points off are rejected
    wrong = list(weights)
    i = wrong.index(max(wrong))
    j = min((k for k in range(len(wrong)) if k != i), key=lambda k: wrong[k])
    wrong[i] -= 10
    wrong[j] += 10
    assert not _chi_square_ok(counts, wrong)


def test_unweighted_route_splits_evenly_with_the_remainder_to_the_first():
    routes = "\n".join(f"  - {{host: s.example.com, app: {a}}}" for a in "abc")
    d, _ = _run(WEIGHTED.format(seed=0, routes=routes))
    assert [w for _, w in d.weights["s.example.com"]] == [34, 33, 33]


def test_remapping_with_weights_changes_the_split_later():
    routes = """  - {host: s.example.com, app: a}
  - {host: s.example.com, app: a, weight: 70, at_s: 10}
  - {host: s.example.com, app: b, weight: 30, at_s: 10}"""
    d, m = _run(WEIGHTED.format(seed=2, routes=routes))
    assert [w for _, w in d.weights["s.example.com"]] == [100]
    (change,) = d.changes
    assert change.at_s == 10 and "weight 70" in change.what and "weight 30" in change.what
    b = m.served["s.example.com", "b"]
    a_after = m.outcomes[200] - m.served["s.example.com", "a"]  # nothing else serves
    assert a_after == b
    assert 0.2 < b / (400 * 9) < 0.4  # 30 % of the ~9 s after the change reached the gateway


@pytest.mark.parametrize("routes, field, message", [
    ("  - {host: s.example.com, app: a, weight: 60}\n  - {host: s.example.com, app: b, weight: 30}",
     "routes.1.weight", "sum to 90, not 100"),
    ("  - {host: s.example.com, app: a, weight: 60}\n  - {host: s.example.com, app: b}",
     "routes.1.weight", "all of its destinations or none"),
    ("  - {host: s.example.com, app: a}\n  - {host: s.example.com, app: b, weight: 40, at_s: 3}",
     "routes.0.weight", "all of its destinations or none"),
])
def test_bad_weights_name_the_route(routes, field, message):
    with pytest.raises(SimnetError) as e:
        load_text(WEIGHTED.format(seed=0, routes=routes), "w.yaml")
    text = str(e.value)
    assert "w.yaml:" in text and field in text and message in text, text


def test_weights_are_istio_only_and_faults_wait_for_the_push():
    text = WEIGHTED.format(seed=0, routes="  - {host: s.example.com, app: a, weight: 100}")
    with pytest.raises(SimnetError, match="routes.0.weight: weights are cf-for-k8s"):
        load_text(text.replace("platform: istio", "platform: diego"), "w.yaml")
    text = ISTIO.format(platform="diego", seed=0, map_b=0, delay=1) + \
        "faults:\n  - {kind: kill, at_s: 2, app: b}\n"
    with pytest.raises(SimnetError, match=r"faults.0.at_s: app 'b' is pushed at 5 s"):
        load_text(text, "k.yaml")


def test_bundled_cf_for_k8s_shows_the_seed_steps_windows():
    """The bundled scenario plays seed 001's steps: 404 then 503 while test-app-b is pushed,
    404 while the additional route propagates, then an 80/20 split; deterministic."""
    s, d = load_and_derive(bundled("cf-for-k8s"))
    m = simulate(d)
    windows = {w["what"].split(" ->")[0]: w for w in m.windows(d.changes)}
    b = "map test-app-b.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
    assert set(windows[b]["failed"]) == {"404", "503"}
    assert windows[b]["failed"]["404"]["last_s"] < windows[b]["effective_s"]
    assert set(windows["push test-app-b"]["failed"]) == {"503"}
    second = "map test-app-b-second.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
    assert set(windows[second]["failed"]) == {"404"}
    host_a = "test-app-a.cf.cf4k8s.istio.shoot.canary.k8s-hana.ondemand.com"
    to_b = m.served[host_a, "test-app-b"]
    assert 0.1 < to_b / (150 * (s.duration_s - 17)) < 0.3
    assert simulate(d).summary() == m.summary()


MOVE = """
name: m
platform: {platform}
seed: 4
duration_s: 10
cells: {{count: 3, memory_mb: 4096, instance_identity_ca: ca}}
proxy: {{require_and_verify_client_certificates: true, trusted_ca_certificates: [ca]}}
apps:
  - {{name: a, instances: 2}}
  - {{name: b, instances: 1}}
routes: [{{host: a.example.com, app: a}}, {{host: b.example.com, app: b}}]
routers: {{route_propagation_delay_s: 2, backends: {{trusted_ca: ca, client_cert: {{ca: ca}}}}}}
clients: [{{host: a.example.com, rate_per_s: 300}}]
faults: [{{kind: move, at_s: 3, app: a, instance: 1, reused_by: b, reuse_address: true}}]
"""


def test_istio_route_integrity_holds_per_service_account_not_per_instance():
    """A stale endpoint whose address another app's instance reuses: gorouter's SAN check
    names the instance and refuses it (0 misdelivered); the Istio gateway checks the shared
    cf-workloads service-account identity, which the other app's pod also holds, so until
    the endpoint update arrives some requests reach the wrong app."""
    diego = _run(MOVE.format(platform="diego"))
    istio = _run(MOVE.format(platform="istio"))
    assert diego[0].backend_verdicts[False, False].name == "SAN_MISMATCH"
    assert istio[0].backend_verdicts[False, False].name == "OK"
    assert istio[0].backend_verdicts[True, True].name == "UPSTREAM_CONNECT_FAILURE"
    assert diego[1].misdelivered == 0 and diego[1].endpoints_pruned >= 1
    assert istio[1].misdelivered > 0 and istio[1].endpoints_pruned == 0


def test_report_shows_each_change_and_its_window(tmp_path):
    from simnet.lenses import run

    out = run(bundled("cf-for-k8s"), tmp_path)
    html = (tmp_path / "cf-for-k8s" / "report.html").read_text()
    assert "Control-plane changes" in html
    for change in out.deployment.changes:
        assert change.what.split(";")[0].replace(">", "&gt;") in html
    assert html.count("503: ") >= 2 and "404: " in html
