"""App capacity in the simulator, held to queueing theory.

One instance with ``concurrency`` workers and an accept queue of ``queue_limit`` places is an
M/G/c/c+K queue when its client is open-loop Poisson and every hop costs nothing. So:
- M/M/c with a long queue: the mean sojourn time is Erlang C's, W = C(c, a) / (c mu - lambda)
  + 1/mu (a = lambda/mu);
- M/D/1: the mean wait is Pollaczek-Khinchine's, Wq = rho D / (2 (1 - rho)), and the share of
  requests that never wait is 1 - rho;
- M/M/c/c (no queue, no retry): the share refused is Erlang B's, B(c, a).
Each is checked against a 99.9% confidence interval from independent replications (seeds) of
the simulation itself, so a true model fails by chance once in a thousand, and the seeds are
fixed: the test is deterministic.
"""

from __future__ import annotations

import math
from statistics import mean, stdev

import pytest
from scipy import stats

from simnet.lenses import derive, simulate
from simnet.scenario.schema import Scenario

ZERO = {"dist": "constant", "value_ms": 0.0}
REPLICATIONS = 8


def queue(c: int, rate: float, service: dict, *, queue_limit: int = 100_000, seed: int = 1,
          duration_s: float = 60.0, attempts: int = 1) -> Scenario:
    """One instance behind one router, every hop, handshake and router core free (no Envoy):
    only the app costs time."""
    return Scenario.model_validate({
        "name": "queue", "seed": seed, "duration_s": duration_s,
        "cells": {"count": 1, "memory_mb": 4096},
        "proxy": {"enabled": False},
        "routers": {"count": 1, "max_attempts": attempts, "backends": {"enabled": False},
                    "cpu_per_request_us": 0, "cpu_per_handshake_us": 0},
        "latency": {hop: ZERO for hop in ("client_to_ingress", "ingress_to_router",
                                          "router_to_sidecar", "sidecar_to_app", "tcp_connect",
                                          "tls_handshake")},
        "apps": [{"name": "app", "concurrency": c, "queue_limit": queue_limit,
                  "service_time": service}],
        "routes": [{"host": "app.example.com", "app": "app"}],
        "clients": [{"host": "app.example.com", "rate_per_s": rate}],
    })


def runs(**kw):
    return [simulate(derive(queue(seed=seed, **kw))) for seed in range(1, REPLICATIONS + 1)]


def interval(values: list[float], confidence: float = 0.999) -> tuple[float, float]:
    """The t confidence interval of the mean of independent replications."""
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * stdev(values) / math.sqrt(len(values))
    return mean(values) - half, mean(values) + half


