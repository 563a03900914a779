"""The platform's own limits under load: gorouter's cores, ``router.backends.max_conns`` and
timeouts, Envoy's worker threads and circuit breakers, the load balancer's capacity, client
timeouts; and conservation (issued = succeeded + failed + timed out + in flight) everywhere.

gorouter behaviour is read from its source (cloudfoundry/gorouter a602bb6):
- handlers/lookup.go: a pool whose every endpoint is at max_conns (``pool.IsOverloaded``)
  answers 503 with X-Cf-Routererror "Connection Limit Reached";
- route/roundrobin.go, leastconnection.go: endpoint selection skips overloaded endpoints;
  NumberConnections counts requests in progress (PreRequest / PostRequest);
- config/config.go: endpoint_dial_timeout 5 s, tls_handshake_timeout 10 s, endpoint_timeout;
- proxy/fails/classifier_group.go: Dial and RemoteHandshakeTimeout errors are retriable and
  prunable; an endpoint timeout is neither, and error_handler.go answers it 502.
"""

from __future__ import annotations

import dataclasses
from statistics import mean

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simnet.lenses import derive, load, simulate
from simnet.model.capacity import CircuitBreakers
from simnet.scenario.bundled import BUNDLED, bundled
from simnet.scenario.schema import Scenario
from simnet.strategies.scenarios import scenarios

ZERO = {"dist": "constant", "value_ms": 0.0}
HOPS = ("client_to_ingress", "ingress_to_router", "router_to_sidecar", "sidecar_to_app",
        "tcp_connect", "tls_handshake")


def path(*, rate: float = 100.0, service_ms: float = 10.0, concurrency: int = 100,
         instances: int = 1, routers: dict | None = None, ingress: dict | None = None,
         client: dict | None = None, latency: dict | None = None, duration_s: float = 5.0,
         proxy: bool = False, cores: int = 4) -> Scenario:
    """One app behind one router, free hops unless ``latency`` says otherwise."""
    return Scenario.model_validate({
        "name": "load", "seed": 3, "duration_s": duration_s,
        "cells": {"count": 1, "memory_mb": 16384, "cores": cores},
        "proxy": {"enabled": proxy},
        "routers": {"count": 1, "max_attempts": 1, "backends": {"enabled": proxy},
                    "cpu_per_request_us": 0, "cpu_per_handshake_us": 0, **(routers or {})},
        "ingress": ingress or {},
        "latency": {**{hop: ZERO for hop in HOPS}, **(latency or {})},
        "apps": [{"name": "app", "instances": instances, "concurrency": concurrency,
                  "queue_limit": 10_000, "memory_mb": 1024,
                  "service_time": {"dist": "constant", "value_ms": service_ms}}],
        "routes": [{"host": "app.example.com", "app": "app"}],
        "clients": [{"host": "app.example.com", "rate_per_s": rate, **(client or {})}],
    })


def conserved(m) -> bool:
    r = m.summary()["requests"]
    return (r["issued"] == r["succeeded"] + r["failed"] + r["timed_out"] + r["in_flight"]
            and r["in_flight"] >= 0 and r["completed"] == len(m.latencies_ms))


# --- gorouter -------------------------------------------------------------------------------


def test_router_cores_saturate_at_cores_over_cpu_per_request():
    """2 cores at 1 ms a request serve 2,000 requests/s however many are offered; the cores'
    queue grows, and the router obeys Little's law (L = lambda W) on its requests in progress."""
    routers = {"cores": 2, "cpu_per_request_us": 1000}
    light = simulate(derive(path(rate=1000, service_ms=1, routers=routers)))
    heavy = simulate(derive(path(rate=4000, service_ms=1, routers=routers, duration_s=3)))
    assert light.routers[0].utilisation == pytest.approx(0.5, rel=0.05)
    assert heavy.routers[0].utilisation == pytest.approx(1.0, abs=0.01)
    served = heavy.outcomes[200] / 3
    assert served == pytest.approx(2000, rel=0.03)
    assert heavy.routers[0].peak_queue > 1000 and max(heavy.routers[0].queue_per_bin) > 100
    assert heavy.percentile(99) > 100 * light.percentile(99)
    # Little's law holds where the router keeps up (overloaded, thousands are still inside at
    # the end, whose time the answered requests' mean does not count)
    r = light.routers[0]
    assert r.mean_in_progress == pytest.approx(r.handled / light.duration_s * r.mean_time_s, rel=0.02)
    assert r.mean_in_progress > 0.4  # mostly the 1 ms on a core, and the wait for one
    assert conserved(heavy)


