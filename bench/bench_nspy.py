"""Simulation cost per request: simnet vs ns.py (a SimPy packet simulator) on the same 4-hop path.

simnet runs bench_sim's scenario; ns.py runs a DistPacketGenerator with the same Poisson arrivals
into four Wires whose exponential delays have the same means (client->router, router->sidecar,
sidecar->app, service time), then a PacketSink, for the same simulated time, so both draw the same
delays for about the same number of requests. The work is not identical: simnet simulates a round
trip with routing, pools and metrics, ns.py forwards one packet one way, and its Wires deliver in
order, so a packet already overdue behind a slower one skips its own timeout (hence its longer
mean latency in the table).

    python bench/bench_nspy.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import simpy

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # bench_sim
from bench_sim import HOPS_MS, RATE, SERVICE_MS, run_simnet, scenario  # noqa: E402

MEANS_MS = (HOPS_MS["client_to_ingress"], HOPS_MS["router_to_sidecar"],
            HOPS_MS["sidecar_to_app"], SERVICE_MS)


def nspy_pipeline(requests: int):
    """Generator -> 4 Wires -> sink, times in seconds, every element's debug printing off."""
    from ns.packet.dist_generator import DistPacketGenerator
    from ns.packet.sink import PacketSink
    from ns.port.wire import Wire

    env = simpy.Environment()
    expo = random.Random(1).expovariate
    duration = requests / RATE
    gen = DistPacketGenerator(env, "client", lambda: expo(RATE), lambda: 1000,  # size unused
                              finish=duration, debug=False)
    wires = [Wire(env, lambda rate=1000 / ms: expo(rate), wire_id=k, debug=False)
             for k, ms in enumerate(MEANS_MS)]
    sink = PacketSink(env, debug=False)  # records waits and arrivals, as simnet records latencies
    for src, dst in zip([gen, *wires], [*wires, sink]):
        src.out = dst
    assert not any(e.debug for e in (gen, *wires, sink))
    env.run(until=duration)
    return sink


def run_nspy(requests: int) -> int:
    return sum(nspy_pipeline(requests).packets_received.values())


def timed(fn, requests: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    done = fn(requests)
    return time.perf_counter() - t0, done


def work_done(requests: int) -> dict:
    """Untimed: SimPy events scheduled per request and mean end-to-end latency, for each."""
    from simnet.model.deployment import derive
    from simnet.sim.run import simulate

    envs, init = [], simpy.Environment.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        envs.append(self)

    simpy.Environment.__init__ = spy
    try:
        m = simulate(derive(scenario(requests)))
        sink = nspy_pipeline(requests)
    finally:
        simpy.Environment.__init__ = init
    got = sum(sink.packets_received.values())
    return {"simnet": (next(envs[0]._eid) / m.completed, statistics.fmean(m.latencies_ms)),
            "ns.py": (next(envs[1]._eid) / got, 1000 * statistics.fmean(sink.waits[0]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20,000 requests, best of 2")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    n, repeats = (20_000, 2) if args.quick else (100_000, 5)
    run_simnet(2_000), run_nspy(2_000)  # warm imports and caches
    runs = {"simnet": run_simnet, "ns.py": run_nspy}
    best, done = {k: math.inf for k in runs}, {}
    for r in range(repeats):  # interleaved, alternating who goes first; best of N
        for kind in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            wall, done[kind] = timed(runs[kind], n)
            best[kind] = min(best[kind], wall)
    us = {k: 1e6 * best[k] / done[k] for k in runs}
    result = {"requests": n, "simnet_us_per_request": round(us["simnet"], 2),
              "nspy_us_per_packet": round(us["ns.py"], 2),
              "ratio": round(us["simnet"] / us["ns.py"], 3),
              "nspy_version": version("ns.py"), "repeats": repeats}
    if args.json:
        print(json.dumps(result))
        return
    work = work_done(min(n, 20_000))
    print(f"4-hop path, {n:,} requests at {RATE:,.0f}/s simulated, best of {repeats} "
          "(same process, interleaved):")
    print(f"  {'':8} {'completed':>10} {'best s':>7} {'µs each':>8} {'events each':>12} "
          f"{'mean latency ms':>16}")
    for kind in runs:
        print(f"  {kind:8} {done[kind]:>10,} {best[kind]:>7.2f} {us[kind]:>8.2f} "
              f"{work[kind][0]:>12.1f} {work[kind][1]:>16.2f}")
    print(f"  (events and latency: one untimed run of {min(n, 20_000):,} requests each)")
    print(f"  ratio simnet/ns.py = {result['ratio']:.3f}  (target <= 1.0: simnet not slower)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
