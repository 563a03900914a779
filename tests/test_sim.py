"""The SimPy model: determinism, conservation, and the gorouter behaviours it reproduces."""

import json

import pytest

from hypothesis import event, given

from simnet.model.deployment import derive
from simnet.scenario.load import load_text
from simnet.sim.run import simulate
from simnet.strategies.scenarios import scenarios

BASE = """
name: t
seed: 7
duration_s: 6
cells: {count: 2, memory_mb: 4096}
apps:
  - {name: web, instances: 2, ports: [8080, 9999, 2222]}
  - {name: other, instances: 1}
routes:
  - {host: web.example.com, app: web}
  - {host: other.example.com, app: other}
clients:
  - {host: web.example.com, rate_per_s: 300}
"""


def run(text: str):
    scenario, _ = load_text(text)
    return simulate(derive(scenario))


def summary_bytes(m) -> bytes:
    return json.dumps([m.summary(), m.requests_per_bin, m.errors_per_bin,
                       [(i.conns_max, i.memory_mb) for i in m.instances]],
                      sort_keys=True).encode()


def test_same_scenario_and_seed_give_identical_results():
    assert summary_bytes(run(BASE)) == summary_bytes(run(BASE))
    assert summary_bytes(run(BASE)) != summary_bytes(run(BASE.replace("seed: 7", "seed: 8")))


@given(scenarios())
def test_every_request_ends_exactly_once(scenario):
    m = simulate(derive(scenario))
    assert m.issued == m.completed + m.in_flight
    assert m.in_flight >= 0
    assert len(m.latencies_ms) == m.completed == sum(m.requests_per_bin)
    assert sum(m.errors_per_bin) == m.completed - m.outcomes[200]
    assert set(m.outcomes) <= {200, 404, 496, 502, 503, 525, 526}
    assert all(lat >= 0 for lat in m.latencies_ms)
    # Memory never shrinks while an Envoy lives: it follows the connection high-water mark.
    for inst in m.instances:
        if inst.oom_kills == 0:
            assert inst.highwater == sorted(inst.highwater) or any(
                f.app == inst.app for f in scenario.faults)


@given(scenarios(backend_tls=True))
def test_under_every_fault_no_request_is_lost_or_reaches_the_wrong_app(scenario):
    """Failure injection: instance crashes, moves that hand an address to another app,
    certificate expiry, router restarts, latency spikes, Envoy OOM kills -- with
    router-to-sidecar TLS (Diego's route integrity) every request is accounted for exactly once
    and none is answered by another app."""
    m = simulate(derive(scenario))
    for f in scenario.faults:
        event(f"fault: {f.kind}")
    if any(i.oom_kills for i in m.instances):
        event("fault: Envoy OOM kill")
    assert m.issued == m.completed + m.in_flight and m.in_flight >= 0
    assert m.misdelivered == 0
    assert sum(n for (_host, _app), n in m.served.items()) == m.outcomes.get(200, 0)
    assert all(app == _app_of(host) for (host, app) in m.served)


def _app_of(host: str) -> str:
    return host.split(".")[0]  # the strategy routes appN.example.com to appN


@given(scenarios())
def test_runs_are_deterministic(scenario):
    d = derive(scenario)
    assert summary_bytes(simulate(d)) == summary_bytes(simulate(d))


MOVE = BASE + """
routers: {count: 1, route_propagation_delay_s: 2.0, backends: {enabled: %s}}
faults:
  - {kind: move, at_s: 1.0, app: web, instance: 0, reused_by: other, reuse_address: %s}
"""


def test_route_integrity_with_backend_tls():
    """A stale route to a reused address meets the wrong SAN: 503, pruned, retried, never
    delivered to the other app (seed 000 / gorouter route integrity)."""
    m = run(MOVE % ("true", "true"))
    assert m.misdelivered == 0
    assert m.endpoints_pruned >= 1
    assert m.retries >= 1
    # The retry found the healthy instance; only requests in flight on the moved instance
    # when it stopped failed (502).
    assert m.outcomes[503] == 0
    assert m.outcomes[502] <= 5 and m.outcomes[200] == m.completed - m.outcomes[502]