def test_max_conns_skips_full_endpoints_and_answers_503_when_all_are_full():
    """Two instances, 50 ms requests at 200/s: about 10 in progress per router. With
    max_conns 3 each endpoint holds at most 3 and the rest is 503 Connection Limit Reached:
    since a request skips to any endpoint below the cap, the pair is one loss system of 6
    servers, and the share turned away is Erlang B's (insensitive to the service time's
    distribution). With max_conns 0 (no limit) nothing is turned away."""
    from test_capacity import erlang_b

    capped = simulate(derive(path(rate=200, service_ms=50, instances=2, duration_s=20,
                                  routers={"backends": {"enabled": False, "max_conns": 3}})))
    assert capped.causes["connection limit reached"] == capped.outcomes[503] > 0
    assert capped.outcomes[503] / capped.completed == pytest.approx(erlang_b(6, 200 * 0.05), rel=0.05)
    assert all(i.utilisation <= 3 / 100 + 1e-9 for i in capped.instances)
    free = simulate(derive(path(rate=200, service_ms=50, instances=2,
                                routers={"backends": {"enabled": False, "max_conns": 0}})))
    assert free.outcomes[503] == 0 and free.outcomes[200] > 0.95 * 1000
    assert conserved(capped) and conserved(free)


def test_where_an_envoy_dials_the_instances_gorouters_limits_do_not_apply():
    """cf-for-k8s's ingress gateway and BOSH's local Envoy are Envoys: no max_conns, their
    clusters' connect timeouts (MeshConfig 10 s; the BOSH add-on's 1 s), no handshake or
    route timeout."""
    for name, dial_s in (("cf-for-k8s", 10.0), ("bosh-istio", 1.0)):
        router = derive(load(bundled(name))[0]).router
        assert (router.max_conns, router.dial_timeout_s) == (0, dial_s)
        assert router.tls_timeout_s == router.request_timeout_s == float("inf")
    assert derive(load(bundled())[0]).router.max_conns == 500


def test_a_dial_that_outlasts_the_dial_timeout_fails_after_it_and_is_retried():
    """A latency spike of 6 s on router -> sidecar: every new connection times out at
    endpoint_dial_timeout (5 s) and is retried on the other instance, and ends 502; the
    endpoints are plain, so they are marked failed, never pruned (gorouter route/pool.go
    EndpointFailed prunes TLS endpoints only)."""
    s = path(rate=20, duration_s=3, routers={"max_attempts": 2, "keep_alive_to_backends": False},
             instances=2)
    s = s.model_copy(update={"faults": [Scenario.model_validate({**s.model_dump(), "faults": [
        {"kind": "latency_spike", "at_s": 0.0, "duration_s": 10.0, "hop": "router_to_sidecar",
         "extra_ms": 6000.0}]}).faults[0]]})
    m = simulate(derive(s.model_copy(update={"duration_s": 14.0,
                                             "clients": [s.clients[0].model_copy(update={"duration_s": 1.0})]})))
    assert m.causes["router dial timeout"] == m.outcomes[502] > 0
    assert m.retries > 0 and m.endpoints_pruned == 0
    assert min(m.latencies_ms) >= 5000  # the first attempt waited the whole dial timeout


def test_the_endpoint_timeout_answers_502_without_a_retry():
    """3 s requests, request_timeout_s 1: gorouter gives up at 1 s with 502, not retried; the
    app still serves the request."""
    m = simulate(derive(path(rate=10, service_ms=3000, duration_s=6,
                             routers={"request_timeout_s": 1.0, "max_attempts": 3})))
    assert m.outcomes[502] == m.causes["router endpoint timeout"] == m.completed > 0
    assert m.retries == 0
    assert max(m.latencies_ms) == pytest.approx(1000, abs=1)
    assert m.instances[0].utilisation > 0.2  # the app kept working on them


# --- clients and the load balancer ----------------------------------------------------------


def test_an_open_loop_client_times_out_without_slowing_down():
    """1 s requests, a 0.2 s client timeout: every request times out, none is answered, and
    the client keeps its rate (no coordinated omission)."""
    m = simulate(derive(path(rate=100, service_ms=1000, duration_s=4, client={"timeout_s": 0.2})))
    assert m.completed == 0 and m.timed_out + m.in_flight == m.issued
    assert m.in_flight < 0.2 * 100 * 2  # only those sent in the last 0.2 s
    assert m.causes["client timeout"] == m.timed_out
    assert m.issued == pytest.approx(400, rel=0.1)
    assert conserved(m)


