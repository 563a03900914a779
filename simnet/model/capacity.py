"""What an app can serve and what it is offered, before anything runs.

An instance serves ``concurrency`` requests at once, each for its service time, so an app's
capacity is instances x concurrency / mean service time. Its offered load is the open-loop
clients' rate to each route host, split as the routers split it: round-robin over the host's
endpoints (gorouter), or by the destinations' weights (the Istio gateway). Closed-loop users
offer only what their answers let them, so they never overload on their own and are left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from simnet.model.placement import Endpoint
from simnet.scenario.schema import App, Scenario

if TYPE_CHECKING:
    from simnet.model.cpu import CpuCalibration
    from simnet.model.deployment import Deployment

__all__ = ["CircuitBreakers", "ConnectionPeak", "EnvoyCapacity", "Load", "RouterCapacity",
           "app_capacity_per_s", "connection_peaks", "envoy_capacity", "offered_load",
           "offered_per_endpoint", "router_capacity"]

ENVOY_DEFAULT_THRESHOLD = 1024  # Envoy's default for each circuit-breaker limit left unset
TCP_PROXY_KINDS = frozenset({"tcp", "tls", "mtls"})  # listener kinds whose filter is tcp_proxy


@dataclass(frozen=True)
class CircuitBreakers:
    """The limits Envoy enforces on a sidecar's cluster to the app. Envoy reads only the first
    threshold of a priority, so of the executor's three one-field thresholds only
    ``max_connections`` is set; the others keep Envoy's default of 1024."""

    max_connections: int
    max_pending_requests: int
    max_requests: int

    @classmethod
    def of_cluster(cls, cluster: dict) -> CircuitBreakers:
        """The limits a cluster's config sets, as Envoy applies them."""
        thresholds = cluster.get("circuit_breakers", {}).get("thresholds", [])
        first = next((t for t in thresholds if t.get("priority", "DEFAULT") == "DEFAULT"), {})
        return cls(*(int(first.get(name, ENVOY_DEFAULT_THRESHOLD)) for name in
                     ("max_connections", "max_pending_requests", "max_requests")))


@dataclass(frozen=True)
class EnvoyCapacity:
    """What one sidecar Envoy can carry: its worker threads, the CPU a request holds one for
    (more on a new downstream connection: accept, TLS handshake, upstream connect; measured on
    the real Envoy by ``simnet cpu calibrate``), and its cluster's circuit breakers. A tcp_proxy
    listener overflows on ``max_connections`` (it closes the new connection); an HTTP listener
    on ``max_requests`` (the router filter answers 503 with the UO flag)."""

    workers: int
    request_s: float
    handshake_s: float
    breakers: CircuitBreakers
    tcp_proxy: bool

    @property
    def overflow_at(self) -> int:
        """Connections (tcp_proxy) or requests (HTTP) in progress at which Envoy overflows."""
        return self.breakers.max_connections if self.tcp_proxy else self.breakers.max_requests


@dataclass(frozen=True)
class RouterCapacity:
    """One gorouter's limits (routing-release defaults unless the scenario sets them): cores
    that requests and backend handshakes queue for, ``router.backends.max_conns`` per endpoint
    (0: none), and the dial, TLS-handshake and endpoint (request) timeouts."""

    cores: int
    request_s: float
    handshake_s: float
    max_conns: int
    dial_timeout_s: float
    tls_timeout_s: float
    request_timeout_s: float


def envoy_capacity(s: Scenario, workers: int, kind: str, cpu: CpuCalibration) -> EnvoyCapacity:
    """The sidecars' capacity: ``workers`` threads, the calibrated CPU of ``kind`` and the
    circuit breakers of the cluster the executor writes."""
    from simnet.model.envoy import cluster

    return EnvoyCapacity(workers, cpu.service_s(kind, new_connection=False),
                         cpu.service_s(kind, new_connection=True) - cpu.service_s(kind, False),
                         CircuitBreakers.of_cluster(cluster(s.apps[0].ports[0], app_address="127.0.0.1")),
                         kind in TCP_PROXY_KINDS)


def router_capacity(s: Scenario) -> RouterCapacity:
    """The routers' limits a scenario sets."""
    r = s.routers
    return RouterCapacity(r.cores, r.cpu_per_request_us / 1e6, r.cpu_per_handshake_us / 1e6,
                          r.backends.max_conns, r.dial_timeout_s, r.tls_handshake_timeout_s,
                          r.request_timeout_s)


def app_capacity_per_s(app: App, instances: int | None = None) -> float:
    """Requests per second ``instances`` (default the app's) can serve at full utilisation."""
    n = app.instances if instances is None else instances
    mean_s = app.service_time.mean / 1000
    return math.inf if mean_s == 0 else n * app.concurrency / mean_s


@dataclass(frozen=True)
class Load:
    """An app's open-loop offered load against its capacity."""

    app: str
    offered_per_s: float
    capacity_per_s: float
    instances_needed: int  # the fewest instances whose capacity is above the offered load


def offered_per_endpoint(d: Deployment) -> dict[Endpoint, float]:
    """The open-loop requests per second the routes at t=0 send each endpoint: round-robin
    over every endpoint of the host (gorouter), or by the destinations' weights and then
    evenly over a destination's pods (the Istio gateway)."""
    offered: dict[Endpoint, float] = defaultdict(float)
    for c in d.scenario.clients:
        if c.model != "open":
            continue
        endpoints = d.routes.get(c.host, ())
        weights = dict(d.weights.get(c.host, ()))
        if weights:
            total = sum(weights.values())
            for service, w in weights.items():
                pods = [e for e in endpoints if e.service == service]
                for e in pods:
                    offered[e] += c.rate_per_s * w / total / len(pods)
        else:
            for e in endpoints:
                offered[e] += c.rate_per_s / len(endpoints)
    return dict(offered)


def offered_load(d: Deployment) -> list[Load]:
    """Per app with running instances, the open-loop load the routes at t=0 send it."""
    offered: dict[str, float] = defaultdict(float)
    for e, rate in offered_per_endpoint(d).items():
        offered[e.app] += rate
    out = []
    for app in d.scenario.apps:
        if app.name not in offered:
            continue
        per_instance = app_capacity_per_s(app, 1)
        out.append(Load(app.name, offered[app.name], app_capacity_per_s(app),
                        math.floor(offered[app.name] / per_instance) + 1))
    return out


@dataclass(frozen=True)
class ConnectionPeak:
    """One route host's busiest endpoint as one router sees it: the requests it has in
    progress on average (Little's law: its share of the rate x the mean service time, a lower
    bound: queueing only adds) and at a peak (mean + 3 standard deviations of the Poisson
    count an M/G/infinity queue holds)."""

    host: str
    endpoint: Endpoint
    mean_in_progress: float
    peak_in_progress: float
    max_conns: int


def connection_peaks(d: Deployment) -> list[ConnectionPeak]:
    """Per route host, its busiest endpoint's requests in progress at one router, against
    ``router.backends.max_conns`` (none when there is no cap)."""
    cap = d.router.max_conns if d.router else 0
    if not cap:
        return []
    s = d.scenario
    rates = offered_per_endpoint(d)
    out = []
    for host, endpoints in d.routes.items():
        busiest = max(endpoints, key=lambda e: rates.get(e, 0.0), default=None)
        if busiest is None or not rates.get(busiest):
            continue
        mean_in = rates[busiest] / s.routers.count * s.app(busiest.app).service_time.mean / 1000
        out.append(ConnectionPeak(host, busiest, mean_in, mean_in + 3 * math.sqrt(mean_in), cap))
    return out
