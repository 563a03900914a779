"""A running app instance as the network sees it: its Envoy sidecar and the app behind it.

The app has a capacity: ``concurrency`` workers, each holding a request for its service time,
and an accept queue of ``queue_limit`` places (the listen backlog); a request that finds every
worker busy and the queue full is refused, as the kernel refuses a connection when the backlog
is full. Waiting requests get a worker in arrival order (FIFO), so one instance is an
M/G/c/c+K queue: Erlang C (M/M/c) and Pollaczek-Khinchine (M/G/1) are its oracles in the tests.
Envoy in front of it has worker threads that every request and every new connection hold for
their CPU cost, and the circuit breakers of its cluster (``model.capacity.EnvoyCapacity``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from simnet.model.capacity import EnvoyCapacity
from simnet.model.memory import KB_PER_MB, Footprint
from simnet.sim.metrics import InstanceSeries
from simnet.sim.workers import GONE, REFUSED, Workers

SERVED, OVERFLOW = 0, 1  # serve(): answered, or refused by Envoy's circuit breaker


class BinnedGauge:
    """A value over time kept as its maximum per time bin, carried forward between changes."""

    __slots__ = ("bins", "bin_s", "last", "value")

    def __init__(self, n: int, bin_s: float):
        self.bins = [0] * n
        self.bin_s = bin_s
        self.last = 0
        self.value = 0

    def set(self, now: float, value: int) -> None:
        b = min(int(now / self.bin_s), len(self.bins) - 1)
        bins = self.bins
        if b > self.last:
            carried = self.value
            for i in range(self.last + 1, b + 1):
                bins[i] = carried
            self.last = b
        self.value = value
        if value > bins[b]:
            bins[b] = value

    def close(self) -> list[int]:
        self.set(len(self.bins) * self.bin_s - 1e-9, self.value)
        return self.bins


class Sidecar:
    """Envoy in front of one instance: counts connections; memory follows the high-water mark.

    Memory grows per concurrent connection (derive's ``Footprint``: seed 002 said ~30 KB and
    never returned; today's Envoy, measured, 17-39 KB by listener kind, and it keeps its
    private pages too: the high-water mark). When Envoy plus the app pass the container's limit the kernel OOM-kills the
    container; Diego restarts it and its connections are gone.
    """

    __slots__ = ("guid", "app", "alive", "epoch", "conns", "highwater", "base_mb", "per_conn_mb",
                 "limit_mb", "used_mb", "series", "g_conns", "g_high", "oom_at", "service",
                 "footprint", "env", "workers", "envoy", "capacity", "requests", "metrics")

    def __init__(self, series: InstanceSeries, footprint: Footprint, used_mb: float, bins: int,
                 bin_s: float, service: Callable[[], float], *, env=None, concurrency: int = 1,
                 queue_limit: int = 0, capacity: EnvoyCapacity | None = None, metrics=None):
        self.service = service  # the app's service time sampler
        self.env = env
        self.metrics = metrics
        self.workers = Workers(env, concurrency, queue_limit, bins, bin_s)  # the app's
        self.capacity = capacity
        # Envoy's worker threads, when a request costs them anything
        self.envoy = (Workers(env, capacity.workers, bins=bins, bin_s=bin_s)
                      if capacity and (capacity.request_s or capacity.handshake_s) else None)
        self.requests = 0  # requests Envoy has in progress to the app (HTTP's max_requests)
        self.guid = series.guid
        self.app = series.app
        self.series = series
        self.alive = False
        self.epoch = 0  # bumped at every (re)start: connections from older epochs are dead
        self.conns = 0
        self.highwater = 0
        self.footprint = footprint
        self.base_mb = footprint.base_mb
        self.per_conn_mb = footprint.per_connection_kb / KB_PER_MB
        self.used_mb = used_mb
        self.limit_mb = series.quota_mb
        self.g_conns = BinnedGauge(bins, bin_s)
        self.g_high = BinnedGauge(bins, bin_s)
        self.oom_at = self._oom_threshold()

    def _oom_threshold(self) -> float:
        """Connections at which Envoy's memory pushes the container past its limit."""
        if self.per_conn_mb == 0:
            return float("inf")
        return (self.limit_mb - self.used_mb - self.base_mb) / self.per_conn_mb

    def start(self, now: float) -> None:
        self.alive = True
        self.epoch += 1
        self.conns = 0
        self.requests = 0
        self.highwater = 0
        self.g_conns.set(now, 0)
        self.g_high.set(now, 0)

    def stop(self, now: float) -> None:
        self.alive = False
        self.conns = 0
        self.g_conns.set(now, 0)
        self.workers.reset()  # the process is gone, and its workers with it
        if self.envoy:
            self.envoy.reset()

    def handshake(self) -> Generator:
        """Envoy's share of a new connection (accept, TLS, the upstream connect) on a worker
        thread: the time it took, or GONE."""
        if self.envoy is None or not self.capacity.handshake_s:
            return 0.0
        waited = yield from self.envoy.hold(self.capacity.handshake_s)
        if waited == GONE:
            return GONE
        self.metrics.queueing_s += waited
        self.metrics.cpu_s += self.capacity.handshake_s
        return waited + self.capacity.handshake_s

    def serve(self, out_s: float, inner_s: float, service_s: float, epoch: int, back_s: float,
              proxied: bool) -> Generator:
        """The request takes ``out_s`` to the sidecar, Envoy proxies it to the app (its CPU
        when ``proxied``, then ``inner_s`` to the app), the app serves it for ``service_s`` (on
        a free worker at once, else after waiting in the accept queue), and the answer takes
        ``back_s`` back. SERVED; REFUSED
        when the queue is full; OVERFLOW when Envoy's HTTP ``max_requests`` is reached (503
        UO); GONE when the instance died meanwhile."""
        if not self.alive or epoch != self.epoch:
            return GONE  # the instance died on the way in: the router sees it, not a refusal
        env, metrics, capacity = self.env, self.metrics, self.capacity
        if proxied and capacity is not None:
            if not capacity.tcp_proxy and self.requests >= capacity.overflow_at:
                self.series.overflow += 1
                return OVERFLOW
            envoy = self.envoy
            if envoy is not None and capacity.request_s:
                if out_s:
                    yield env.timeout(out_s)
                    out_s = 0.0
                    if not self.alive or epoch != self.epoch:
                        return GONE
                cpu = capacity.request_s
                metrics.cpu_s += cpu
                if envoy.take():  # a free thread: its CPU, then on to the app, in one step
                    env.timeout(cpu, envoy.generation).callbacks.append(envoy.done)
                    inner_s += cpu
                else:
                    waited = yield from envoy.hold(cpu)
                    if waited == GONE:
                        return GONE
                    metrics.queueing_s += waited
        self.requests += 1
        yield env.timeout(out_s + inner_s)
        workers = self.workers
        if not self.alive or epoch != self.epoch:
            return GONE
        if workers.take():  # a free worker: the service and the way back in one step
            env.timeout(service_s, workers.generation).callbacks.append(workers.done)
            yield env.timeout(service_s + back_s)
            waited = 0.0
        else:
            waited = yield from workers.hold(service_s, back_s)
        if epoch == self.epoch:
            self.requests -= 1
        if waited == REFUSED:
            self.series.refused += 1
            return REFUSED
        if waited == GONE or epoch != self.epoch:
            return GONE
        metrics.queueing_s += waited
        metrics.service_s += service_s
        return SERVED

    def open(self, now: float) -> bool | None:
        """Accept a connection; False if this one made the container run out of memory, None
        if Envoy's tcp_proxy closed it at once (``max_connections`` reached)."""
        capacity = self.capacity
        if capacity is not None and capacity.tcp_proxy and self.conns >= capacity.overflow_at:
            self.series.overflow += 1
            return None
        self.conns += 1
        self.series.connections_opened += 1
        self.g_conns.set(now, self.conns)
        if self.conns > self.highwater:
            self.highwater = self.conns
            self.g_high.set(now, self.conns)
            if self.conns > self.oom_at:
                self.series.oom_kills += 1
                self.stop(now)
                return False
        return True

    def close(self, now: float, epoch: int, proxied: bool = True) -> None:
        """A connection ends; one that did not go through Envoy (``proxied`` False) was never
        counted."""
        if proxied and epoch == self.epoch and self.alive:
            self.conns -= 1
            self.g_conns.set(now, self.conns)

    def finish(self, end_s: float) -> InstanceSeries:
        """The series, complete at ``end_s`` (the end of the run)."""
        s = self.series
        self.workers.report(s, end_s)
        if self.envoy is not None:
            self.envoy.close(end_s)
            s.envoy_utilisation = self.envoy.utilisation(end_s)
            s.envoy_peak_queue = self.envoy.peak_queue
        s.conns_max = self.g_conns.close()
        s.highwater = self.g_high.close()
        s.memory_mb = [round(self.footprint.memory_mb(h), 6) for h in s.highwater]
        s.peak_connections = max(s.conns_max, default=0)
        s.peak_memory_mb = max(s.memory_mb, default=0.0)
        return s