def test_without_backend_tls_stale_routes_reach_the_wrong_app():
    m = run(MOVE % ("false", "true"))
    assert m.misdelivered > 0
    assert m.endpoints_pruned == 0


def test_without_the_coincidence_a_stale_route_meets_a_closed_port():
    """Garden's FIFO port pool gives the newcomer fresh host ports (guardian
    kawasaki/ports/pool.go), so without backend TLS too the stale route reaches no app: the
    dial is refused, gorouter retries on the other instance (IncompleteRequest) and marks the
    plain endpoint failed, and nothing is misdelivered."""
    m = run(MOVE % ("false", "false"))
    assert m.misdelivered == 0 and m.retries >= 1
    assert m.outcomes[200] == m.completed - m.outcomes[502]


def test_single_endpoint_san_mismatch_is_503():
    text = BASE.replace("instances: 2, ports", "instances: 1, ports") + """
routers: {count: 1, route_propagation_delay_s: 3.0, max_attempts: 3}
faults:
  - {kind: move, at_s: 1.0, app: web, instance: 0, reused_by: other, reuse_address: true}
"""
    m = run(text)
    assert m.outcomes[503] > 0
    assert m.misdelivered == 0


def test_a_killed_only_instance_is_not_tried_twice():
    """One instance, max_attempts 2: its dial fails and gorouter stops rather than try the
    same endpoint again (routing-release gorouter proxy/round_tripper/proxy_round_tripper.go:
    past NumEndpoints attempts, a pick already in triedEndpoints breaks): 502, no retry; a
    request in flight when it died is retried the same way, so none either."""
    text = BASE.replace("instances: 2, ports", "instances: 1, ports") + """
routers: {count: 1, route_propagation_delay_s: 2.0, max_attempts: 2}
faults:
  - {kind: kill, at_s: 1.0, app: web, instance: 0, restart_after_s: 3}
"""
    m = run(text)
    assert m.outcomes[502] > 0
    assert m.outcomes[200] > 0  # before the kill and after the restart
    assert m.retries == 0


def test_tls_policy_statuses():
    """gorouter's statuses for the sidecar's TLS policy, per negotiated version (the verdicts
    come from the handshake model, checked against OpenSSL and Envoy elsewhere)."""
    def with_routers(routers, proxy=""):
        return run(BASE + f"routers: {routers}\n" + proxy)

    def fails_with(status, m):  # then 503 once every endpoint is pruned (no registration comes)
        return m.outcomes[status] > 0 and set(m.outcomes) <= {status, 503}

    assert with_routers("{backends: {trusted_ca: other-ca}}").outcomes[526] > 0
    # TLS 1.2 suites matter only when the router stops at TLS 1.2 (Go's default is 1.3)
    assert set(with_routers("{backends: {cipher_suites: [AES128-SHA]}}").outcomes) == {200}
    tls12 = "max_tls_version: TLSv1.2"
    assert with_routers(f"{{backends: {{cipher_suites: [AES128-SHA], {tls12}}}}}").outcomes[525] > 0
    mtls = ("proxy: {require_and_verify_client_certificates: true, "
            "trusted_ca_certificates: [router-ca]}\n")
    # no router certificate: Envoy alerts certificate_required (TLS 1.3) -> 496, but
    # handshake_failure under TLS 1.2 -> 525
    assert fails_with(496, with_routers("{backends: {}}", mtls))
    assert fails_with(525, with_routers(f"{{backends: {{{tls12}}}}}", mtls))
    # a certificate from a CA Envoy does not list is never sent by Go: the same as none
    assert fails_with(496, with_routers("{backends: {client_cert: {ca: other-ca}}}", mtls))
    ok = with_routers("{backends: {client_cert: {ca: router-ca}}}", mtls)
    assert set(ok.outcomes) == {200}
    # verify_subject_alt_name mismatch: Envoy alerts certificate_unknown, which no gorouter
    # classifier names: retried (an error before a connection was obtained is
    # IncompleteRequestError), never pruned, 502 once the attempts are spent
    san = mtls.replace("]}", "], verify_subject_alt_name: [someone-else]}")
    m = with_routers("{backends: {client_cert: {ca: router-ca}}}", san)
    assert set(m.outcomes) == {502} and m.endpoints_pruned == 0
    # web's two instances, max_attempts 3: each request tries both, then gorouter stops (a
    # request still in flight at the end may have retried without an answer yet)
    assert m.outcomes[502] <= m.retries <= m.outcomes[502] + m.in_flight


