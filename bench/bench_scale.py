"""One scenario at scale: 100 cells, 1,000 app instances, up to 10^6 requests.

Ten apps of 100 instances each on 100 Diego cells, four routers, every app behind its own route
and its own open-loop client; the total request rate is fixed and the simulated duration grows
with the request count. Each size runs in a fresh process (best wall time of ``--repeats``;
peak RSS from the kernel), so the cost per request at 10^4, 10^5 and 10^6 requests shows
whether cost grows linearly with requests (issue 7).

    python bench/bench_scale.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CELLS, APPS, INSTANCES_PER_APP = 100, 10, 100
RATE = 20_000.0  # requests per simulated second, over all clients


def scenario(requests: int):
    from simnet.scenario.schema import Scenario

    exp = lambda ms: {"dist": "exponential", "mean_ms": ms}  # noqa: E731
    apps = [f"app-{k}" for k in range(APPS)]
    return Scenario.model_validate({
        "name": "bench-scale", "seed": 1, "duration_s": requests / RATE,
        "time_bin_s": max(1.0, requests / RATE / 100),
        "cells": {"count": CELLS, "memory_mb": 32768},
        "apps": [{"name": a, "instances": INSTANCES_PER_APP, "service_time": exp(5.0)} for a in apps],
        "routes": [{"host": f"{a}.example.com", "app": a} for a in apps],
        "routers": {"count": 4},
        "clients": [{"host": f"{a}.example.com", "rate_per_s": RATE / APPS} for a in apps],
        "latency": {"client_to_ingress": exp(1.0), "router_to_sidecar": exp(0.3),
                    "sidecar_to_app": exp(0.05)},
    }, strict=True)


def child(requests: int) -> None:
    from simnet.model.deployment import derive
    from simnet.sim.run import simulate

    simulate(derive(scenario(200)))  # imports and first-call set-up stay out of the timing
    t0 = time.perf_counter()
    d = derive(scenario(requests))
    m = simulate(d)
    wall = time.perf_counter() - t0
    print(json.dumps({"requests": m.completed, "issued": m.issued, "wall_s": wall,
                      "instances": len(d.instances), "cells": len({i.cell for i in d.instances}),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measured(requests: int, repeats: int) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", str(requests)],
                                      check=True, capture_output=True, text=True).stdout)
            for _ in range(repeats)]
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10^4 and 10^5 requests only")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    sizes = [10_000, 100_000] + ([] if args.quick else [1_000_000])
    rows = [measured(n, args.repeats) for n in sizes]
    first, last = rows[-2], rows[-1]  # 10^4 is mostly set-up: compare the two largest
    growth = (last["wall_s"] / last["requests"]) / (first["wall_s"] / first["requests"])
    result = {"cells": last["cells"], "instances": last["instances"], "rows": rows,
              "cost_per_request_growth": round(growth, 3)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{last['cells']} cells, {last['instances']:,} app instances, {RATE:,.0f} requests/s "
          f"simulated (fresh process per size, best of {args.repeats}):")
    print(f"  {'requests':>10} {'wall s':>8} {'µs/req':>7} {'peak MB':>8}")
    for r in rows:
        print(f"  {r['requests']:>10,} {r['wall_s']:>8.2f} {1e6 * r['wall_s'] / r['requests']:>7.2f} "
              f"{r['peak_rss_mb']:>8.0f}")
    print(f"  cost per request at {last['requests']:,} vs {first['requests']:,}: x{growth:.2f} "
          "(1.0 = linear in requests; below 1: fixed set-up cost spread thinner)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
