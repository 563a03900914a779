"""Simulate a derived deployment: clients -> ingress -> routers -> sidecars -> apps.

Each request is one SimPy process that walks the path (SimPy's own style: small generator
functions, state in plain objects). Faults arrive as the events the model derived; randomness
comes from one stream per purpose, seeded from the scenario, so a scenario and seed give
byte-identical results.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import simpy

from simnet.model.deployment import Deployment
from simnet.model.placement import Address, Endpoint, Listener
from simnet.model.timeline import (CertExpired, CertRotated, CertWithoutGuid, LatencyChange,
                                   RouterDown, RouterUp, RoutesChanged, Start, Stop)
from simnet.model.tls import Verdict
from simnet.scenario.schema import Client
from simnet.sim.latency import Sampler, sampler, with_overhead
from simnet.sim.metrics import InstanceSeries, Metrics
from simnet.sim.ingress import LoadBalancer
from simnet.sim.router import Router
from simnet.sim.sidecar import Sidecar

OOM_RESTART_S = 1.0  # Diego restarts a crashed instance at once; allow it a second to start


class Network:
    """What is listening where, and the shared pieces every router and client uses."""

    def __init__(self, env: simpy.Environment, deployment: Deployment, metrics: Metrics):
        s = deployment.scenario
        self.env = env
        self.deployment = deployment
        self.metrics = metrics
        service = {a.name: sampler(a.service_time, _rng(s.seed, "service", a.name))
                   for a in s.apps}
        self.sidecars: dict[str, Sidecar] = {}
        for inst in deployment.instances:
            app = s.app(inst.app)
            self.sidecars[inst.guid] = Sidecar(
                InstanceSeries.of(inst), inst.envoy, inst.base_used_mb, metrics.bins,
                metrics.bin_s, service[inst.app], env=env, concurrency=app.concurrency,
                queue_limit=app.queue_limit, capacity=deployment.envoy, metrics=metrics)
        self.listeners: dict[Address, tuple[Sidecar, Listener]] = {}
        self.expired: set[str] = set()  # instances whose identity certificate has expired
        self.guidless: set[str] = set()  # stopping instances, their identity without the guid
        # latency_spike faults: extra seconds on each hop now (each crossing pays it)
        self.extra_s = {"client_to_ingress": 0.0, "router_to_sidecar": 0.0, "sidecar_to_app": 0.0}
        self.routers: list[Router] = []
        # what the route-emitter registers for each instance now: (host, endpoint) pairs
        self.registrations: dict[str, list[tuple[str, Endpoint]]] = {}
        self.routes_changed(tuple(deployment.routes.items()))
        for guid in deployment.running:
            self.start(guid)

    def start(self, guid: str) -> None:
        sc = self.sidecars[guid]
        sc.start(self.env.now)
        for addr, listener in self.deployment.listeners[guid]:
            self.listeners[addr] = (sc, listener)

    def stop(self, guid: str) -> None:
        self.sidecars[guid].stop(self.env.now)

    def crashed(self, sc: Sidecar) -> None:
        """An OOM-killed container comes back after a moment, with a fresh Envoy."""
        self.env.process(self._restart(sc.guid))

    def _restart(self, guid: str):
        yield self.env.timeout(OOM_RESTART_S)
        if self.sidecars[guid].alive:
            return
        self.start(guid)
        # Running again, the instance is registered again by the route-emitter; routers that
        # pruned it take it back once the registration has reached them.
        yield self.env.timeout(self.deployment.scenario.routers.route_propagation_delay_s)
        for host, ep in self.registrations.get(guid, ()):
            for r in self.routers:
                r.register(host, ep)

    def routes_changed(self, routes: tuple[tuple[str, tuple[Endpoint, ...]], ...]) -> None:
        """Follow the route table's new entries for these hosts (who is registered where)."""
        hosts = {host for host, _ in routes}
        for guid, pairs in self.registrations.items():
            self.registrations[guid] = [(h, ep) for h, ep in pairs if h not in hosts]
        for host, endpoints in routes:
            for ep in endpoints:
                self.registrations.setdefault(ep.guid, []).append((host, ep))


def _rng(seed: int, *purpose: str) -> random.Random:
    return random.Random(":".join([str(seed), *purpose]))


def _faults(env: simpy.Environment, net: Network, routers: list[Router]):
    for event in net.deployment.events:
        if event.at_s > env.now:
            yield env.timeout(event.at_s - env.now)
        match event:
            case Stop(guid=guid):
                net.stop(guid)
            case CertExpired(guid=guid):
                net.expired.add(guid)
            case CertWithoutGuid(guid=guid):
                net.guidless.add(guid)
            case CertRotated(guid=guid):
                net.expired.discard(guid)
            case Start(guid=guid):
                net.start(guid)
            case RouterDown(router=k):
                routers[k].go_down()
            case RouterUp(router=k):
                routers[k].up = True
            case LatencyChange(hop=hop, extra_s=extra_s):
                net.extra_s[hop] = max(0.0, net.extra_s[hop] + extra_s)
            case RoutesChanged(routes=routes, weights=weights):
                net.routes_changed(routes)
                for r in routers:
                    r.update(event)
                    r.reweigh(weights)