def test_unknown_host_is_404():
    """A host no route names never reaches a backend (the loader refuses such clients, so
    the router is driven directly)."""
    import simpy

    from simnet.sim.metrics import Metrics
    from simnet.sim.router import Router
    from simnet.sim.run import Network

    scenario, _ = load_text(BASE)
    d = derive(scenario)
    env = simpy.Environment()
    net = Network(env, d, Metrics(duration_s=1, bin_s=1))
    router = Router(env, net, d.routes, (lambda: 0.0,) * 4)
    proc = env.process(router.handle("nowhere.example.com", 0.0))
    env.run()
    assert proc.value == (404, "unknown route")
    assert net.metrics.connections_opened == 0


def test_keep_alive_reuses_connections_and_memory_follows_high_water():
    m = run(BASE + "proxy: {memory: {model: seed}}\n")
    assert m.connections_opened < m.completed / 10
    assert m.tls_handshakes == m.connections_opened
    for inst in m.instances:
        assert inst.memory_mb == sorted(inst.memory_mb)
        assert inst.peak_memory_mb == pytest.approx(7.5 + 0.03 * max(inst.highwater))


def test_oom_kill_when_sidecar_memory_passes_the_quota():
    text = BASE.replace("ports: [8080, 9999, 2222]}", "ports: [8080], memory_mb: 64, memory_used_mb: 50}") + """
proxy: {memory: {base_mb: 7.5, per_connection_kb: 2000}}
routers: {count: 2, keep_alive_to_backends: true}
clients:
  - {host: web.example.com, model: closed, users: 30}
"""
    text = text.replace("clients:\n  - {host: web.example.com, rate_per_s: 300}\n", "", 1)
    m = run(text)
    web = [i for i in m.instances if i.app == "web"]
    assert sum(i.oom_kills for i in web) > 0
    assert m.outcomes[502] > 0


def test_oom_killed_instance_is_registered_again_after_its_restart():
    """gorouter prunes the instance its dial found dead; Diego restarts it and the
    route-emitter registers it again, so it takes traffic (and here, OOMs) again."""
    text = """
name: oomback
duration_s: 10
time_bin_s: 0.5
cells: {count: 1, memory_mb: 1024}
apps: [{name: web, instances: 1, memory_mb: 64, memory_used_mb: 50, ports: [8080]}]
routes: [{host: web.example.com, app: web}]
proxy: {memory: {base_mb: 7.5, per_connection_kb: 1000}}
routers: {count: 1, keep_alive_to_backends: false, route_propagation_delay_s: 0.5, max_attempts: 1}
clients: [{host: web.example.com, rate_per_s: 300}]
"""
    m = run(text)  # 6.5 MB of headroom: a burst of 7 concurrent connections kills it
    (web,) = m.instances
    assert web.oom_kills >= 2  # it came back after the first kill, took traffic and died again
    first_kill_bin = next(k for k, n in enumerate(m.errors_per_bin) if n)
    served_later = sum(m.requests_per_bin[k] - m.errors_per_bin[k]
                       for k in range(first_kill_bin + 4, len(m.requests_per_bin)))
    assert served_later > 0


