"""The emulated twin's own logic: process configs read off the derivation, observations turned
into a run's Metrics, and the validation verdicts. (The twin running for real: test_twin_real.)"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from simnet.emulate import metrics_of, plan
from simnet.emulate.observed import Observed, Sample
from simnet.emulate.validate import checks, verdict
from simnet.lenses import derive, load_and_derive, scaled, simulate
from simnet.model.load_balancer import load_balancer_bootstrap
from simnet.scenario.bundled import bundled


@pytest.fixture(scope="module")
def default():
    return load_and_derive(bundled())


def test_app_config_is_the_derived_instance(default):
    s, d = default
    for inst in d.instances:
        c = plan.app_config(d, inst)
        app = s.app(inst.app)
        assert c["listen"] == [f"{inst.container_ip}:{p}" for p in inst.proxy.app_ports]
        assert (c["concurrency"], c["queue_limit"]) == (app.concurrency, app.queue_limit)
        assert c["service"] == app.service_time.model_dump()
    # every instance gets its own random stream
    assert len({plan.app_config(d, i)["seed"] for i in d.instances}) == len(d.instances)


def test_router_config_carries_the_derived_router_capacity(default):
    s, d = default
    c = plan.router_config(d, 1, listen="198.19.255.2", routes_file="r", ca_file="ca")
    assert c["max_conns"] == d.router.max_conns == s.routers.backends.max_conns
    assert c["dial_timeout_ms"] == 5000 and c["tls_handshake_timeout_ms"] == 10000
    assert c["max_attempts"] == s.routers.max_attempts
    table = plan.routes_table(d.routes)
    assert {h: [e["address"] for e in eps] for h, eps in table.items()} == {
        h: [f"{e.address[0]}:{e.address[1]}" for e in eps] for h, eps in d.routes.items()}
    assert all(e["tls"] for eps in table.values() for e in eps)  # backend TLS is on
    assert (c["cert_file"], c["key_file"]) == ("", "")  # no router.backends.cert_chain
    with_cert = plan.router_config(d, 1, listen="198.19.255.2", routes_file="r", ca_file="ca",
                                   client_cert=("r.crt", "r.key"))
    assert (with_cert["cert_file"], with_cert["key_file"]) == ("r.crt", "r.key")


def test_scaled_cuts_the_run_and_scales_every_client(default):
    s, _ = default
    t = scaled(s, duration_s=5, rate_scale=0.5)
    assert t.duration_s == 5
    assert [c.rate_per_s for c in t.clients] == [None if c.rate_per_s is None else c.rate_per_s / 2
                                                for c in s.clients]
    assert [c.users for c in t.clients] == [None if c.users is None else -(-c.users // 2)
                                           for c in s.clients]


def _observed(d, requests, **kw):
    return Observed({"requests": requests}, [{"retries": 2, "endpoints_pruned": 1,
                                              "connections_opened": 4, "tls_handshakes": 4,
                                              "handled": len(requests)}],
                    {}, **kw)


def test_observations_become_a_run(default):
    s, d = default
    dash, bill = (next(i for i in d.instances if i.app == a) for a in ("dashboard", "billing"))
    requests = [
        [0, 0.1, 0.0, 20.0, 200, "", "dashboard", dash.guid, ""],
        [0, 0.2, 0.0, 25.0, 200, "", "billing", bill.guid, ""],  # the wrong app answered
        [0, 0.3, 0.0, 5.0, 503, "", "", "", "backend TLS (san_mismatch)"],
        [1, 0.4, 0.0, 1.0, 0, "reset", "", "", ""],  # no HTTP answer from the load balancer
        [1, 0.5, 0.0, 900.0, 0, "timeout", "", "", ""],
    ]
    m = metrics_of(d, _observed(d, requests, samples={dash.guid: [Sample(1.0, 7, 30.5)]},
                                alive_s={dash.guid: 10.0}))
    summary = m.summary()["requests"]
    assert summary["issued"] == 5 and summary["completed"] == 4 and summary["timed_out"] == 1
    assert m.outcomes == {200: 2, 503: 1, 502: 1}
    assert m.misdelivered == 1 and m.served["dashboard.apps.example.com", "billing"] == 1
    assert m.causes["backend TLS (san_mismatch)"] == 1
    assert m.causes["load balancer connection reset"] == 1 and m.causes["client timeout"] == 1
    assert (m.retries, m.endpoints_pruned, m.tls_handshakes) == (2, 1, 4)
    inst = next(i for i in m.instances if i.guid == dash.guid)
    assert inst.peak_connections == 7 and inst.peak_memory_mb == 30.5
    assert inst.conns_max[m.bin_of(1.0)] == 7


def test_validation_agrees_with_itself_and_catches_a_difference(default):
    s, d = default
    short = scaled(s, duration_s=4)
    from simnet.lenses import derive

    runs = [simulate(derive(short.model_copy(update={"seed": short.seed + k}))) for k in range(2)]
    same = checks(runs, runs[0])
    assert verdict(same), [c for c in same if not c.agrees]
    other = simulate(derive(short.model_copy(update={"seed": short.seed + 7})))
    other.outcomes[200] = int(other.outcomes[200] * 0.7)  # 30% fewer successes
    other.misdelivered = 3
    bad = {c.metric: c.agrees for c in checks(runs, other)}
    assert not bad["status 200"] and not bad["misdelivered"]


def test_load_balancer_bootstrap_is_valid_envoy_config(default):
    from simnet.real.envoy import validate

    s, _ = default
    limited = s.ingress.model_copy(update={"max_connections": 100, "max_rate_per_s": 500})
    for ingress in (s.ingress, limited):
        validate(load_balancer_bootstrap(ingress, listen=("198.19.255.100", 80),
                                         routers=[("198.19.255.1", 80), ("198.19.255.2", 80)],
                                         admin_port=9901))
    broken = load_balancer_bootstrap(limited, listen=("198.19.255.100", 80),
                                     routers=[("198.19.255.1", 80)], admin_port=9901)
    broken["static_resources"]["clusters"][0]["lb_policy"] = "FASTEST"  # the negative control
    with pytest.raises(Exception, match="FASTEST"):
        validate(broken)


def test_an_emulation_whose_generator_fell_behind_or_missed_an_event_is_no_measurement(default):
    s, _ = default
    from simnet.lenses import derive

    runs = [simulate(derive(scaled(s, duration_s=4)))]
    on_time = {"send_lag_ms": {"p50": 0.05, "p99": 1.2}, "not_applied": [], "late": []}
    assert verdict(checks(runs, runs[0], on_time))
    behind = {**on_time, "send_lag_ms": {"p50": 3.0, "p99": 40.0}}
    by_metric = {c.metric: c.agrees for c in checks(runs, runs[0], behind)}
    assert by_metric["load generator send lag p99 ms"] is False
    missed = {**on_time, "not_applied": ["RouterDown at 4 s"]}
    assert not verdict(checks(runs, runs[0], missed))


@pytest.mark.parametrize("command", ["emulate", "validate"])
def test_a_platform_the_twin_cannot_build_is_refused_at_its_line(command):
    proc = subprocess.run([sys.executable, "-m", "simnet", command, "cf-for-k8s"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "cf-for-k8s.yaml:" in proc.stderr and ": platform: istio scenarios cannot be emulated" \
        in proc.stderr and "Traceback" not in proc.stderr


def test_calibration_scenario_is_the_scenario_without_faults_or_overhead(default):
    from simnet.emulate.hops import calibration_scenario
    from simnet.scenario.schema import Overhead, constant

    s, _ = default
    with_overhead = s.model_copy(update={"latency": s.latency.model_copy(update={
        "overhead": Overhead(router=constant(1.0))})})
    cal = calibration_scenario(with_overhead, 5.0)
    assert cal.duration_s == 5.0 and not cal.faults and cal.clients == s.clients
    assert cal.apps == s.apps and cal.latency.overhead == Overhead()
    assert cal.latency.client_to_ingress == s.latency.client_to_ingress


def test_hop_parts_are_paired_per_request_less_what_the_simulator_already_charges(default):
    from simnet.emulate.hops import SKIP_S, parts_of

    _, d = default
    rng = np.random.default_rng(1)
    requests = []
    for k in range(400):
        app = 8.0 + rng.exponential(2.0)  # hops, queue and service: the simulator's
        backend = app + rng.lognormal(np.log(0.7), 0.5)
        router = backend + 0.2
        slept, router_slept = 20.0, 1.0
        latency = slept + router_slept + router + rng.lognormal(np.log(2.0), 0.6)
        requests.append([0, SKIP_S + k / 100, 0.0, latency, 200, "", "dashboard", "g", "",
                         router, backend, app, slept, router_slept])
    cold = [0, 0.1, 0.0, 500.0, 200, "", "dashboard", "g", "", 1.0, 0.5, 0.2, 20.0, 1.0]
    failed = [0, 2.0, 0.0, 3.0, 502, "", "", "", "dial failed", 1.0, -1.0, -1.0, 2.0, 1.0]
    parts = {p.name: p for p in parts_of(d, [*requests, cold, failed])}
    assert {p.requests for p in parts.values()} == {400}
    assert parts["load_balancer"].median_ms == pytest.approx(2.0, rel=0.1)
    assert parts["load_balancer"].sigma == pytest.approx(0.6, rel=0.15)
    assert parts["sidecar"].median_ms == pytest.approx(0.7 - d.envoy.request_s * 1000, rel=0.1)
    assert parts["router"].p50_ms == pytest.approx(0.2, rel=0.01)
    with pytest.raises(ValueError, match="too few"):
        parts_of(d, requests[:10])


def test_the_simulator_charges_a_components_overhead_once_per_request(default):
    s, _ = default
    from simnet.lenses import derive
    from simnet.scenario.schema import Overhead, constant

    short = scaled(s.model_copy(update={"faults": []}), duration_s=3)
    base = simulate(derive(short)).summary()["latency_ms"]["p50"]
    over = short.model_copy(update={"latency": short.latency.model_copy(update={
        "overhead": Overhead(load_balancer=constant(2.0), router=constant(1.0),
                             sidecar=constant(0.5))})})
    assert simulate(derive(over)).summary()["latency_ms"]["p50"] == pytest.approx(base + 3.5,
                                                                                   abs=0.3)


def test_a_restarted_process_stats_add_up_and_peaks_take_the_largest():
    from simnet.emulate.run import merged

    first = {"handled": 10, "retries": 1, "causes": {"dial failed": 1}, "peak_queue": 4}
    second = {"handled": 5, "causes": {"dial failed": 2, "unknown route": 1}, "peak_queue": 2}
    assert merged([first, second], maxima=("peak_queue",)) == {
        "handled": 15, "retries": 1, "causes": {"dial failed": 3, "unknown route": 1},
        "peak_queue": 4}
    assert merged([first, second])["peak_queue"] == 6


def test_a_scenario_modelling_another_envoy_is_held_to_the_calibrated_memory_of_the_one_run():
    """sidecar-patches models the 2017 Envoy of seed 002 (``memory.model: seed``); the twin
    runs today's, so validation simulates it with the calibrated model and says so, and the
    predicted memory follows: the seed's model and the calibrated one differ."""
    from simnet.emulate.validate import held_to_twin

    s, d = load_and_derive(bundled("sidecar-patches"))
    twin, notes = held_to_twin(s)
    assert s.proxy.memory.model == "seed" and twin.proxy.memory.model == "calibrated"
    assert len(notes) == 1 and "proxy.memory.model: seed" in notes[0]
    seed_mb = max(i.peak_memory_mb for i in simulate(d).instances)
    twin_mb = max(i.peak_memory_mb for i in simulate(derive(twin)).instances)
    assert abs(seed_mb - twin_mb) > 1.0
    default = load_and_derive(bundled("diego-route-integrity"))[0]
    assert held_to_twin(default) == (default, [])