def _client(env: simpy.Environment, c: Client, n: int, net: Network, lb: LoadBalancer,
            end_s: float):
    """Open-loop Poisson arrivals, or closed-loop users each waiting for their answer (or
    giving up at the client's timeout)."""
    s = net.deployment.scenario
    lat = s.latency
    rng = _rng(s.seed, "client", str(n))
    c2i = sampler(lat.client_to_ingress, rng)
    i2r = with_overhead(sampler(lat.ingress_to_router, _rng(s.seed, "client", str(n), "i2r")),
                        lat.overhead.load_balancer, _rng(s.seed, "client", str(n), "overhead"))
    connect = sampler(lat.tcp_connect, _rng(s.seed, "client", str(n), "connect"))
    tls = sampler(lat.tls_handshake, _rng(s.seed, "client", str(n), "tls"))
    metrics = net.metrics
    record = _recorder(env, metrics)
    host = c.host
    extra = net.extra_s
    pick = lb.pick

    def through(new_connection: bool):
        """The platform's part: to the load balancer, through a router, back."""
        up = c2i() + extra["client_to_ingress"] + i2r()
        # A new client connection costs a TCP and a TLS handshake with the load balancer.
        if new_connection:
            handshakes = connect() + tls()
            metrics.connect_s += handshakes
            yield env.timeout(up + handshakes)
        else:
            yield env.timeout(up)
        metrics.network_s += up
        if lb.limited:
            refused = lb.admit(env.now)
            if refused:
                return 503, refused
            answer = yield from pick().handle(host, up)
            lb.active -= 1
            return answer
        return (yield from pick().handle(host, up))

    path = net.deployment.client_paths.get(host)
    if path is not None and not path.via_proxy:
        def through(new_connection: bool):  # noqa: F811
            # The client host's rules let the connection go to the VIP itself: nothing listens.
            yield env.timeout(c2i() + connect())
            return Verdict.DIAL_FAILED.status, "nothing listens at the VIP"

    timeout_s = c.timeout_s
    issued_per_bin, bin_of = metrics.issued_per_bin, metrics.bin_of

    def request(new_connection: bool):
        metrics.issued += 1
        metrics.in_flight += 1
        t0 = env.now
        issued_per_bin[bin_of(t0)] += 1
        if timeout_s is None:
            status, cause = yield from through(new_connection)
        else:
            answer = env.process(through(new_connection))
            yield answer | env.timeout(timeout_s)
            if not answer.triggered:  # the client gives up; the platform still serves it
                metrics.in_flight -= 1
                metrics.timed_out += 1
                metrics.causes["client timeout"] += 1
                metrics.errors_per_bin[metrics.bin_of(env.now)] += 1
                return
            status, cause = answer.value
        record(status, t0)
        if status != 200:
            metrics.causes[cause] += 1
            metrics.failed(host, status, t0)

    if c.start_s:
        yield env.timeout(c.start_s)
    if c.model == "open":
        rate = c.rate_per_s
        expovariate = rng.expovariate
        process, timeout = env.process, env.timeout
        keep = c.keep_alive
        first = True
        while True:
            gap = expovariate(rate)
            if env.now + gap >= end_s:
                return
            yield timeout(gap)
            process(request(first or not keep))
            first = False
        return
    think = sampler(c.think_time, _rng(s.seed, "client", str(n), "think"))
    for u in range(c.users):
        env.process(_user(env, request, think, c.keep_alive, end_s))


def _user(env, request, think: Sampler, keep_alive: bool, end_s: float):
    first = True
    while env.now < end_s:
        yield from request(first or not keep_alive)
        first = False
        pause = think()
        if pause:
            yield env.timeout(pause)


def _recorder(env: simpy.Environment, metrics: Metrics):
    outcomes, latencies = metrics.outcomes, metrics.latencies_ms
    per_bin, errors = metrics.requests_per_bin, metrics.errors_per_bin
    bin_s, last = metrics.bin_s, metrics.bins - 1

    def record(status: int, t0: float) -> None:
        now = env.now
        metrics.in_flight -= 1
        outcomes[status] += 1
        latencies.append((now - t0) * 1000)
        b = int(now / bin_s)
        if b > last:
            b = last
        per_bin[b] += 1
        if status != 200:
            errors[b] += 1

    return record


def simulate(deployment: Deployment, progress: Callable[[float], None] | None = None) -> Metrics:
    """Run the scenario's traffic through the deployment and return what was observed."""
    s = deployment.scenario
    env = simpy.Environment()
    metrics = Metrics(duration_s=s.duration_s, bin_s=s.time_bin_s)
    net = Network(env, deployment, metrics)
    lat = s.latency
    routers = []
    for k in range(s.routers.count):
        r2s, s2a, connect, tls = (sampler(d, _rng(s.seed, "router", str(k), name)) for name, d in (
            ("r2s", lat.router_to_sidecar), ("s2a", lat.sidecar_to_app),
            ("connect", lat.tcp_connect), ("tls", lat.tls_handshake)))
        samplers = (
            with_overhead(r2s, lat.overhead.router, _rng(s.seed, "router", str(k), "overhead")),
            with_overhead(s2a, lat.overhead.sidecar, _rng(s.seed, "sidecar", str(k), "overhead")),
            connect, tls)
        routers.append(Router(env, net, deployment.routes, samplers,
                              _rng(s.seed, "router", str(k), "weights")))
    net.routers = routers
    env.process(_faults(env, net, routers))
    lb = LoadBalancer(s, routers, _rng(s.seed, "ingress"))
    for n, c in enumerate(s.clients):
        end = s.duration_s if c.duration_s is None else min(s.duration_s, c.start_s + c.duration_s)
        env.process(_client(env, c, n, net, lb, end))
    if progress is None:
        env.run(until=s.duration_s)
    else:
        steps = 100
        for k in range(1, steps + 1):
            env.run(until=s.duration_s * k / steps)
            progress(k / steps)
    metrics.instances = [sc.finish(env.now) for sc in net.sidecars.values()]
    metrics.routers = [r.finish(k, env.now) for k, r in enumerate(routers)]
    return metrics