BOSH = """
name: vip
platform: bosh
duration_s: 2
cells: {count: 3, memory_mb: 1024}
proxy: {enabled: %s, additional_memory_allocation_mb: 0}
apps: [{name: banana, instances: 3, memory_mb: 256, ports: [9002]}]
routes: [{host: example-httpbin.banana.sample-deployment.boshy, app: banana, port: 9002}]
routers: {count: 1, max_attempts: 1, backends: {enabled: false}}
ingress: {kind: none}
clients: [{host: example-httpbin.banana.sample-deployment.boshy, rate_per_s: 100}]
"""


def test_bosh_vip_connections_reach_the_local_envoy_only_because_the_rule_says_so():
    host = "example-httpbin.banana.sample-deployment.boshy"
    with_addon, _ = load_text(BOSH % "true")
    path = derive(with_addon).client_paths[host]
    assert path.via_proxy and path.outcome.destination == ("127.0.0.1", 15001)
    assert path.outcome.path == ("nat/OUTPUT#1",)
    m = run(BOSH % "true")
    assert m.outcomes[200] == m.completed > 0
    # Without the Envoy add-on there is no rule: the job dials the VIP itself and nothing answers.
    without, _ = load_text(BOSH % "false")
    path = derive(without).client_paths[host]
    assert not path.via_proxy and path.outcome.destination[0].startswith("169.254.255.")
    m = run(BOSH % "false")
    assert m.completed > 0 and m.outcomes[502] == m.completed


ISTIO = """
name: mesh
platform: istio
duration_s: 2
cells: {count: 2, memory_mb: 2048}
apps: [{name: web, instances: 2, memory_mb: 256, ports: [%d]}]
routes: [{host: web.apps.example.com, app: web, port: %d}]
routers: {count: 1, max_attempts: 2}
clients: [{host: web.apps.example.com, rate_per_s: 100}]
"""


def test_istio_gateway_reaches_envoy_only_on_ports_the_capture_rules_take():
    captured, _ = load_text(ISTIO % (8080, 8080))
    d = derive(captured)
    assert all(listener.tls for g in d.running for _, listener in d.listeners[g])
    assert run(ISTIO % (8080, 8080)).outcomes[200] > 0
    # 15021 is excluded by the injector (Envoy's health port): the app answers in plain text
    # and the gateway's mTLS handshake fails.
    excluded, _ = load_text(ISTIO % (15021, 15021))
    d = derive(excluded)
    assert not any(listener.tls for g in d.running for _, listener in d.listeners[g])
    m = run(ISTIO % (15021, 15021))
    assert m.completed > 0 and m.outcomes[200] == 0


EXPIRY = """
name: expiry
duration_s: 5
time_bin_s: 0.25
cells: {count: 1, memory_mb: 1024}
apps: [{name: web, instances: 1, memory_mb: 256}]
routes: [{host: web.example.com, app: web}]
routers: {count: 1, max_attempts: 2, keep_alive_to_backends: %s, route_propagation_delay_s: 0.5}
clients: [{host: web.example.com, rate_per_s: 200}]
faults: [{kind: expire_certificate, at_s: 1, app: web, instance: 0%s}]
"""


def _error_window(m) -> tuple[float, float]:
    bins = [k for k, n in enumerate(m.errors_per_bin) if n]
    return bins[0] * m.bin_s, (bins[-1] + 1) * m.bin_s


def test_expired_certificate_fails_new_handshakes_until_rotated():
    m = run(EXPIRY % ("false", ", rotated_after_s: 1"))
    # gorouter: the expired certificate fails Go's verification (a CertificateVerificationError,
    # so UntrustedCert -> 526), retried and pruned; with the only endpoint pruned, 503 (no
    # endpoints) until the route is registered again
    assert m.outcomes[526] >= 1 and m.outcomes[503] > 0 and m.endpoints_pruned >= 1
    start, end = _error_window(m)
    assert 1.0 <= start < 1.25 and 2.0 < end <= 2.75  # rotated at 2 s, route back at 2.5 s
    never = run(EXPIRY % ("false", ""))
    assert _error_window(never)[1] == never.duration_s  # never rotated: failing to the end