def test_a_closed_loop_user_gives_up_at_the_timeout_and_sends_the_next():
    """5 users, 1 s requests, a 0.25 s timeout: each user sends one request every 0.25 s."""
    m = simulate(derive(path(duration_s=4, service_ms=1000,
                             client={"model": "closed", "users": 5, "rate_per_s": None,
                                     "timeout_s": 0.25})))
    assert m.issued == 5 * 16  # at 0, 0.25, ..., 3.75 s
    assert m.timed_out >= 5 * 15 and m.completed == 0 and conserved(m)
    waiting = simulate(derive(path(duration_s=4, service_ms=1000,
                                   client={"model": "closed", "users": 5, "rate_per_s": None})))
    assert waiting.issued <= 5 * 5 and waiting.timed_out == 0


def test_the_load_balancer_turns_away_what_it_cannot_carry():
    by_connections = simulate(derive(path(rate=200, service_ms=100, ingress={"max_connections": 5})))
    # 5 requests in progress at 100 ms each: 50 requests/s get through
    assert by_connections.outcomes[200] / 5 == pytest.approx(50, rel=0.1)
    assert by_connections.causes["load balancer connection limit"] == by_connections.outcomes[503]
    by_rate = simulate(derive(path(rate=400, service_ms=1, ingress={"max_rate_per_s": 100})))
    # 100 a second, and the bucket's first second's worth
    assert by_rate.outcomes[200] == pytest.approx(100 * 5 + 100, rel=0.02)
    assert by_rate.causes["load balancer rate limit"] == by_rate.outcomes[503] > 1000
    assert conserved(by_connections) and conserved(by_rate)


# --- Envoy ----------------------------------------------------------------------------------


def envoy_path(**kw):
    """Diego with its sidecars (TLS from the router), hops free."""
    return derive(path(proxy=True, **kw))


def test_envoy_threads_cost_what_the_calibration_measured():
    """The sidecar's worker threads are the cell's cores (the executor sets no --concurrency),
    and a request holds one for the calibrated CPU: utilisation is rate x cost / threads."""
    from simnet.model.cpu import packaged_cpu_calibration

    d = envoy_path(rate=2000, service_ms=1, cores=2)
    cal = packaged_cpu_calibration()
    assert d.envoy.workers == 2 and d.envoy.request_s == cal.service_s(d.listener_kind)
    m = simulate(d)
    [inst] = m.instances
    handshakes_s = m.connections_opened * d.envoy.handshake_s
    expected = (m.outcomes[200] * d.envoy.request_s + handshakes_s) / (2 * m.duration_s)
    assert inst.envoy_utilisation == pytest.approx(expected, rel=0.02)


def test_envoy_saturates_when_its_threads_are_the_bottleneck():
    """One thread at 1 ms a request (handshakes free, no max_conns): 1,000 requests/s
    through the sidecar at most."""
    d = envoy_path(rate=3000, service_ms=0.1, cores=1, duration_s=2,
                   routers={"backends": {"max_conns": 0}})
    d = dataclasses.replace(d, envoy=dataclasses.replace(d.envoy, request_s=0.001, handshake_s=0.0))
    m = simulate(d)
    assert m.outcomes[200] / 2 == pytest.approx(1000, rel=0.05)
    assert m.instances[0].envoy_utilisation == pytest.approx(1.0, abs=0.02)
    assert m.instances[0].envoy_peak_queue > 1000


def test_the_derived_breakers_are_the_first_threshold_and_never_overflow_a_tcp_proxy():
    """The executor's cluster: max_connections lifted, pending and requests at 1024; a Diego
    sidecar is a tcp_proxy, so only max_connections applies and nothing overflows."""
    d = envoy_path()
    assert d.envoy.breakers == CircuitBreakers(4294967295, 1024, 1024) and d.envoy.tcp_proxy
    m = simulate(d)
    assert m.instances[0].overflow == 0


def test_a_tcp_proxy_at_max_connections_closes_the_connection_and_gorouter_retries():
    d = envoy_path(rate=400, service_ms=20, instances=2,
                   routers={"max_attempts": 3, "keep_alive_to_backends": False})
    d = dataclasses.replace(d, envoy=dataclasses.replace(
        d.envoy, breakers=CircuitBreakers(3, 1024, 1024)))
    m = simulate(d)
    assert sum(i.overflow for i in m.instances) > 0
    assert m.retries > 0 and m.endpoints_pruned == 0  # IdempotentRequestEOF: retried, not pruned
    assert m.causes["envoy overflow (circuit breaker)"] == m.outcomes[502] > 0
    assert max(i.peak_connections for i in m.instances) <= 3


def test_an_http_sidecar_at_max_requests_answers_503_uo():
    d = envoy_path(rate=400, service_ms=50)
    d = dataclasses.replace(d, envoy=dataclasses.replace(
        d.envoy, tcp_proxy=False, breakers=CircuitBreakers(4294967295, 1024, 4)))
    m = simulate(d)
    [inst] = m.instances
    assert inst.overflow == m.outcomes[503] == m.causes["envoy overflow (circuit breaker)"] > 0
    assert m.retries == 0  # a 503 response is passed on, not retried by gorouter
    assert inst.utilisation <= 4 / 100 + 1e-9


