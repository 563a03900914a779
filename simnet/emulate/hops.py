"""What the real components add to a request on this machine: ``simnet calibrate hops``.

The scenario is emulated as it is, without its faults: its load, hop delays and service times,
so the components work as hard as they will in the run (zeroing the delays would let a
closed-loop client send faster and measure a busier machine). Each process reports its own part
of every request: the app its whole time (hops, queue, service: ``X-Simnet-App-Ms``), the router
its time without its sleeps and its backend's round trip (``X-Simnet-Router-Ms``,
``X-Simnet-Backend-Ms``), the load generator what it slept of the client's hop. That splits each
request into three paired parts, each what the simulator does not already model:

- load balancer: the latency less the generator's and the router's sleeps and the router's
  time (the client's own HTTP stack, the load balancer Envoy, the router's HTTP server, the links);
- router: the router's time less the backend's;
- sidecar: the backend's round trip less the app's time (the sidecar Envoy, TLS on a
  kept-alive connection, the app's HTTP server).

Requests of the first ``SKIP_S`` (every connection and handshake at once: a cold start) are left
out. Each part is fitted with a lognormal (scipy.stats.lognorm, location 0) and written as the
scenario's ``latency.overhead``, less the per-request CPU the simulator already charges there
(``Deployment.router.request_s``, ``Deployment.envoy.request_s``), so nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from simnet.emulate.observed import (
    APP_MS,
    BACKEND_MS,
    INTENDED_S,
    LATENCY_MS,
    ROUTER_MS,
    ROUTER_SLEPT_MS,
    SLEPT_MS,
    STATUS,
)
from simnet.model.deployment import Deployment
from simnet.scenario.schema import Overhead, Scenario

SKIP_S = 1.0
PARTS = ("load_balancer", "router", "sidecar")


def calibration_scenario(s: Scenario, duration_s: float) -> Scenario:
    """``s`` without its faults and without an overhead of its own, for ``duration_s``."""
    latency = s.latency.model_copy(update={"overhead": Overhead()})
    return s.model_copy(update={"latency": latency, "faults": [], "duration_s": duration_s})


@dataclass(frozen=True)
class Part:
    """One component's round-trip processing time: the measured quantiles and the fit."""

    name: str
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    modelled_cpu_ms: float  # what the simulator already charges there per request
    median_ms: float  # of the fitted lognormal, less modelled_cpu_ms
    sigma: float

    def dist(self) -> dict:
        return {"dist": "lognormal", "median_ms": round(self.median_ms, 4),
                "sigma": round(self.sigma, 4)}


@dataclass(frozen=True)
class HopCalibration:
    """The three parts, and what they were measured on."""

    scenario: str
    duration_s: float
    parts: tuple[Part, ...]
    machine: dict

    def overhead(self) -> Overhead:
        """The scenario's ``latency.overhead``."""
        return Overhead.model_validate({p.name: p.dist() for p in self.parts})

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "duration_s": self.duration_s, "machine": self.machine,
                "parts": [asdict(p) for p in self.parts],
                "overhead": self.overhead().model_dump()}


def parts_of(d: Deployment, requests: list[list]) -> tuple[Part, ...]:
    """The three paired parts of every answered request after the cold start."""
    rows = [r for r in requests if r[STATUS] == 200 and r[ROUTER_MS] >= 0 and r[APP_MS] >= 0
            and r[INTENDED_S] >= SKIP_S]
    if len(rows) < 50:
        raise ValueError(f"only {len(rows)} answered requests after the first {SKIP_S:g} s: "
                         "too few to calibrate (a longer --duration?)")
    values = {"load_balancer": [r[LATENCY_MS] - r[SLEPT_MS] - r[ROUTER_SLEPT_MS] - r[ROUTER_MS]
                                for r in rows],
              "router": [r[ROUTER_MS] - r[BACKEND_MS] for r in rows],
              "sidecar": [r[BACKEND_MS] - r[APP_MS] for r in rows]}
    cpu = {"load_balancer": 0.0, "router": d.router.request_s * 1000,
           "sidecar": d.envoy.request_s * 1000}
    out = []
    for name in PARTS:
        x = np.maximum(np.asarray(values[name]), 1e-3)  # a part below a microsecond: a clock tick
        sigma, _, scale = stats.lognorm.fit(x, floc=0)
        p50, p90, p99 = np.percentile(x, [50, 90, 99])
        out.append(Part(name, len(x), round(float(p50), 4), round(float(p90), 4),
                        round(float(p99), 4), round(cpu[name], 4),
                        max(1e-3, float(scale) - cpu[name]), float(sigma)))
    return tuple(out)


def machine() -> dict:
    """What the calibration ran on (as the memory calibration records it) and the Envoy and
    Go versions."""
    from simnet.real.envoy import envoy_version
    from simnet.real.gotls import go_version
    from simnet.real.memory import machine as host

    return {**host(), "envoy": envoy_version(), "go": go_version()}
