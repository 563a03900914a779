"""Requests simulated per wall-clock second with contention on: simnet vs a bare-SimPy model.

Four instances of an app with 8 workers each (exponential service, mean 5 ms) behind one
router with 2 cores (150 us of CPU a request), each instance behind its Envoy sidecar (4
worker threads, the calibrated CPU per request; TLS from the router, kept alive), offered
5,000 requests/s (app utilisation 0.78: requests do queue). The bare model is the leanest
SimPy program for the same work: the router's cores, each sidecar's threads and each
instance's workers a ``simpy.Resource`` of the same capacity, round-robin over the instances,
the same hop timeouts and draws, nothing else (not even the few TLS handshakes that fill the
router's connection pool: the bare model does slightly less work). Both
run in this process, interleaved, best of several repeats; the ratio is what issue 18 asks
for (>= 1.0). Then each size runs in a fresh subprocess: wall time growth from 10^5 to 10^6
requests and peak RSS.

    python bench/bench_capacity.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys

import simpy
from bench_sim import poisson, timed  # this folder is on sys.path when a bench runs

RATE = 5_000.0
INSTANCES, WORKERS = 4, 8
HOPS_MS = {"client_to_ingress": 1.0, "router_to_sidecar": 0.3, "sidecar_to_app": 0.05}
SERVICE_MS = 5.0
ROUTER_CORES, ROUTER_CPU_US = 2, 150.0
ENVOY_THREADS = 4  # cells.cores' default: the executor starts Envoy without --concurrency


def scenario(requests: int):
    from simnet.scenario.schema import Scenario

    exp = lambda ms: {"dist": "exponential", "mean_ms": ms}  # noqa: E731
    return Scenario.model_validate({
        "name": "bench-capacity", "seed": 1, "duration_s": requests / RATE,
        "time_bin_s": max(1.0, requests / RATE / 100),
        "cells": {"count": 4, "memory_mb": 8192, "cores": ENVOY_THREADS},
        "apps": [{"name": "app", "instances": INSTANCES, "service_time": exp(SERVICE_MS),
                  "concurrency": WORKERS, "queue_limit": 100_000}],
        "routes": [{"host": "app.example.com", "app": "app"}],
        "routers": {"count": 1, "cores": ROUTER_CORES, "cpu_per_request_us": ROUTER_CPU_US,
                    "backends": {"max_conns": 0}},
        "ingress": {"kind": "none"},
        "clients": [{"host": "app.example.com", "rate_per_s": RATE}],
        "latency": {"client_to_ingress": exp(HOPS_MS["client_to_ingress"]),
                    "ingress_to_router": {"dist": "constant", "value_ms": 0},
                    "router_to_sidecar": exp(HOPS_MS["router_to_sidecar"]),
                    "sidecar_to_app": exp(HOPS_MS["sidecar_to_app"]),
                    "tcp_connect": {"dist": "constant", "value_ms": 0},
                    "tls_handshake": {"dist": "constant", "value_ms": 0}},
    }, strict=True)


def run_simnet(requests: int) -> int:
    from simnet.lenses import derive, simulate

    return simulate(derive(scenario(requests))).completed


def run_bare(requests: int) -> int:
    """The same work in plain SimPy: a Resource for the router's cores, each sidecar's threads
    and each instance's workers, round-robin, the same hops."""
    from simnet.model.cpu import packaged_cpu_calibration

    envoy_s = packaged_cpu_calibration().service_s("tls")
    router_s = ROUTER_CPU_US / 1e6
    env = simpy.Environment()
    rng = random.Random(1)
    duration = requests / RATE
    c2r, r2s, s2a, svc = (1000 / HOPS_MS["client_to_ingress"], 1000 / HOPS_MS["router_to_sidecar"],
                          1000 / HOPS_MS["sidecar_to_app"], 1000 / SERVICE_MS)
    expo = rng.expovariate
    apps = [simpy.Resource(env, capacity=WORKERS) for _ in range(INSTANCES)]
    envoys = [simpy.Resource(env, capacity=ENVOY_THREADS) for _ in range(INSTANCES)]
    cores = simpy.Resource(env, capacity=ROUTER_CORES)
    latencies = []
    turn = [0]

    def request():
        t0 = env.now
        up = expo(c2r)
        yield env.timeout(up)
        with cores.request() as core:
            yield core
            yield env.timeout(router_s)
        out = expo(r2s)
        yield env.timeout(out)
        k = turn[0] % INSTANCES
        turn[0] += 1
        with envoys[k].request() as thread:
            yield thread
            yield env.timeout(envoy_s)
        inner, service = expo(s2a), expo(svc)
        yield env.timeout(inner)
        with apps[k].request() as worker:
            yield worker
            yield env.timeout(service)
        yield env.timeout(up + out + inner)
        latencies.append((env.now - t0) * 1000)

    env.process(poisson(env, expo, RATE, duration, request))
    env.run(until=duration)
    return len(latencies)


def child(kind: str, requests: int) -> None:
    fn = run_simnet if kind == "simnet" else run_bare
    fn(200)
    wall, done = timed(fn, requests)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": kind, "requests": done, "wall_s": wall, "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    n, repeats = (20_000, 3) if args.quick else (100_000, 5)
    run_simnet(2_000), run_bare(2_000)
    best = {"simnet": math.inf, "bare": math.inf}
    done = {}
    for _ in range(repeats):
        for kind, fn in (("bare", run_bare), ("simnet", run_simnet)):
            wall, done[kind] = timed(fn, n)
            best[kind] = min(best[kind], wall)
    rate = {k: done[k] / best[k] for k in best}
    print(f"contention on (router {ROUTER_CORES} cores, {INSTANCES} sidecars x {ENVOY_THREADS} "
          f"threads, {INSTANCES} instances x {WORKERS} workers, app utilisation "
          f"{RATE * SERVICE_MS / 1000 / (INSTANCES * WORKERS):.2f}), {n:,} requests, best of {repeats}:")
    print(f"  bare SimPy (Resources) : {rate['bare']:>10,.0f} requests/s")
    print(f"  simnet                 : {rate['simnet']:>10,.0f} requests/s")
    print(f"  ratio simnet/bare = {rate['simnet'] / rate['bare']:.3f}  (target >= 1.0)")
    sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    print("simnet in a fresh process per size:")
    rows = []
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", "simnet", str(size)],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout)
        rows.append(r)
        print(f"  {r['requests']:>9,} requests: {r['wall_s']:6.2f} s wall, "
              f"{r['wall_s'] / r['requests'] * 1e6:5.1f} us/request, peak RSS {r['peak_rss_mb']:.0f} MB")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"  per-request cost grows x{(b['wall_s'] / b['requests']) / (a['wall_s'] / a['requests']):.2f} "
              f"from {a['requests']:,} to {b['requests']:,} requests (1.00 = linear)")


if __name__ == "__main__":
    main()