# --- the whole path -------------------------------------------------------------------------


def test_the_time_breakdown_adds_up_to_the_latency():
    """With no retries, no timeouts and no failures, the parts of a request's time add up to
    its mean latency."""
    s = path(rate=300, service_ms=5, routers={"cpu_per_request_us": 200, "cores": 1},
             latency={"router_to_sidecar": {"dist": "constant", "value_ms": 1.0},
                      "tls_handshake": {"dist": "constant", "value_ms": 2.0},
                      "tcp_connect": {"dist": "constant", "value_ms": 0.5}})
    m = simulate(derive(s))
    parts = m.breakdown_ms()
    assert set(m.outcomes) == {200}
    assert sum(parts.values()) == pytest.approx(mean(m.latencies_ms), rel=0.01)
    assert parts["service"] == pytest.approx(5.0, rel=0.01)
    assert parts["cpu"] == pytest.approx(0.2, rel=0.01)
    assert parts["queueing"] > 0


def test_the_default_scenario_at_10x_and_100x_its_load():
    """Faults removed, dashboard's open-loop client at 10x and 100x: throughput plateaus at
    the modelled capacity, p99 grows, and the errors are those real limits produce."""
    s, _ = load(bundled())
    dashboard = s.app("dashboard")
    capacity = dashboard.instances * dashboard.concurrency / (dashboard.service_time.mean / 1000)
    results = {}
    for k in (1, 10, 100):
        clients = [c.model_copy(update={"rate_per_s": c.rate_per_s * k})
                   if c.host.startswith("dashboard") else c for c in s.clients]
        m = simulate(derive(s.model_copy(update={"faults": [], "clients": clients, "duration_s": 3.0})))
        served = sum(n for (_, app), n in m.served.items() if app == "dashboard") / 3.0
        results[k] = (m, served)
        assert conserved(m)
    (m1, s1), (m10, s10), (m100, s100) = results[1], results[10], results[100]
    assert s1 == pytest.approx(300, rel=0.1)  # dashboard's own load: all served
    assert s100 == pytest.approx(capacity, rel=0.05) and s10 == pytest.approx(min(capacity, 3000), rel=0.05)
    assert m1.percentile(99) < m10.percentile(99) < m100.percentile(99)
    allowed = {"app refused (accept queue full)", "connection limit reached", "dial failed"}
    assert set(m100.causes) <= allowed and m100.causes
    assert sum(i.refused for i in m100.instances) > 0


@pytest.mark.parametrize("name", sorted(p.stem for p in BUNDLED.glob("*.yaml")))
def test_every_bundled_scenario_conserves_requests_overloaded(name):
    """Every platform (Diego, cf-for-k8s, BOSH): the bundled scenario at 20x its open-loop
    load, with client timeouts and a small max_conns, faults kept."""
    s, _ = load(bundled(name))
    clients = [c.model_copy(update={"rate_per_s": c.rate_per_s * 20, "timeout_s": 0.5})
               if c.model == "open" else c.model_copy(update={"timeout_s": 0.5}) for c in s.clients]
    routers = s.routers.model_copy(update={"backends": s.routers.backends.model_copy(update={"max_conns": 8})})
    m = simulate(derive(s.model_copy(update={"clients": clients, "routers": routers,
                                             "duration_s": min(s.duration_s, 6.0)})))
    assert conserved(m)


@settings(max_examples=40)
@given(scenarios(), st.sampled_from([None, 0.05, 0.5]), st.sampled_from([0, 1, 4]),
       st.sampled_from([None, 3]), st.sampled_from([0.0, 100.0]))
def test_conservation_in_every_generated_scenario(scenario, timeout_s, max_conns, lb, cpu_us):
    """Faults included: every request issued is answered (succeeded or failed), timed out,
    or still in flight at the end, exactly once."""
    clients = [c.model_copy(update={"timeout_s": timeout_s}) for c in scenario.clients]
    routers = scenario.routers.model_copy(update={
        "cpu_per_request_us": cpu_us, "cores": 1,
        "backends": scenario.routers.backends.model_copy(update={"max_conns": max_conns})})
    ingress = scenario.ingress.model_copy(update={"max_connections": lb})
    m = simulate(derive(scenario.model_copy(update={"clients": clients, "routers": routers,
                                                    "ingress": ingress})))
    assert conserved(m)
    assert sum(m.causes.values()) == m.completed - m.outcomes[200] + m.timed_out
