"""The twin's own processes (``real/twin/main.go``) on loopback: the app's workers and accept
queue, the router's retries, pruning, limits and reloads, and the load generator's open and
closed loops. Real processes, real sockets; a refusal is observed as a closed connection, never
inferred from a timeout."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from simnet.real.processes import TwinProcess
from simnet.real.twin import twin_path

CONSTANT = {"dist": "constant"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _constant(ms: float) -> dict:
    return {**CONSTANT, "value_ms": ms}


def _app(tmp_path: Path, name: str, *, concurrency=2, queue_limit=1, service_ms=200.0,
         app="a") -> tuple[TwinProcess, int]:
    port = _port()
    config = {"listen": [f"127.0.0.1:{port}"], "app": app, "guid": f"{name}-guid",
              "concurrency": concurrency, "queue_limit": queue_limit,
              "service": _constant(service_ms), "hop": _constant(0), "seed": 1}
    return TwinProcess(twin_path(), "app", config, tmp_path, name), port


def _router(tmp_path: Path, routes: dict, *, extra: tuple[str, ...] = (),
            **settings) -> tuple[TwinProcess, int, Path]:
    port = _port()
    routes_file = tmp_path / "routes.json"
    routes_file.write_text(json.dumps(routes))
    config = {"listen": f"127.0.0.1:{port}", "routes_file": str(routes_file), "ca_file": "",
              "max_attempts": 3, "keep_alive": True, "max_idle_conns_per_backend": 100,
              "max_conns": 0, "dial_timeout_ms": 5000, "tls_handshake_timeout_ms": 10000,
              "request_timeout_ms": 900000, "balancing": "round-robin",
              "ingress_to_router": _constant(0), "router_to_sidecar": _constant(0), "seed": 2,
              **settings}
    return (TwinProcess(twin_path(), "router", config, tmp_path, "router", extra=extra), port,
            routes_file)


def _get(port: int, host: str = "x.example.com", timeout_s: float = 10.0):
    """One request: (status, headers) of the answer, or the exception that ended it. A
    timeout fails the test: it is neither an answer nor a refusal."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    except TimeoutError:
        pytest.fail(f"127.0.0.1:{port}: no answer and no close within {timeout_s} s")
    except (ConnectionError, http.client.HTTPException) as e:
        return e
    finally:
        conn.close()


def _at_once(n: int, fn) -> list:
    results: list = [None] * n
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, fn())) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_app_serves_concurrency_at_once_queues_queue_limit_and_closes_the_rest(tmp_path):
    app, port = _app(tmp_path, "app", concurrency=2, queue_limit=1, service_ms=300)
    try:
        started = time.monotonic()
        results = _at_once(6, lambda: (_get(port), time.monotonic() - started))
    finally:
        stats = app.stop()
    answered = [t for r, t in results if isinstance(r, tuple) and r[0] == 200]
    closed = [r for r, _ in results if isinstance(r, Exception)]
    assert len(answered) == 3 and len(closed) == 3, results
    assert all(isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError))
               for e in closed)
    # two served at once, the queued one after them
    assert sorted(answered)[2] >= 0.55
    assert stats["served"] == 3 and stats["refused"] == 3 and stats["peak_queue"] == 1
    assert stats["busy_s"] == pytest.approx(0.9, abs=0.1)
    assert stats["queue_s"] == pytest.approx(0.3, abs=0.1)


def test_app_answers_with_its_identity(tmp_path):
    app, port = _app(tmp_path, "billing-0", app="billing", service_ms=0)
    try:
        status, headers = _get(port, host="billing.example.com")
    finally:
        app.stop()
    assert status == 200
    assert headers["X-Simnet-App"] == "billing" and headers["X-Simnet-Guid"] == "billing-0-guid"