def test_expired_certificate_leaves_open_connections_alone():
    # Keep-alive: the router goes on using connections whose handshake came before the expiry;
    # only the first new handshake fails (and prunes the endpoint), later than without pooling.
    m = run(EXPIRY % ("true", ""))
    start, _ = _error_window(m)
    assert start > 1.25 and m.outcomes[526] == 1
    served_after_expiry = sum(m.requests_per_bin[k] - m.errors_per_bin[k]
                              for k in range(int(1.0 / m.bin_s), int(start / m.bin_s)))
    assert served_after_expiry > 0


RESTART = BASE + """
routers: {count: 2}
ingress: {balancing: round-robin}
faults:
  - {kind: restart_router, at_s: 1.0, router: 1, down_s: 1.0}
"""


def test_a_restarting_router_answers_502_through_the_load_balancer_until_it_is_back():
    d = derive(load_text(RESTART)[0])
    m = simulate(d)
    assert m.outcomes[502] > 0 and m.issued == m.completed + m.in_flight
    bins = [b for b, n in enumerate(m.errors_per_bin) if n]
    assert bins and min(bins) * m.bin_s >= 1.0 - m.bin_s and max(bins) * m.bin_s < 2.0 + m.bin_s
    # about half the requests of the down second reach the router that is down
    down = sum(m.requests_per_bin[b] for b in bins)
    assert 0.3 < m.outcomes[502] / down < 0.7
    assert m.misdelivered == 0


def test_a_latency_spike_slows_only_its_window():
    spike = BASE + """
faults:
  - {kind: latency_spike, at_s: 1.0, duration_s: 0.5, hop: sidecar_to_app, extra_ms: 200}
"""
    calm, spiked = simulate(derive(load_text(BASE)[0])), simulate(derive(load_text(spike)[0]))
    median = sorted(calm.latencies_ms)[len(calm.latencies_ms) // 2]
    # sidecar_to_app is crossed twice per request: 400 ms more for requests in the window ...
    slow = [x for x in spiked.latencies_ms if x >= median + 400]
    assert slow and max(calm.latencies_ms) < median + 400
    # ... and only for them: about half a second of the 6 s at 300 requests/s
    assert 0.3 * 150 < len(slow) < 1.5 * 150
    assert sorted(spiked.latencies_ms)[len(spiked.latencies_ms) // 2] == pytest.approx(median)


def test_router_faults_are_checked_on_load():
    from simnet.errors import SimnetError

    with pytest.raises(SimnetError, match=r"faults.0.router: there are 2 router\(s\) \(0-1\); "
                                          r"index 2 does not exist"):
        load_text(RESTART.replace("router: 1,", "router: 2,"))


STOP = BASE + """
routers: {count: 2, route_propagation_delay_s: 2.0, keep_alive_to_backends: false}
faults:
  - {kind: stop, at_s: 1.0, app: web, instance: 0}
"""


def test_a_graceful_stop_is_a_hostname_error_retried_elsewhere_and_pruned():
    """From the stop until the route is withdrawn, new handshakes to the stopping instance
    meet its guid-less certificate: gorouter's HostnameMismatch (retriable, prunable: routing-
    release proxy/fails/classifier_group.go), so each router prunes it and retries on the
    other instance; no client sees an error. Without backend TLS nothing checks the
    certificate: the instance serves until the route is withdrawn, nothing is retried."""
    m = run(STOP)
    assert m.endpoints_pruned == 2 and m.retries >= 2
    assert m.outcomes[200] == m.completed and m.misdelivered == 0
    plain = run(STOP.replace("keep_alive_to_backends: false",
                             "keep_alive_to_backends: false, backends: {enabled: false}"))
    assert plain.endpoints_pruned == 0 and plain.retries == 0
    assert plain.outcomes[200] == plain.completed
