"""A running app instance as the network sees it: its Envoy sidecar and the app behind it.

The app has a capacity: ``concurrency`` workers, each holding a request for its service time,
and an accept queue of ``queue_limit`` places (the listen backlog); a request that finds every
worker busy and the queue full is refused, as the kernel refuses a connection when the backlog
is full. Waiting requests get a worker in arrival order (FIFO), so one instance is an
M/G/c/c+K queue: Erlang C (M/M/c) and Pollaczek-Khinchine (M/G/1) are its oracles in the tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator

from simnet.model.memory import KB_PER_MB, Footprint
from simnet.sim.metrics import InstanceSeries


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
                 "footprint", "concurrency", "queue_limit", "busy", "queue", "env", "since",
                 "busy_area", "queue_area")

    def __init__(self, series: InstanceSeries, footprint: Footprint, used_mb: float, bins: int,
                 bin_s: float, service: Callable[[], float], *, env=None, concurrency: int = 1,
                 queue_limit: int = 0):
        self.service = service  # the app's service time sampler
        self.env = env
        self.concurrency = concurrency  # the app's workers
        self.queue_limit = queue_limit  # its accept queue
        self.busy = 0  # workers serving a request now
        self.queue: deque = deque()  # requests waiting for a worker: events, in arrival order
        # time integrals of busy workers and waiting requests, for utilisation and mean queue
        self.since = 0.0
        self.busy_area = 0.0
        self.queue_area = 0.0
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
        self.highwater = 0
        self.g_conns.set(now, 0)
        self.g_high.set(now, 0)

    def stop(self, now: float) -> None:
        self.alive = False
        self.conns = 0
        self.g_conns.set(now, 0)
        self._account(now)
        self.busy = 0  # the process is gone, and its workers with it
        queue, self.queue = self.queue, deque()
        for waiting in queue:
            waiting.succeed(False)

    def _account(self, now: float) -> None:
        """Add the time since the last change to the busy and queue integrals."""
        dt = now - self.since
        if dt:
            self.busy_area += self.busy * dt
            self.queue_area += len(self.queue) * dt
            self.since = now

    def serve(self, service_s: float, epoch: int) -> Generator:
        """The app serves one request for ``service_s``: on a free worker at once, else after
        waiting in the accept queue; False when the queue is full (refused, not served)."""
        if not self.alive or epoch != self.epoch:
            return True  # the instance died on the way in: the router sees it, not a refusal
        if self.busy < self.concurrency:
            self._account(self.env.now)
            self.busy += 1
        elif len(self.queue) < self.queue_limit:
            self._account(self.env.now)
            granted = self.env.event()
            self.queue.append(granted)
            series = self.series
            if len(self.queue) > series.peak_queue:
                series.peak_queue = len(self.queue)
            if not (yield granted):
                return True  # the instance died while the request waited: the router sees it
        else:
            self.series.refused += 1
            return False
        yield self.env.timeout(service_s)
        if epoch == self.epoch and self.alive:
            self._account(self.env.now)
            if self.queue:
                self.queue.popleft().succeed(True)  # the worker goes to the next in line
            else:
                self.busy -= 1
        return True

    def open(self, now: float) -> bool:
        """Accept a connection; False if this one made the container run out of memory."""
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

    def close(self, now: float, epoch: int) -> None:
        if epoch == self.epoch and self.alive:
            self.conns -= 1
            self.g_conns.set(now, self.conns)

    def finish(self, end_s: float) -> InstanceSeries:
        """The series, complete at ``end_s`` (the end of the run)."""
        s = self.series
        self._account(end_s)
        if end_s > 0:
            s.utilisation = self.busy_area / (self.concurrency * end_s)
            s.mean_queue = self.queue_area / end_s
        s.conns_max = self.g_conns.close()
        s.highwater = self.g_high.close()
        s.memory_mb = [round(self.footprint.memory_mb(h), 6) for h in s.highwater]
        s.peak_connections = max(s.conns_max, default=0)
        s.peak_memory_mb = max(s.memory_mb, default=0.0)
        return s
