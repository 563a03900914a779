"""A pool of identical servers with a FIFO queue: an app's workers, Envoy's worker threads, a
router's cores.

A job that finds a server free holds it for its service time; otherwise it waits in arrival
order, and with the queue full it is refused (an app's full listen backlog). The pool keeps
the time integrals of busy servers and waiting jobs per time bin, for utilisation and mean
queue over time (and Little's law in the tests), without an object per job.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator

REFUSED = -1.0  # hold(): every server busy and the queue full
GONE = -2.0  # hold(): the pool was reset (its process died) while the job waited


class Workers:
    """``servers`` servers and a queue of at most ``limit`` waiting jobs."""

    __slots__ = ("env", "servers", "limit", "busy", "queue", "since", "generation", "bin_s",
                 "last_bin", "busy_bins", "queue_bins", "peak_queue", "refused", "waited_s",
                 "bin", "bin_end")

    def __init__(self, env, servers: int, limit: float = math.inf, bins: int = 1,
                 bin_s: float = math.inf):
        self.env = env
        self.servers = servers
        self.limit = limit
        self.busy = 0
        self.queue: deque = deque()  # waiting jobs' grant events, in arrival order
        self.since = 0.0  # when busy or the queue last changed
        self.generation = 0  # bumped by reset(): jobs holding a server from before let go of nothing
        self.bin_s = bin_s
        self.last_bin = bins - 1
        self.busy_bins = [0.0] * bins  # server-seconds busy, per time bin
        self.queue_bins = [0.0] * bins  # job-seconds waiting, per time bin
        self.peak_queue = 0
        self.refused = 0
        self.waited_s = 0.0  # total time jobs waited for a server
        self.bin = 0  # the bin ``since`` is in, and where it ends
        self.bin_end = bin_s if bins > 1 else math.inf

    def _account(self, now: float) -> None:
        """Add the time since the last change to the busy and queue integrals of its bins."""
        since = self.since
        if now <= since:
            return
        self.since = now
        busy, waiting = self.busy, len(self.queue)
        b = self.bin
        if now < self.bin_end:  # the common case: still in the same bin
            if busy:
                self.busy_bins[b] += busy * (now - since)
            if waiting:
                self.queue_bins[b] += waiting * (now - since)
            return
        bin_s, last = self.bin_s, self.last_bin
        end = min(int(now / bin_s), last)
        while b < end:
            edge = (b + 1) * bin_s
            self.busy_bins[b] += busy * (edge - since)
            self.queue_bins[b] += waiting * (edge - since)
            since = edge
            b += 1
        self.busy_bins[b] += busy * (now - since)
        self.queue_bins[b] += waiting * (now - since)
        self.bin = b
        self.bin_end = (b + 1) * bin_s if b < last else math.inf

    def take(self) -> bool:
        """Take a free server at once, if there is one (the fast path of ``hold``)."""
        if self.busy < self.servers:
            self._account(self.env.now)
            self.busy += 1
            return True
        return False

    def done(self, event) -> None:
        """A held server's time is up (a timeout's callback; its value is the generation the
        server was taken in): release it unless the pool was reset since."""
        if event.value == self.generation:
            self.release()

    def hold(self, seconds: float, then_s: float = 0.0) -> Generator:
        """Hold a server for ``seconds`` and return ``then_s`` later (the server is released
        on time by a callback, so the job resumes once): the time waited, or REFUSED / GONE."""
        env = self.env
        generation = self.generation
        if self.busy < self.servers:
            self._account(env.now)
            self.busy += 1
            waited = 0.0
        elif len(self.queue) < self.limit:
            self._account(env.now)
            granted = env.event()
            self.queue.append(granted)
            if len(self.queue) > self.peak_queue:
                self.peak_queue = len(self.queue)
            t = env.now
            if not (yield granted):
                return GONE
            waited = env.now - t
            self.waited_s += waited
        else:
            self.refused += 1
            return REFUSED
        if then_s:
            env.timeout(seconds, generation).callbacks.append(self.done)
            yield env.timeout(seconds + then_s)
        else:
            yield env.timeout(seconds)
            if generation == self.generation:
                self.release()
        return waited

    def release(self) -> None:
        """A job is done: its server goes to the next job in line, or becomes free."""
        self._account(self.env.now)
        if self.queue:
            self.queue.popleft().succeed(True)
        else:
            self.busy -= 1

    def reset(self) -> None:
        """The process behind the pool died: its servers are gone and waiting jobs get GONE."""
        self._account(self.env.now)
        self.generation += 1
        self.busy = 0
        queue, self.queue = self.queue, deque()
        for waiting in queue:
            waiting.succeed(False)

    def close(self, end_s: float) -> None:
        """Bring the integrals up to the end of the run."""
        self._account(end_s)

    def report(self, series, end_s: float) -> None:
        """Write the pool's figures at ``end_s`` onto a series (an instance's or a router's):
        ``utilisation``, ``mean_queue``, ``peak_queue`` and their per-bin values."""
        self.close(end_s)
        series.utilisation = self.utilisation(end_s)
        series.mean_queue = self.mean_queue(end_s)
        series.peak_queue = self.peak_queue
        series.utilisation_per_bin = self.utilisation_per_bin()
        series.queue_per_bin = self.queue_per_bin()

    def utilisation(self, end_s: float) -> float:
        """Busy servers over the run, as a share of all of them."""
        return sum(self.busy_bins) / (self.servers * end_s) if end_s > 0 else 0.0

    def mean_queue(self, end_s: float) -> float:
        return sum(self.queue_bins) / end_s if end_s > 0 else 0.0

    def utilisation_per_bin(self) -> list[float]:
        """Per time bin, the share of server time that was busy (the last bin may be short)."""
        return [round(a / (self.servers * self.bin_s), 6) for a in self.busy_bins]

    def queue_per_bin(self) -> list[float]:
        """Per time bin, the mean number of jobs waiting."""
        return [round(a / self.bin_s, 6) for a in self.queue_bins]


class Occupancy:
    """Jobs in a place over time, for Little's law (L = lambda W): the time integral of how
    many are in it, and the number and total time of those that left."""

    __slots__ = ("now", "since", "area", "left", "total_s")

    def __init__(self):
        self.now = 0  # jobs inside now
        self.since = 0.0
        self.area = 0.0
        self.left = 0
        self.total_s = 0.0

    def enter(self, t: float) -> None:
        self.area += self.now * (t - self.since)
        self.since = t
        self.now += 1

    def leave(self, t: float, spent_s: float) -> None:
        self.area += self.now * (t - self.since)
        self.since = t
        self.now -= 1
        self.left += 1
        self.total_s += spent_s

    def close(self, end_s: float) -> None:
        self.area += self.now * (end_s - self.since)
        self.since = end_s