def test_router_retries_a_dial_failure_on_another_endpoint_and_never_prunes_a_plain_one(tmp_path):
    app, port = _app(tmp_path, "app", service_ms=0)
    dead = _port()  # nothing listens there: connection refused
    routes = {"x.example.com": [
        {"address": f"127.0.0.1:{dead}", "guid": "dead", "app": "a", "tls": False},
        {"address": f"127.0.0.1:{port}", "guid": "app-guid", "app": "a", "tls": False}]}
    router, rport, _ = _router(tmp_path, routes, max_attempts=2)
    try:
        answers = [_get(rport) for _ in range(6)]
        unknown = _get(rport, host="nowhere.example.com")
    finally:
        stats = router.stop()
        app.stop()
    assert [a[0] for a in answers] == [200] * 6
    assert unknown[0] == 404 and unknown[1]["X-Simnet-Cause"] == "unknown route"
    # a plain endpoint whose dial failed stays in the pool, marked failed: round-robin skips it
    # for 30 s (gorouter route/pool.go EndpointFailed, route/roundrobin.go), so only the first
    # request that meets it retries
    assert stats["retries"] == 1 and stats["endpoints_pruned"] == 0
    assert stats["failures"] == {"dial_failed": 1}
    assert stats["causes"] == {"unknown route": 1}


def test_router_answers_502_with_the_last_cause_once_every_endpoint_was_tried(tmp_path):
    """Two dead endpoints and max_attempts 3: gorouter tries each once and stops rather than
    try one again (routing-release gorouter proxy/round_tripper/proxy_round_tripper.go: past
    NumEndpoints attempts, a pick already in triedEndpoints breaks the loop)."""
    routes = {"x.example.com": [{"address": f"127.0.0.1:{_port()}", "guid": f"g{k}", "app": "a",
                                 "tls": False} for k in range(2)]}
    router, rport, _ = _router(tmp_path, routes, max_attempts=3)
    try:
        status, headers = _get(rport)
    finally:
        stats = router.stop()
    assert status == 502 and headers["X-Simnet-Cause"] == "dial failed"
    assert stats["retries"] == 1 and stats["outcomes"] == {"502": 1}
    assert stats["failures"] == {"dial_failed": 2}


def test_router_answers_503_at_max_conns_and_reloads_its_routes_on_sighup(tmp_path):
    app, port = _app(tmp_path, "app", concurrency=10, queue_limit=10, service_ms=400)
    routes = {"x.example.com": [{"address": f"127.0.0.1:{port}", "guid": "app-guid",
                                 "app": "a", "tls": False}]}
    router, rport, routes_file = _router(tmp_path, routes, max_conns=2)
    try:
        results = _at_once(4, lambda: _get(rport))
        routes_file.write_text(json.dumps({"y.example.com": routes["x.example.com"]}))
        router.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _get(rport, host="y.example.com")[0] != 200:
            assert time.monotonic() < deadline, "the router never took the new table"
            time.sleep(0.05)
        gone = _get(rport)
    finally:
        stats = router.stop()
        app.stop()
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 503, 503], results
    assert {r[1].get("X-Simnet-Cause") for r in results if r[0] == 503} == {
        "connection limit reached"}
    assert gone[0] == 404 and stats["reloads"] >= 2


def test_router_counts_from_its_reset_and_adds_a_latency_spike_both_ways(tmp_path):
    """SIGUSR1 (the run's time 0, after the warm-up) zeroes the counters but keeps the pool the
    warm-up built; SIGUSR2 re-reads the extra delay per hop that a latency_spike sets, slept
    there and back."""
    app, port = _app(tmp_path, "app", service_ms=0)
    extras = tmp_path / "extras.json"
    routes = {"x.example.com": [{"address": f"127.0.0.1:{port}", "guid": "app-guid",
                                 "app": "a", "tls": False}]}
    router, rport, _ = _router(tmp_path, routes, extra=("--extras", str(extras)))

    def timed() -> float:
        t0 = time.monotonic()
        assert _get(rport)[0] == 200
        return time.monotonic() - t0
    try:
        before = [timed() for _ in range(3)]
        router.signal(signal.SIGUSR1)
        extras.write_text(json.dumps({"router_to_sidecar": 150.0}))
        router.signal(signal.SIGUSR2)
        time.sleep(0.2)
        spiked = timed()
        extras.write_text(json.dumps({"router_to_sidecar": 0.0}))
        router.signal(signal.SIGUSR2)
        time.sleep(0.2)
        after = timed()
    finally:
        stats = router.stop()
        app.stop()
    assert max(before) < 0.1 and after < 0.1
    assert spiked >= 0.3  # 150 ms on the way to the sidecar and 150 ms back
    assert stats["handled"] == 2 and stats["outcomes"] == {"200": 2}
    assert stats["connections_opened"] == 0  # the connection kept alive before the reset


