"""gorouter as a SimPy process: route lookup, connection pool, TLS to the backend, retries.

Reproduces routing-release's proxy behaviour: pick an endpoint for the route (round-robin or
least-connection), reuse an idle keep-alive connection or dial a new one (TCP, then TLS with a
check that the certificate's SAN is the instance the route names), and on a dial or TLS error
prune a TLS endpoint (a plain one is marked failed and skipped for 30 s) and retry another, up
to ``max_attempts``; the last error sets the status.
The verdict of each new TLS connection is the one derive computed with the handshake model
(``Deployment.backend_verdicts``); every failed attempt is retried (an alert gorouter does not
classify, such as ``certificate unknown``, too: it answers 502 once the attempts are spent),
until every endpoint was tried (gorouter) or ``max_attempts``. A request whose backend
connection ends before the answer (the instance died) is retried elsewhere: every client
request is an idempotent GET.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import TYPE_CHECKING

from simnet.model.placement import Endpoint, Weights
from simnet.model.timeline import RoutesChanged
from simnet.model.tls import Verdict
from simnet.sim.metrics import RouterSeries
from simnet.sim.sidecar import OVERFLOW, SERVED
from simnet.sim.workers import GONE, REFUSED, Occupancy, Workers

if TYPE_CHECKING:
    from simnet.sim.run import Network

OK = 200
NOT_FOUND = 404
NO_ENDPOINT = 503
BAD_GATEWAY = 502  # the load balancer's answer when the router is down or died mid-request
TIMED_OUT = 2  # beside sidecar.SERVED / OVERFLOW and workers.REFUSED / GONE
SUCCESS = (OK, None)
# How long gorouter's round-robin skips an endpoint marked failed: droplet_stale_threshold
# (120 s) / 4 (gorouter registry/registry.go ``RetryAfterFailure``, route/roundrobin.go
# ``clearExpiredFailures``)
RETRY_AFTER_FAILURE_S = 30.0


class Router:
    """One gorouter (or, on cf-for-k8s, the ingress gateway): its own route table, pool of
    idle keep-alive connections per backend, round-robin positions and busy counts; requests
    go through ``handle``. It starts with the Deployment's route table and follows the route
    updates the timeline sends, as routing-release's registry does."""

    __slots__ = ("env", "net", "metrics", "table", "rr", "pool", "active", "max_attempts",
                 "keep_alive", "max_idle", "least_conn", "verdicts", "r2s", "s2a", "connect",
                 "tls", "weights", "random", "keeps_empty", "up", "generation", "capacity",
                 "cpu", "max_conns", "timeout_s", "in_progress", "gorouter", "failed")

    def __init__(self, env, net: "Network", routes: dict[str, tuple[Endpoint, ...]], samplers,
                 rng: random.Random | None = None):
        s = net.deployment.scenario
        self.env = env
        self.net = net
        self.metrics = net.metrics
        self.table = dict(routes)
        # cf-for-k8s: the gateway picks a host's destination Service by weight, per request
        # (Envoy's weighted_clusters), then a pod of that Service; a VirtualService whose
        # Service has no ready pod stays in the table (Envoy: 503 no healthy upstream).
        self.weights = dict(net.deployment.weights)
        self.random = (rng or random.Random(0)).random
        self.keeps_empty = net.deployment.platform.keeps_empty_routes
        self.gorouter = net.deployment.platform.router == "gorouter"
        self.failed: dict[tuple[str, int], float] = {}  # gorouter: endpoint -> when marked failed
        self.rr: dict[str, int] = {}
        self.pool: dict[tuple[str, int], list] = {}
        # requests in progress per endpoint: gorouter's NumberConnections, which both
        # least-connection and router.backends.max_conns count
        self.active: dict[tuple[str, int], int] = {}
        self.capacity = capacity = net.deployment.router
        self.max_conns = capacity.max_conns
        self.cpu = (Workers(env, capacity.cores, bins=net.metrics.bins, bin_s=net.metrics.bin_s)
                    if capacity.request_s or capacity.handshake_s else None)
        # the endpoint timeout, when a request could outlast it within the run
        self.timeout_s = capacity.request_timeout_s if capacity.request_timeout_s < s.duration_s else None
        self.in_progress = Occupancy()
        self.max_attempts = s.routers.max_attempts
        self.keep_alive = s.routers.keep_alive_to_backends
        self.max_idle = s.routers.max_idle_conns_per_backend
        self.least_conn = s.routers.balancing == "least-connection"
        self.verdicts = net.deployment.backend_verdicts
        self.r2s, self.s2a, self.connect, self.tls = samplers
        self.up = True
        self.generation = 0  # process restarts so far: a request outliving one ends in 502

    def finish(self, index: int, end_s: float) -> RouterSeries:
        """This router's figures at the end of the run."""
        occ = self.in_progress
        occ.close(end_s)
        series = RouterSeries(index, mean_in_progress=occ.area / end_s if end_s else 0.0,
                              handled=occ.left, mean_time_s=occ.total_s / occ.left if occ.left else 0.0)
        if self.cpu is not None:
            self.cpu.report(series, end_s)
        return series

    def go_down(self) -> None:
        """The process stops (restart_router): its idle backend connections close with it."""
        self.up = False
        self.generation += 1
        now = self.env.now
        for idle in self.pool.values():
            for sc, epoch, proxied in idle:
                sc.close(now, epoch, proxied)
            idle.clear()

    def update(self, change: RoutesChanged) -> None:
        """A route registration arrives: it replaces the pool and restores pruned endpoints."""
        change.apply(self.table, self.keeps_empty)

    def reweigh(self, weights: tuple[tuple[str, Weights], ...]) -> None:
        """New destination weights for hosts (a route mapped or unmapped on the gateway)."""
        for host, w in weights:
            if w:
                self.weights[host] = w
            else:
                self.weights.pop(host, None)
                if self.keeps_empty and not self.table.get(host):
                    self.table.pop(host, None)  # the VirtualService is gone: 404 again

    def _service(self, weights: Weights) -> str:
        """The destination Service for one request, drawn with the route's weights."""
        x = self.random() * sum(w for _, w in weights)
        for service, w in weights:
            x -= w
            if x < 0:
                return service
        return weights[-1][0]

    def register(self, host: str, ep: Endpoint) -> None:
        """One route registration (gorouter's ``router.register``): the endpoint joins the
        host's pool if it is not there."""
        endpoints = self.table.get(host, ())
        if ep not in endpoints:
            self.table[host] = endpoints + (ep,)

    def _prune(self, host: str, ep: Endpoint) -> None:
        endpoints = self.table.get(host, ())
        if ep in endpoints:
            self.table[host] = tuple(e for e in endpoints if e != ep)
            self.metrics.endpoints_pruned += 1

    def _choose(self, key, endpoints: tuple[Endpoint, ...], tried) -> Endpoint:
        """Least-connection, or round-robin skipping endpoints this request already tried."""
        if self.least_conn:
            active = self.active
            fresh = [e for e in endpoints if e not in tried] or list(endpoints)
            return min(fresh, key=lambda e: active.get(e.address, 0))
        n = len(endpoints)
        start = self.rr.get(key, 0)
        for k in range(n):
            ep = endpoints[(start + k) % n]
            if ep not in tried:
                self.rr[key] = start + k + 1
                return ep
        self.rr[key] = start + 1
        return endpoints[start % n]

    def _first_turn(self, n: int) -> int:
        """Where a pool's round-robin starts: gorouter's at a random index (routing-release
        gorouter route/pool.go ``NextIndex``: ``p.random.Intn(len(p.endpoints))`` the first
        time), so routers do not all begin with the same instance."""
        return int(self.random() * n) if self.gorouter else 0

    def _next_eligible(self, endpoints: tuple[Endpoint, ...], tried, pos: int
                       ) -> tuple[Endpoint, int]:
        """gorouter's round-robin from ``pos`` on (route/roundrobin.go ``next``): the first
        endpoint this request has not tried and not marked failed within RETRY_AFTER_FAILURE_S;
        when every one is marked, the marks are cleared and the first untried one serves. Where
        it is next."""
        n, failed = len(endpoints), self.failed
        now = self.env.now
        for clear in (False, True):
            if clear:  # every endpoint failed: gorouter resets them all to available
                for e in endpoints:
                    failed.pop(e.address, None)
            for k in range(n):
                ep = endpoints[(pos + k) % n]
                if tried and ep in tried:
                    continue
                marked = failed.get(ep.address)
                if marked is not None:
                    if now - marked <= RETRY_AFTER_FAILURE_S:
                        continue
                    del failed[ep.address]  # the mark expired (clearExpiredFailures)
                return ep, pos + k + 1
        return endpoints[pos % n], pos + 1  # every one tried: the caller has stopped already

    def _available(self, key, endpoints: tuple[Endpoint, ...], tried) -> Endpoint | None:
        """An endpoint below ``max_conns`` by the balancing rule, or None when all are at it
        (gorouter's round-robin and least-connection skip overloaded endpoints)."""
        cap, active = self.max_conns, self.active
        open_ = tuple(e for e in endpoints if active.get(e.address, 0) < cap)
        if not open_:
            return None
        return self._choose(key, open_, tried or ())

    def handle(self, host: str, upstream_s: float) -> Generator:
        """Serve one request: its status, and why it failed (None when it did not).
        ``upstream_s`` is the client-side one-way delay."""
        if not self.up:
            return BAD_GATEWAY, "router down"
        env, metrics, table, pool = self.env, self.metrics, self.table, self.pool
        in_progress = self.in_progress
        t0 = env.now
        in_progress.enter(t0)
        try:
            generation, extra = self.generation, self.net.extra_s
            endpoints = table.get(host)
            if endpoints is None:
                return NOT_FOUND, "unknown route"
            cpu = 0.0  # the router's own work on the request, on a core; with one free, it is
            if self.cpu is not None:  # spent on the way out (the endpoint is chosen first)
                cpu = self.capacity.request_s
                metrics.cpu_s += cpu
                cores = self.cpu
                if cores.take():
                    env.timeout(cpu, cores.generation).callbacks.append(cores.done)
                else:
                    metrics.queueing_s += yield from cores.hold(cpu)
                    cpu = 0.0
            key = host  # whose round-robin turn it is: the host's, or its chosen Service's
            service = None
            weights = self.weights.get(host)
            if weights:
                service = key = self._service(weights)
                endpoints = tuple(e for e in endpoints if e.service == service)
            tried: list[Endpoint] | None = None
            status = NO_ENDPOINT
            cause = "no endpoints"
            active, max_conns = self.active, self.max_conns
            pos = 0  # gorouter: where this request's round-robin iterator is
            for attempt in range(self.max_attempts):
                if attempt:
                    endpoints = table.get(host, ())
                    if service:  # Envoy retries within the cluster the route picked
                        endpoints = tuple(e for e in endpoints if e.service == service)
                    if self.gorouter and tried and all(e in tried for e in endpoints):
                        # gorouter stops rather than try an endpoint again (routing-release
                        # gorouter proxy/round_tripper/proxy_round_tripper.go: past
                        # NumEndpoints attempts, a pick already in triedEndpoints breaks);
                        # Envoy's previous_hosts predicate gives up its reselections instead
                        return status, cause
                    metrics.retries += 1
                if not endpoints:
                    return status, cause
                if tried is None and not self.least_conn:  # the common case: plain round-robin
                    i = self.rr.get(key)
                    if i is None:
                        i = self._first_turn(len(endpoints))
                    self.rr[key] = i + 1
                    ep = endpoints[i % len(endpoints)]
                    pos = i + 1
                    if self.failed and ep.address in self.failed:
                        ep, pos = self._next_eligible(endpoints, None, i)
                elif self.gorouter and not self.least_conn:
                    ep, pos = self._next_eligible(endpoints, tried, pos)
                else:
                    ep = self._choose(key, endpoints, tried or ())
                addr = ep.address
                if max_conns and active.get(addr, 0) >= max_conns:
                    ep = self._available(key, endpoints, tried)
                    if ep is None:  # every endpoint at router.backends.max_conns
                        return NO_ENDPOINT, "connection limit reached"
                    addr = ep.address
                idle = pool.get(addr)
                if idle is None:
                    idle = pool[addr] = []
                conn = None
                while idle:
                    conn = idle.pop()
                    sc, epoch, proxied = conn
                    if sc.alive and sc.epoch == epoch:
                        break
                    conn = None  # the instance restarted or died: that connection is gone
                active[addr] = active.get(addr, 0) + 1
                out = self.r2s() + extra["router_to_sidecar"]
                metrics.network_s += out
                out_cpu, cpu = out + cpu, 0.0
                if conn is None:
                    verdict, conn = yield from self._dial(ep, out_cpu)
                    if verdict is not Verdict.OK:
                        active[addr] -= 1
                        status = verdict.status
                        cause = _CAUSE.get(verdict) or f"backend TLS ({verdict.value})"
                        if verdict.prunable and (ep.tls or not self.gorouter):
                            # gorouter prunes only TLS endpoints (route/pool.go EndpointFailed:
                            # route integrity keeps a plain route until it goes stale)
                            self._prune(host, ep)
                        elif self.gorouter and verdict.failable:  # skipped for a while instead
                            self.failed[addr] = env.now
                        if not verdict.retriable:
                            return status, cause
                        tried = (tried or []) + [ep]
                        continue
                    sc, epoch, proxied = conn
                    out_cpu = 0.0
                # a kept-alive connection: the way to the sidecar is part of serve's first step
                if sc.app != ep.app:
                    # plain HTTP (seed 000), or TLS whose check names no instance (Istio's shared
                    # service-account identity): the wrong app answers
                    metrics.misdelivered += 1
                    metrics.misdelivered_per_bin[metrics.bin_of(env.now)] += 1
                inner = self.s2a() + extra["sidecar_to_app"]
                metrics.network_s += 2 * inner + out + upstream_s
                # the answer's way back to the router: the connection is free once it is
                # read, before the client has it (gorouter's reverse proxy returns it to the
                # pool when the backend's body is read; found by the twin: held until the
                # client had the answer, the sidecars' peak connections were 1.6x the real)
                back = out + inner
                if self.timeout_s is None:
                    served = yield from sc.serve(out_cpu, inner, sc.service(), epoch, back, proxied)
                else:
                    served = yield from self._within_timeout(sc, out_cpu, inner, epoch, back, proxied)
                active[addr] -= 1
                if served == REFUSED:
                    # every worker busy and the accept queue full: the app refused the connection;
                    # Envoy closes the router's connection, a retriable error to gorouter
                    sc.close(env.now, epoch, proxied)
                    status = Verdict.DIAL_FAILED.status
                    cause = "app refused (accept queue full)"
                    tried = (tried or []) + [ep]
                    continue
                if served == OVERFLOW:  # Envoy's HTTP router: 503 UO, passed on to the client
                    self._reuse(idle, conn, sc, epoch)
                    return NO_ENDPOINT, "envoy overflow (circuit breaker)"
                if served == TIMED_OUT:  # gorouter's endpoint timeout: 502, the connection closed
                    sc.close(env.now, epoch, proxied)
                    return BAD_GATEWAY, "router endpoint timeout"
                if served == GONE or not (sc.alive and sc.epoch == epoch):
                    # the connection ended before an answer: an idempotent request's EOF is
                    # retried on another endpoint, the endpoint is not pruned (routing-release
                    # gorouter proxy/round_tripper isRetriable: IdempotentRequestEOFError)
                    status, cause = Verdict.DIAL_FAILED.status, "instance died mid-request"
                    tried = (tried or []) + [ep]
                    continue
                if self.generation != generation:  # the router restarted while serving this
                    sc.close(env.now, epoch, proxied)
                    return BAD_GATEWAY, "router restarted mid-request"
                self._reuse(idle, conn, sc, epoch)
                app = sc.app
                yield env.timeout(upstream_s)  # the answer's way on to the client
                metrics.served[host, app] += 1
                return SUCCESS
            return status, cause
        finally:
            in_progress.leave(env.now, env.now - t0)

    def _reuse(self, idle: list, conn, sc, epoch: int) -> None:
        """Keep the connection for the next request to this endpoint, or close it."""
        if self.keep_alive and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            sc.close(self.env.now, epoch, conn[2])

    def _within_timeout(self, sc, out: float, inner: float, epoch: int, back: float,
                        proxied: bool) -> Generator:
        """The backend's answer, or TIMED_OUT when it takes longer than the endpoint timeout
        (the backend still finishes the request). The timeout runs from the request's arrival
        at the sidecar to the answer's at the router."""
        env = self.env
        if out:
            yield env.timeout(out)
        answer = env.process(sc.serve(0.0, inner, sc.service(), epoch, 0.0, proxied))
        yield answer | env.timeout(self.timeout_s)
        if not answer.triggered:
            return TIMED_OUT
        if answer.value == SERVED:
            yield env.timeout(back)
        return answer.value

    def _dial(self, ep: Endpoint, out: float) -> Generator:
        """Open TCP (and TLS) to an endpoint: the verdict, and the connection when it is OK."""
        env, metrics, capacity = self.env, self.metrics, self.capacity
        connect = out + self.connect()
        if connect > capacity.dial_timeout_s:  # no SYN-ACK within endpoint_dial_timeout
            yield env.timeout(capacity.dial_timeout_s)
            metrics.connect_s += capacity.dial_timeout_s
            return Verdict.DIAL_TIMEOUT, None
        yield env.timeout(connect)
        metrics.connect_s += connect - out
        target = self.net.listeners.get(ep.address)
        if target is None or not target[0].alive:
            return Verdict.DIAL_FAILED, None  # connection refused: nothing listens there now
        sc, listener = target
        # Envoy holds the connection only where it is on the path (listener.tls: Diego's proxy
        # ports, Istio's captured inbound); one to an unproxied port is the app's alone, and
        # neither its memory nor its limits see it (the emulated twin's Envoy holds none)
        opened = sc.open(env.now) if listener.tls else True
        if opened is None:
            return Verdict.CONNECTION_RESET, None  # Envoy's tcp_proxy at max_connections
        if not opened:
            self.net.crashed(sc)
            return Verdict.DIAL_FAILED, None  # this connection pushed Envoy past the quota
        metrics.connections_opened += 1
        epoch = sc.epoch
        verdict = Verdict.OK
        started = env.now
        if ep.tls:
            metrics.tls_handshakes += 1
            network = self.tls()
            cpu = self.capacity.handshake_s if self.cpu is not None else 0.0
            if network + cpu > capacity.tls_timeout_s:
                yield env.timeout(capacity.tls_timeout_s)
                verdict = Verdict.HANDSHAKE_TIMEOUT
            else:
                yield env.timeout(network)
                if cpu:  # the router's side of the handshake: a core
                    waited = yield from self.cpu.hold(cpu)
                    metrics.queueing_s += waited
                    metrics.cpu_s += cpu
                # Envoy's side, where Envoy listens: a worker thread
                took = (yield from sc.handshake()) if listener.tls else 0.0
                if took == GONE:
                    verdict = Verdict.DIAL_FAILED
                elif env.now - started > capacity.tls_timeout_s:
                    verdict = Verdict.HANDSHAKE_TIMEOUT
                elif listener.tls:
                    # a guid-less identity fails the SAN check as another instance's does
                    named = listener.guid == ep.guid and listener.guid not in self.net.guidless
                    verdict = self.verdicts[named, listener.guid in self.net.expired]
                else:
                    verdict = Verdict.HANDSHAKE_FAILURE  # TLS spoken to a plain port
            metrics.connect_s += env.now - started
        elif listener.tls:
            verdict = Verdict.DIAL_FAILED  # plain HTTP to a TLS listener: reset
        if verdict is not Verdict.OK:
            sc.close(env.now, epoch, listener.tls)
            return verdict, None
        return verdict, (sc, epoch, listener.tls)  # Envoy is on the path where TLS ends


_CAUSE = {Verdict.DIAL_FAILED: "dial failed", Verdict.DIAL_TIMEOUT: "router dial timeout",
          Verdict.HANDSHAKE_TIMEOUT: "router TLS handshake timeout",
          Verdict.CONNECTION_RESET: "envoy overflow (circuit breaker)",
          Verdict.UPSTREAM_CONNECT_FAILURE: "upstream connect failure"}
