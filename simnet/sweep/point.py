"""One point of a sweep: the scenario data with the point's parameters applied, derived and
simulated through the lenses, and the numbers a sweep stores of it.
"""

from __future__ import annotations

import copy
from typing import Any

from simnet.model.deployment import Deployment
from simnet.scenario.schema import Scenario
from simnet.sim.metrics import Metrics

__all__ = ["applied", "point_numbers", "run_point"]


def applied(data: dict, params: dict[str, Any]) -> dict:
    """The scenario data with each dotted path set to its value (missing mappings created)."""
    out = copy.deepcopy(data)
    for path, value in params.items():
        node: Any = out
        keys = path.split(".")
        for k, key in enumerate(keys):
            last = k == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise KeyError(f"{'.'.join(keys[:k]) or 'the scenario'} has no item {key}")
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    node = node.setdefault(key, {})
            else:
                raise KeyError(f"{'.'.join(keys[:k])} is a value, not a section")
    return out


def run_point(data: dict, params: dict, seed: int) -> dict:
    """Simulate one point (the scenario data with ``params`` and ``seed`` applied); the
    numbers a sweep compares."""
    from simnet import lenses  # the simulator: only in the process that runs the point

    s = Scenario.model_validate(applied(data, {**params, "seed": seed}), strict=True)
    d = lenses.derive(s)
    return point_numbers(d, lenses.simulate(d))


def point_numbers(d: Deployment, m: Metrics) -> dict:
    """What a sweep stores of one run: counts, error rate, latency, memory and headroom."""
    summary = m.summary()
    completed = m.completed
    headroom = [i.envoy_limit_mb - i.peak_memory_mb for i in m.instances
                if i.envoy_limit_mb is not None]
    return {
        "issued": m.issued, "completed": completed, "ok": m.outcomes.get(200, 0),
        "error_rate": round(1 - m.outcomes.get(200, 0) / completed, 6) if completed else None,
        "p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
        "misdelivered": m.misdelivered, "retries": m.retries,
        "oom_kills": sum(i.oom_kills for i in m.instances),
        "peak_envoy_mb": round(max((i.peak_memory_mb for i in m.instances), default=0.0), 6),
        "additional_memory_mb": d.additional_mb,
        # the least memory any instance's Envoy had left at its peak (negative: it was OOM-killed)
        "memory_headroom_mb": round(min(headroom), 6) if headroom else None,
        "peak_connections": max((i.peak_connections for i in m.instances), default=0),
        # offered against achieved: what the clients sent and what came back 200, per second
        "offered_per_s": round(m.issued / m.duration_s, 6),
        "throughput_per_s": round(m.outcomes.get(200, 0) / m.duration_s, 6),
        "instances": len(d.running),  # app instances running at t=0: the cost of a setting
        "refused": sum(i.refused for i in m.instances),
    }
