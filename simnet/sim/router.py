"""gorouter as a SimPy process: route lookup, connection pool, TLS to the backend, retries.

Reproduces routing-release's proxy behaviour: pick an endpoint for the route (round-robin or
least-connection), reuse an idle keep-alive connection or dial a new one (TCP, then TLS with a
check that the certificate's SAN is the instance the route names), and on a dial or TLS error
prune the endpoint and retry another, up to ``max_attempts``; the last error sets the status.
The verdict of each new TLS connection is the one derive computed with the handshake model
(``Deployment.backend_verdicts``); errors gorouter does not classify (an alert such as
``certificate unknown``) end the request with 502 without a retry.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import TYPE_CHECKING

from simnet.model.placement import Endpoint, Weights
from simnet.model.tls import Verdict

if TYPE_CHECKING:
    from simnet.sim.run import Network

OK = 200
NOT_FOUND = 404
NO_ENDPOINT = 503
BAD_GATEWAY = 502  # the load balancer's answer when the router is down or died mid-request


class Router:
    """One gorouter (or, on cf-for-k8s, the ingress gateway): its own route table, pool of
    idle keep-alive connections per backend, round-robin positions and busy counts; requests
    go through ``handle``. It starts with the Deployment's route table and follows the route
    updates the timeline sends, as routing-release's registry does."""

    __slots__ = ("env", "net", "metrics", "table", "rr", "pool", "busy", "max_attempts",
                 "keep_alive", "max_idle", "least_conn", "verdicts", "r2s", "s2a", "connect",
                 "tls", "weights", "random", "keeps_empty", "up", "generation")

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
        self.rr: dict[str, int] = {}
        self.pool: dict[tuple[str, int], list] = {}
        self.busy: dict[tuple[str, int], int] = {}
        self.max_attempts = s.routers.max_attempts
        self.keep_alive = s.routers.keep_alive_to_backends
        self.max_idle = s.routers.max_idle_conns_per_backend
        self.least_conn = s.routers.balancing == "least-connection"
        self.verdicts = net.deployment.backend_verdicts
        self.r2s, self.s2a, self.connect, self.tls = samplers
        self.up = True
        self.generation = 0  # process restarts so far: a request outliving one ends in 502

    def go_down(self) -> None:
        """The process stops (restart_router): its idle backend connections close with it."""
        self.up = False
        self.generation += 1
        now = self.env.now
        for idle in self.pool.values():
            for sc, epoch in idle:
                sc.close(now, epoch)
            idle.clear()

    def update(self, routes: tuple[tuple[str, tuple[Endpoint, ...]], ...]) -> None:
        """A route registration arrives: it replaces the pool and restores pruned endpoints."""
        for host, endpoints in routes:
            if endpoints or self.keeps_empty:
                self.table[host] = endpoints
            else:
                self.table.pop(host, None)

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
            busy = self.busy
            fresh = [e for e in endpoints if e not in tried] or list(endpoints)
            return min(fresh, key=lambda e: busy.get(e.address, 0))
        n = len(endpoints)
        start = self.rr.get(key, 0)
        for k in range(n):
            ep = endpoints[(start + k) % n]
            if ep not in tried:
                self.rr[key] = start + k + 1
                return ep
        self.rr[key] = start + 1
        return endpoints[start % n]

    def handle(self, host: str, upstream_s: float) -> Generator:
        """Serve one request; returns its status. ``upstream_s`` is the client-side one-way delay."""
        if not self.up:
            return BAD_GATEWAY
        env, metrics, table, pool = self.env, self.metrics, self.table, self.pool
        generation, extra = self.generation, self.net.extra_s
        endpoints = table.get(host)
        if endpoints is None:
            return NOT_FOUND
        key = host  # whose round-robin turn it is: the host's, or its chosen Service's
        service = None
        weights = self.weights.get(host)
        if weights:
            service = key = self._service(weights)
            endpoints = tuple(e for e in endpoints if e.service == service)
        tried: list[Endpoint] | None = None
        status = NO_ENDPOINT
        for attempt in range(self.max_attempts):
            if attempt:
                endpoints = table.get(host, ())
                if service:  # Envoy retries within the cluster the route picked
                    endpoints = tuple(e for e in endpoints if e.service == service)
                metrics.retries += 1
            if not endpoints:
                return status
            if tried is None and not self.least_conn:  # the common case: plain round-robin
                i = self.rr.get(key, 0)
                self.rr[key] = i + 1
                ep = endpoints[i % len(endpoints)]
            else:
                ep = self._choose(key, endpoints, tried or ())
            addr = ep.address
            idle = pool.get(addr)
            if idle is None:
                idle = pool[addr] = []
            conn = None
            while idle:
                conn = idle.pop()
                sc, epoch = conn
                if sc.alive and sc.epoch == epoch:
                    break
                conn = None  # the instance restarted or died: that connection is gone
            out = self.r2s() + extra["router_to_sidecar"]
            if conn is None:
                verdict, conn = yield from self._dial(ep, out)
                if verdict is not Verdict.OK:
                    status = verdict.status
                    if verdict.prunable:
                        self._prune(host, ep)
                    if not verdict.retriable:
                        return status
                    tried = (tried or []) + [ep]
                    continue
                sc, epoch = conn
            else:
                yield env.timeout(out)
            if sc.app != ep.app:
                # plain HTTP (seed 000), or TLS whose check names no instance (Istio's shared
                # service-account identity): the wrong app answers
                metrics.misdelivered += 1
                metrics.misdelivered_per_bin[metrics.bin_of(env.now)] += 1
            inner = self.s2a() + extra["sidecar_to_app"]
            service_s = sc.service()
            if self.least_conn:
                self.busy[addr] = self.busy.get(addr, 0) + 1
            yield env.timeout(inner)
            accepted = yield from sc.serve(service_s, epoch)
            if accepted:
                yield env.timeout(upstream_s + out + inner)
            if self.least_conn:
                self.busy[addr] -= 1
            if not accepted:
                # every worker busy and the accept queue full: the app refused the connection,
                # a dial error to gorouter (retried on another endpoint)
                sc.close(env.now, epoch)
                status = Verdict.DIAL_FAILED.status
                tried = (tried or []) + [ep]
                continue
            if not (sc.alive and sc.epoch == epoch):
                return Verdict.DIAL_FAILED.status  # the instance died mid-request
            if self.generation != generation:  # the router restarted while serving this
                sc.close(env.now, epoch)
                return BAD_GATEWAY
            if self.keep_alive and len(idle) < self.max_idle:
                idle.append(conn)
            else:
                sc.close(env.now, epoch)
            metrics.served[host, sc.app] += 1
            return OK
        return status

    def _dial(self, ep: Endpoint, out: float) -> Generator:
        """Open TCP (and TLS) to an endpoint: the verdict, and the connection when it is OK."""
        env, metrics = self.env, self.metrics
        yield env.timeout(out + self.connect())
        target = self.net.listeners.get(ep.address)
        if target is None or not target[0].alive:
            return Verdict.DIAL_FAILED, None  # connection refused: nothing listens there now
        sc, listener = target
        if not sc.open(env.now):
            self.net.crashed(sc)
            return Verdict.DIAL_FAILED, None  # this connection pushed Envoy past the quota
        metrics.connections_opened += 1
        epoch = sc.epoch
        verdict = Verdict.OK
        if ep.tls:
            metrics.tls_handshakes += 1
            yield env.timeout(self.tls())
            if listener.tls:
                verdict = self.verdicts[listener.guid == ep.guid, listener.guid in self.net.expired]
            else:
                verdict = Verdict.HANDSHAKE_FAILURE  # TLS spoken to a plain port
        elif listener.tls:
            verdict = Verdict.DIAL_FAILED  # plain HTTP to a TLS listener: reset
        if verdict is not Verdict.OK:
            sc.close(env.now, epoch)
            return verdict, None
        return verdict, (sc, epoch)
