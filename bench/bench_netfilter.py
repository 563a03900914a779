"""Trace evaluations per second on the largest golden ruleset: compiled vs naive, in one run.

Three ways to answer "where does this connection go" for Istio's largest golden ruleset
(tproxy.golden, IPv4 part: mangle TPROXY chains, nat capture chains, raw DNS zones):

- re-walk text: parse and apply the restore text, then walk it (what a tool without a model does);
- naive walk: ``simnet.model.packet_path.trace`` over the parsed rules, match objects one by one;
- compiled: ``compile_ruleset`` once, then one generated Python function per chain.

The connection mix covers app and proxy traffic, inbound, DNS and loopback. Best of several
interleaved repeats. Target: compiled >= 100,000 traces/s.

    python bench/bench_netfilter.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from simnet.model import netfilter as nf
from simnet.model.packet import Connection
from simnet.model.packet_path import compile_ruleset, trace

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "peers" / "istio-capture-golden"
LOCAL = ("198.18.0.1",)


def largest_golden() -> tuple[str, str]:
    best = max(GOLDEN.glob("*.golden"), key=lambda p: len(nf.split_dry_run(p.read_text())[0].splitlines()))
    return best.name, nf.split_dry_run(best.read_text())[0]


def connections() -> list[Connection]:
    conns = []
    for dst, src in (("9.9.1.1", "198.18.0.1"), ("1.1.2.3", "198.18.0.1"), ("10.0.0.7", "198.18.0.1"),
                     ("127.0.0.53", "127.0.0.1"), ("198.18.0.1", "127.0.0.6")):
        for dport in (53, 80, 15008):
            for uid in (1000, 1337):
                conns.append(Connection("outbound", dst, dport, src, uid=uid, gid=uid, local_addrs=LOCAL))
    for dport in (80, 8080, 15008, 15090):
        conns.append(Connection("inbound", "198.18.0.1", dport, "198.18.0.2", in_if="eth0",
                                in_addr="198.18.0.1", local_addrs=LOCAL))
    return conns


def rate(fn, conns: list[Connection], n: int) -> float:
    k = len(conns)
    t = time.perf_counter()
    for i in range(n):
        fn(conns[i % k])
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="Fewer evaluations (a smoke run).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n, repeats = (2_000, 2) if args.quick else (50_000, 5)

    name, text = largest_golden()
    rs = nf.load(text, name)
    compiled = compile_ruleset(rs)
    conns = connections()
    for c in conns:  # the two evaluators must agree before their speed means anything
        a, b = trace(rs, c), compiled.trace(c)
        assert (a, a.path) == (b, b.path), c

    t = time.perf_counter()
    for _ in range(20):
        compile_ruleset(nf.load(text, name))
    compile_ms = (time.perf_counter() - t) / 20 * 1000

    best = {"rewalk_text": 0.0, "naive": 0.0, "compiled": 0.0}
    for _ in range(repeats):
        best["rewalk_text"] = max(best["rewalk_text"],
                                  rate(lambda c: trace(nf.load(text, name), c), conns, max(n // 50, 200)))
        best["naive"] = max(best["naive"], rate(lambda c: trace(rs, c), conns, n // 5))
        best["compiled"] = max(best["compiled"], rate(compiled.trace, conns, n))

    result = {
        "ruleset": f"{name} (IPv4 part, {sum(1 for _ in rs.rules())} rules)",
        "connections": len(conns),
        "traces_per_s": {k: round(v) for k, v in best.items()},
        "compiled_over_naive": round(best["compiled"] / best["naive"], 2),
        "compiled_over_rewalk_text": round(best["compiled"] / best["rewalk_text"], 1),
        "compile_ms": round(compile_ms, 2),
        "target_traces_per_s": 100_000,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"ruleset: {result['ruleset']}, {len(conns)} connections in the mix")
    for k, v in result["traces_per_s"].items():
        print(f"  {k:<12} {v:>10,} traces/s")
    print(f"  compiled / naive walk: {result['compiled_over_naive']}x; "
          f"compiled / re-walk text: {result['compiled_over_rewalk_text']}x; "
          f"parse+compile once: {result['compile_ms']} ms")


if __name__ == "__main__":
    main()