def _load(tmp_path: Path, port: int, clients: list[dict], duration_s: float,
          warmup_s: float = 0.0) -> dict:
    config = {"target": f"127.0.0.1:{port}", "duration_s": duration_s, "seed": 9,
              "clients": [{"name": f"c{k}", "host": "x.example.com", "rate_per_s": 0, "users": 0,
                           "think_time": _constant(0), "keep_alive": True, "timeout_s": None,
                           "start_s": 0, "duration_s": None, "client_to_ingress": _constant(0),
                           **c} for k, c in enumerate(clients)]}
    load = TwinProcess(twin_path(), "load", config, tmp_path, "load",
                       extra=("--start-at", f"{time.time() + 0.3 + warmup_s:.6f}",
                              "--warmup-s", f"{warmup_s:g}"))
    assert load.wait(duration_s + warmup_s + 40) == 0, load.log()
    return json.loads(load.stats_file.read_text())


def test_open_loop_keeps_sending_and_charges_the_wait_to_the_answer(tmp_path):
    """An overloaded app (one worker, 50 ms each, 40 requests/s offered): the open-loop client
    does not slow down (no coordinated omission), so latency measured from the intended send
    time grows with the queue."""
    app, port = _app(tmp_path, "app", concurrency=1, queue_limit=1000, service_ms=50)
    try:
        out = _load(tmp_path, port, [{"model": "open", "rate_per_s": 40}], duration_s=2)
    finally:
        app.stop()
    requests = out["requests"]
    intended = [r[1] for r in requests]
    assert 50 <= len(requests) <= 110  # Poisson(80)
    assert intended == sorted(intended) and 0 <= intended[0] and intended[-1] < 2
    assert out["send_lag_ms"]["p99"] < 20
    latencies = [r[3] for r in requests]
    # offered 2 workers' worth: the last answers waited for a queue of about half the requests
    assert max(latencies) > 0.4 * len(requests) * 50
    assert all(r[4] == 200 for r in requests)


def test_the_warm_up_ramps_the_load_and_is_not_recorded(tmp_path):
    """Before time 0 the load grows from nothing to the whole (emulate.run WARMUP_S: pools grow
    with the load, no burst of handshakes at once): an open-loop client at 200/s over a 2 s
    warm-up sends about 200 there (half of 400), a closed-loop user joins one after another;
    none of it is recorded."""
    app, port = _app(tmp_path, "app", concurrency=50, queue_limit=1000, service_ms=0)
    try:
        out = _load(tmp_path, port, [{"model": "open", "rate_per_s": 200},
                                     {"model": "closed", "users": 4,
                                      "think_time": _constant(100)}],
                    duration_s=1, warmup_s=2)
    finally:
        stats = app.stop()
    recorded = len(out["requests"])
    assert all(r[1] >= 0 for r in out["requests"])
    open_recorded = sum(1 for r in out["requests"] if r[0] == 0)
    assert 140 <= open_recorded <= 260  # Poisson(200) in the run's second
    # closed users: ~10 requests/s each; joining at -2, -1.5, -1, -0.5 s: ~50 in the warm-up
    warm = stats["served"] - recorded
    assert 200 + 25 <= warm <= 200 + 60 + 90, (warm, stats)  # ~250; unramped: ~480


def test_closed_loop_users_wait_for_their_answer_and_time_out_as_an_outcome(tmp_path):
    app, port = _app(tmp_path, "app", concurrency=1, queue_limit=100, service_ms=300)
    try:
        out = _load(tmp_path, port, [{"model": "closed", "users": 2, "timeout_s": 0.45}],
                    duration_s=2)
    finally:
        app.stop()
    statuses = [r[4] for r in out["requests"]]
    # one worker for two users: the first is served in 300 ms, the second waits 600 > 450 ms
    # and gives up; the app still serves what was given up, so the queue never clears
    assert statuses.count(200) >= 1 and statuses.count(0) >= 2
    timed_out = [r for r in out["requests"] if r[4] == 0]
    assert {r[5] for r in timed_out} == {"timeout"}
    assert all(r[3] == pytest.approx(450) for r in timed_out)
    # a user's next request starts after its previous one ended: at most 2 in flight
    spans = sorted((r[1], r[1] + r[3] / 1000) for r in out["requests"])
    for k, (start, _) in enumerate(spans):
        assert sum(1 for s, e in spans[:k] if e > start + 1e-3) <= 1