def erlang_c(c: int, a: float) -> float:
    """The probability that an arrival waits in M/M/c with offered load a = lambda/mu < c."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


def erlang_b(c: int, a: float) -> float:
    """The probability that an arrival finds all c servers busy in M/M/c/c."""
    top = a ** c / math.factorial(c)
    return top / sum(a ** k / math.factorial(k) for k in range(c + 1))


@pytest.mark.parametrize("c, rate", [(1, 70.0), (4, 300.0), (8, 700.0)])
def test_mean_sojourn_is_erlang_cs(c, rate):
    mu = 100.0  # exponential service, mean 10 ms
    a = rate / mu
    expected_ms = (erlang_c(c, a) / (c * mu - rate) + 1 / mu) * 1000
    observed = [mean(m.latencies_ms) for m in runs(c=c, rate=rate,
                                                   service={"dist": "exponential", "mean_ms": 10})]
    low, high = interval(observed)
    assert low <= expected_ms <= high, (expected_ms, low, high)
    # and the queue is really there: far from the 10 ms an unlimited app would give
    assert mean(observed) > 10 * (1 + 0.5 * erlang_c(c, a))


def test_mean_wait_is_pollaczek_khinchines_for_deterministic_service():
    d_ms, rate = 8.0, 90.0
    rho = rate * d_ms / 1000
    expected_wait_ms = rho * d_ms / (2 * (1 - rho))
    ms = runs(c=1, rate=rate, service={"dist": "constant", "value_ms": d_ms})
    waits = [mean(m.latencies_ms) - d_ms for m in ms]
    low, high = interval(waits)
    assert low <= expected_wait_ms <= high, (expected_wait_ms, low, high)
    # an arrival finds the worker free with probability 1 - rho (PASTA)
    never_waited = [sum(1 for x in m.latencies_ms if x <= d_ms + 1e-9) / len(m.latencies_ms)
                    for m in ms]
    low, high = interval(never_waited)
    assert low <= 1 - rho <= high, (1 - rho, low, high)


def test_share_refused_without_a_queue_is_erlang_bs():
    """No accept queue and no retry: an arrival that finds every worker busy is refused (the
    router sees a dial error: 502)."""
    c, rate, mu = 3, 250.0, 100.0
    ms = runs(c=c, rate=rate, queue_limit=0, service={"dist": "exponential", "mean_ms": 10})
    refused = [m.outcomes[502] / m.completed for m in ms]
    low, high = interval(refused)
    assert low <= erlang_b(c, rate / mu) <= high, (erlang_b(c, rate / mu), low, high)
    for m in ms:  # the refusals are the app's, counted on its instance
        assert m.instances[0].refused == m.outcomes[502] > 0
        assert m.instances[0].peak_queue == 0


def test_a_refused_request_is_retried_on_another_instance():
    """gorouter retries a dial error on another endpoint: with two instances and three
    attempts almost nothing a lone instance would refuse is lost, and the retries show."""
    s = queue(2, 250.0, {"dist": "exponential", "mean_ms": 10}, queue_limit=0, attempts=3)
    s = s.model_copy(update={"apps": [s.apps[0].model_copy(update={"instances": 2})]})
    m = simulate(derive(s))
    refused = sum(i.refused for i in m.instances)
    assert refused > 0 and m.retries >= refused - m.outcomes[502]
    assert m.outcomes[502] < refused  # most refusals found a free worker on the other instance


def test_the_queue_is_bounded_by_queue_limit():
    m = simulate(derive(queue(1, 150.0, {"dist": "constant", "value_ms": 10}, queue_limit=5)))
    inst = m.instances[0]
    assert inst.peak_queue == 5 and inst.refused > 0
    # a request waits at most queue_limit service times, plus its own
    assert max(m.latencies_ms) <= 10 * (5 + 1) + 1e-6
    assert m.issued == m.completed + m.in_flight


def test_requests_waiting_when_the_instance_dies_are_answered_not_lost():
    """A crash takes the app's workers and its accept queue with it: every request that was
    waiting is answered (502, the instance died mid-request), none stays in flight forever."""
    s = queue(1, 150.0, {"dist": "constant", "value_ms": 10}, queue_limit=50, duration_s=6.0)
    s = Scenario.model_validate({**s.model_dump(), "faults": [
        {"kind": "kill", "at_s": 2.0, "app": "app", "instance": 0, "restart_after_s": 1.0}]})
    m = simulate(derive(s))
    assert m.instances[0].peak_queue == 50  # overloaded: the queue was full when it died
    assert m.outcomes[502] >= 50
    # at the end only what the restarted instance holds can still be in flight
    assert m.in_flight <= 1 + 50
    assert m.issued == m.completed + m.in_flight


def test_a_request_in_flight_on_a_dying_instance_is_retried_on_another():
    """gorouter retries an idempotent request whose backend connection ends before an answer
    (routing-release, gorouter proxy/round_tripper/proxy_round_tripper.go ``isRetriable``:
    ``io.EOF`` on an idempotent request becomes ``IdempotentRequestEOFError``, retriable; the
    endpoint is not pruned). Every request in flight on the killed instance is answered by the
    other one: no 502, each one a retry. The emulated twin showed it: the simulator used to
    answer them 502 where the real round trip retried."""
    s = queue(40, 400.0, {"dist": "constant", "value_ms": 50}, duration_s=4.0, attempts=3)
    data = s.model_dump()
    data["apps"][0]["instances"] = 2
    data["faults"] = [{"kind": "kill", "at_s": 2.0, "app": "app", "instance": 0,
                       "restart_after_s": 1.0}]
    m = simulate(derive(Scenario.model_validate(data)))
    assert m.retries > 0
    assert m.outcomes.get(502, 0) == 0 and m.outcomes[200] == m.completed
    assert m.issued == m.completed + m.in_flight


def two_instances(**kw) -> dict:
    data = queue(4, 1.0, {"dist": "constant", "value_ms": 10}, **kw).model_dump()
    data["apps"][0]["instances"] = 2
    return data


def test_gorouters_round_robin_starts_at_a_random_instance():
    """routing-release gorouter route/pool.go ``NextIndex``: a pool's first turn is
    ``p.random.Intn(len(p.endpoints))``, so the first request of a run does not always go to
    the first instance. One request per run (one user, thinking past the run's end)."""
    first = set()
    for seed in range(1, 13):
        data = two_instances(seed=seed, duration_s=1.0)
        data["clients"] = [{"host": "app.example.com", "model": "closed", "users": 1,
                            "think_time": {"dist": "constant", "value_ms": 5000}}]
        m = simulate(derive(Scenario.model_validate(data)))
        assert m.issued == 1
        first |= {i.index for i in m.instances if i.utilisation > 0}
    assert first == {0, 1}


def test_gorouter_stops_once_every_endpoint_was_tried():
    """Both instances killed and still routed to: each request tries each once, then gorouter
    stops with the last cause (routing-release gorouter proxy/round_tripper/
    proxy_round_tripper.go: past NumEndpoints attempts, a pick already in triedEndpoints breaks
    the loop), though max_attempts is 3."""
    data = two_instances(duration_s=3.0, attempts=3)
    data["clients"][0]["rate_per_s"] = 50.0
    data["faults"] = [{"kind": "kill", "at_s": 1.0, "app": "app", "instance": k,
                       "restart_after_s": 10.0} for k in (0, 1)]
    data["routers"]["route_propagation_delay_s"] = 30.0  # the routes keep both
    m = simulate(derive(Scenario.model_validate(data)))
    failed = m.outcomes[502]
    assert failed > 20 and m.causes["dial failed"] == failed
    assert m.retries == failed  # one retry each: two attempts, not three


def test_gorouter_skips_a_plain_endpoint_that_failed_for_30_s():
    """A failed dial to a plain endpoint marks it failed, not pruned (gorouter route/pool.go
    EndpointFailed: only TLS endpoints are pruned); round-robin skips it for
    droplet_stale_threshold / 4 = 30 s (registry/registry.go RetryAfterFailure,
    route/roundrobin.go). So one retry finds it dead (and one more, for a request in flight
    when it died), and the requests after it go to the other instance at once, not one retry
    for every other request."""
    data = two_instances(duration_s=4.0, attempts=3)
    data["clients"][0]["rate_per_s"] = 50.0
    data["faults"] = [{"kind": "kill", "at_s": 1.0, "app": "app", "instance": 0,
                       "restart_after_s": 10.0}]
    data["routers"]["route_propagation_delay_s"] = 30.0  # the route keeps the dead one
    m = simulate(derive(Scenario.model_validate(data)))
    assert set(m.outcomes) == {200} and m.outcomes[200] > 100
    assert m.retries <= 2 and m.endpoints_pruned == 0


def test_the_default_scenario_saturates_at_its_modelled_capacity():
    """Dashboard at 100x its load: throughput plateaus at instances x concurrency / mean
    service time, p99 grows, and the errors are the app's refusals (502)."""
    from simnet.lenses import load
    from simnet.scenario.load import bundled

    s, _ = load(bundled())
    dashboard = s.app("dashboard")
    mean_service_s = (dashboard.service_time.median_ms / 1000
                      * math.exp(dashboard.service_time.sigma ** 2 / 2))
    capacity = dashboard.instances * dashboard.concurrency / mean_service_s

    def at(k: int):
        clients = [c.model_copy(update={"rate_per_s": c.rate_per_s * k})
                   if c.host.startswith("dashboard") else c for c in s.clients]
        m = simulate(derive(s.model_copy(update={"faults": [], "clients": clients,
                                                  "duration_s": 4.0})))
        served = sum(n for (_, app), n in m.served.items() if app == "dashboard") / 4.0
        return m, served

    base, base_served = at(1)
    loaded, served = at(100)
    assert 300 * 100 > capacity and served == pytest.approx(capacity, rel=0.05)
    assert base.percentile(99) < loaded.percentile(99)
    assert base.outcomes.get(502, 0) == 0 and loaded.outcomes[502] > 0
    refused = sum(i.refused for i in loaded.instances if i.app == "dashboard")
    assert refused >= loaded.outcomes[502]
    assert base_served == pytest.approx(300, rel=0.1)


def test_offered_load_is_split_as_the_routers_split_it():
    """gorouter round-robins over every endpoint of a host; the Istio gateway picks a
    destination by weight, then a pod."""
    from simnet.model.capacity import app_capacity_per_s, offered_load
    from simnet.scenario.load import load_text

    diego, _ = load_text("""
name: shared-host
cells: {count: 2, memory_mb: 8192}
apps:
  - {name: a, instances: 3, concurrency: 2, service_time: {dist: exponential, mean_ms: 20}}
  - {name: b, instances: 1}
routes: [{host: h.example.com, app: a}, {host: h.example.com, app: b}]
clients: [{host: h.example.com, rate_per_s: 400}, {host: h.example.com, model: closed, users: 5}]
""")
    loads = {x.app: x for x in offered_load(derive(diego))}
    assert loads["a"].offered_per_s == pytest.approx(300) and loads["b"].offered_per_s == pytest.approx(100)
    assert loads["a"].capacity_per_s == app_capacity_per_s(diego.app("a")) == pytest.approx(300)
    assert loads["a"].instances_needed == 4  # at exactly 300/s it would be saturated
    istio, _ = load_text("""
name: weighted
platform: istio
ingress: {kind: istio_gateway}
cells: {count: 2, memory_mb: 8192}
apps: [{name: a, instances: 3}, {name: b, instances: 1}]
routes: [{host: h.example.com, app: a, weight: 80}, {host: h.example.com, app: b, weight: 20}]
clients: [{host: h.example.com, rate_per_s: 1000}]
""")
    loads = {x.app: x.offered_per_s for x in offered_load(derive(istio))}
    assert loads == pytest.approx({"a": 800, "b": 200})


def test_what_analyze_calls_over_capacity_the_simulator_refuses():
    """SIM0014's scenario, simulated: it refuses requests; with the instances the finding
    names it serves everything."""
    from pathlib import Path

    from simnet.lenses import load
    from simnet.model.capacity import offered_load

    s, _ = load(Path(__file__).parent / "analyze" / "sim0014-app-over-capacity.yaml")
    s = s.model_copy(update={"duration_s": 5.0})
    over = simulate(derive(s))
    assert sum(i.refused for i in over.instances) > 0 and over.outcomes[502] > 0
    [needed] = [x.instances_needed for x in offered_load(derive(s))]
    enough = s.model_copy(update={"apps": [s.apps[0].model_copy(update={"instances": needed})]})
    m = simulate(derive(enough))
    assert sum(i.refused for i in m.instances) == 0 and set(m.outcomes) == {200}


def test_utilisation_and_mean_queue_obey_littles_law():
    """Per instance, the time-average queue is the arrival rate times the mean wait
    (L = lambda W, which holds on every sample path up to the requests still waiting at the
    end), and the workers' utilisation is rho = lambda D."""
    d_ms, rate = 8.0, 90.0
    ms = runs(c=1, rate=rate, service={"dist": "constant", "value_ms": d_ms})
    for m in ms:
        inst = m.instances[0]
        arrivals = m.completed / m.duration_s
        wait_s = (mean(m.latencies_ms) - d_ms) / 1000
        assert inst.mean_queue == pytest.approx(arrivals * wait_s, rel=0.02)
        assert inst.utilisation == pytest.approx(arrivals * d_ms / 1000, rel=0.02)
    low, high = interval([m.instances[0].utilisation for m in ms])
    assert low <= rate * d_ms / 1000 <= high
    summary = ms[0].summary()["instances"][0]
    assert summary["utilisation"] == round(ms[0].instances[0].utilisation, 6)


def test_the_capacity_planning_sweep_names_the_instances_that_hold_the_target(tmp_path):
    """The bundled sizing question: 2,000 requests/s at p99 < 100 ms and < 0.1% errors. Below
    capacity the app refuses and achieved throughput stays at its capacity; the fewest
    instances that hold the target are the sweep's best setting."""
    from simnet import __version__
    from simnet.model.capacity import app_capacity_per_s
    from simnet.report.sweep import best_point, point_results
    from simnet.scenario.load import bundled
    from simnet.sweep.executors import LocalExecutor
    from simnet.sweep.run import run
    from simnet.sweep.source import checked_points, sweep_source
    from simnet.sweep.store import Store

    s, data, source = sweep_source(bundled("capacity-planning"))
    with Store(tmp_path / "sweep.sqlite", __version__) as store:
        list(run(data, checked_points(s, data, source), store, LocalExecutor(1)))
        rows = store.rows()
    points = point_results(rows, list(s.sweep.parameters))
    best = best_point(points, s.sweep)
    assert best is not None and best.params == {"apps.0.instances": 6}
    app = s.app("checkout")
    for r in rows:
        n = r["apps.0.instances"]
        capacity = app_capacity_per_s(app, n)
        if capacity < 2000:  # over capacity: throughput plateaus at it, the rest is refused
            assert r["throughput_per_s"] == pytest.approx(capacity, rel=0.03)
            assert r["refused"] > 0 and r["error_rate"] > 0.01
        else:
            assert r["refused"] == 0 and r["throughput_per_s"] == pytest.approx(r["offered_per_s"], rel=0.02)


def test_a_request_that_arrives_as_the_instance_dies_takes_no_worker_from_its_successor():
    """Found in review: a request on its way in when the instance crashed took a worker of the
    restarted one for good. With one worker the restarted instance must still serve."""
    s = queue(1, 80.0, {"dist": "constant", "value_ms": 5}, queue_limit=10, duration_s=6.0)
    s = Scenario.model_validate({**s.model_dump(), "latency": {
        **s.model_dump()["latency"], "sidecar_to_app": {"dist": "constant", "value_ms": 3.0}},
        "faults": [{"kind": "kill", "at_s": 2.0, "app": "app", "instance": 0,
                    "restart_after_s": 0.5}]})
    m = simulate(derive(s))
    failed_after = sum(1 for t in m.failures.get(("app.example.com", 502), ()) if t > 3.0)
    assert failed_after == 0 and m.instances[0].refused == 0
    assert m.outcomes[200] > 0.9 * 80 * 5  # about every request but those around the crash
