"""Streaming metrics: counters and fixed-width time bins, never one object per request.

A run of 10^6 requests keeps one float per request (its latency, for exact percentiles) and
a few numbers per time bin and instance; everything else is a counter.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

from simnet.model.placement import Instance

STATUSES = (200, 404, 496, 502, 503, 525, 526)


@dataclass
class InstanceSeries:
    """Per-sidecar figures, one value per time bin, beside the derived instance they observe
    (its limits are the Deployment's, copied here so a series can be read on its own)."""

    guid: str
    app: str
    index: int
    cell: int
    quota_mb: float
    conns_max: list[int]
    highwater: list[int]
    memory_mb: list[float] = field(default_factory=list)
    peak_connections: int = 0
    peak_memory_mb: float = 0.0
    connections_opened: int = 0
    oom_kills: int = 0
    refused: int = 0  # requests the app refused: every worker busy and its accept queue full
    peak_queue: int = 0  # the most requests that waited for a worker at once
    utilisation: float = 0.0  # busy workers over the run, as a share of the app's concurrency
    mean_queue: float = 0.0  # requests waiting for a worker, averaged over the run
    utilisation_per_bin: list[float] = field(default_factory=list)
    queue_per_bin: list[float] = field(default_factory=list)  # mean requests waiting, per bin
    overflow: int = 0  # connections or requests Envoy's circuit breakers turned away
    envoy_utilisation: float = 0.0  # Envoy's worker threads busy, as a share of them
    envoy_peak_queue: int = 0  # the most requests and handshakes that waited for a thread
    envoy_limit_mb: float | None = None  # Instance.envoy_limit_mb
    app_quota_mb: float | None = None  # Instance.app_quota_mb
    instance: Instance | None = None  # the derived instance, when the series comes from a run

    @classmethod
    def of(cls, inst: Instance) -> InstanceSeries:
        """An empty series for a derived instance."""
        return cls(inst.guid, inst.app, inst.index, inst.cell, inst.quota_mb, [], [],
                   envoy_limit_mb=inst.envoy_limit_mb, app_quota_mb=inst.app_quota_mb,
                   instance=inst)

    @property
    def reported_peak_mb(self) -> float | None:
        """What Diego reports for the container when Envoy is at its peak
        (``Instance.reported_mb``); None for a series not made from a derived instance."""
        return None if self.instance is None else self.instance.reported_mb(self.peak_memory_mb)


@dataclass
class RouterSeries:
    """One router's figures: its cores' utilisation and queue, overall and per time bin, and
    its requests in progress (mean, with the throughput and mean time: Little's law)."""

    index: int
    utilisation: float = 0.0
    mean_queue: float = 0.0  # requests waiting for a core, averaged over the run
    peak_queue: int = 0
    utilisation_per_bin: list[float] = field(default_factory=list)
    queue_per_bin: list[float] = field(default_factory=list)
    mean_in_progress: float = 0.0
    handled: int = 0  # requests it answered
    mean_time_s: float = 0.0  # their mean time in the router (lookup to answer)

    def summary(self) -> dict:
        return {"index": self.index, "utilisation": round(self.utilisation, 6),
                "mean_queue": round(self.mean_queue, 6), "peak_queue": self.peak_queue,
                "mean_in_progress": round(self.mean_in_progress, 6),
                "handled": self.handled, "mean_time_ms": round(self.mean_time_s * 1000, 6)}


HOPS = ("network", "connect", "queueing", "cpu", "service")  # Metrics.breakdown's parts


@dataclass
class Metrics:
    """What a run observed; filled in by the simulation, read by the report."""

    duration_s: float
    bin_s: float
    issued: int = 0
    in_flight: int = 0  # counted on its own (+1 issued, -1 answered or timed out): conservation
    timed_out: int = 0  # requests the client gave up on (not answered, not lost)
    causes: Counter = field(default_factory=Counter)  # why requests failed, as the router says
    # seconds spent, summed over every request and attempt: on the wire, in TCP and TLS
    # handshakes, waiting for a server (app worker, Envoy thread, router core), on CPU, served
    network_s: float = 0.0
    connect_s: float = 0.0
    queueing_s: float = 0.0
    cpu_s: float = 0.0
    service_s: float = 0.0
    routers: list[RouterSeries] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    latencies_ms: array = field(default_factory=lambda: array("d"))
    requests_per_bin: list[int] = field(default_factory=list)
    issued_per_bin: list[int] = field(default_factory=list)  # the offered load, by send time
    errors_per_bin: list[int] = field(default_factory=list)
    misdelivered_per_bin: list[int] = field(default_factory=list)
    connections_opened: int = 0
    tls_handshakes: int = 0
    retries: int = 0
    endpoints_pruned: int = 0
    misdelivered: int = 0
    instances: list[InstanceSeries] = field(default_factory=list)
    # when each failed request was issued, by (host, status): the 404/503 windows of a push
    failures: dict[tuple[str, int], array] = field(default_factory=dict)
    served: Counter = field(default_factory=Counter)  # (host, app) -> requests answered 200

    def failed(self, host: str, status: int, t: float) -> None:
        times = self.failures.get((host, status))
        if times is None:
            times = self.failures[host, status] = array("d")
        times.append(t)

    def windows(self, changes) -> list[dict]:
        """For each control-plane change, the requests to its hosts that failed from the change
        until the next change of the same host (or the end), by status: how many, first, last."""
        out = []
        for n, c in enumerate(changes):
            end = next((later.at_s for later in changes[n + 1:] if set(later.hosts) & set(c.hosts)),
                       self.duration_s)
            statuses: dict[str, dict] = {}
            for (host, status), times in sorted(self.failures.items()):
                inside = [t for t in times if host in c.hosts and c.at_s <= t < end]
                if inside:
                    w = statuses.setdefault(str(status), {"requests": 0, "first_s": inside[0],
                                                          "last_s": inside[-1]})
                    w["requests"] += len(inside)
                    w["first_s"] = min(w["first_s"], inside[0])
                    w["last_s"] = max(w["last_s"], inside[-1])
            out.append({"what": c.what, "at_s": c.at_s, "effective_s": c.effective_s,
                        "hosts": list(c.hosts), "failed": statuses})
        return out

    def __post_init__(self) -> None:
        n = self.bins
        self.requests_per_bin = [0] * n
        self.issued_per_bin = [0] * n
        self.errors_per_bin = [0] * n
        self.misdelivered_per_bin = [0] * n
        self.last_bin = n - 1

    @property
    def bins(self) -> int:
        return max(1, math.ceil(self.duration_s / self.bin_s - 1e-9))

    def bin_of(self, t: float) -> int:
        b = int(t / self.bin_s)
        return b if b < self.last_bin else self.last_bin

    @property
    def completed(self) -> int:
        return sum(self.outcomes.values())

    def breakdown_ms(self) -> dict[str, float]:
        """Where a request's time goes, per completed request on average, in ms: the sum
        over every hop and attempt (timed-out and failed requests included) over completed."""
        n = max(1, self.completed)
        return {hop: round(getattr(self, f"{hop}_s") * 1000 / n, 6) for hop in HOPS}

    def percentile(self, q: float) -> float | None:
        """Latency percentile (nearest-rank), in ms; None with no completed request."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1]

    def summary(self) -> dict:
        """The machine-readable numbers of a run (summary.json)."""
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1], 6)

        return {
            "requests": {
                "issued": self.issued,
                "completed": self.completed,
                "succeeded": self.outcomes[200],
                "failed": self.completed - self.outcomes[200],
                "timed_out": self.timed_out,
                "in_flight": self.in_flight,
                "outcomes": {str(k): self.outcomes[k] for k in sorted(self.outcomes)},
                "misdelivered": self.misdelivered,
                "retries": self.retries,
            },
            "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99),
                           "max": round(ordered[-1], 6) if ordered else None},
            "errors_by_cause": dict(sorted(self.causes.items())),
            "time_breakdown_ms": self.breakdown_ms(),
            "routers": [r.summary() for r in self.routers],
            "connections_opened": self.connections_opened,
            "tls_handshakes": self.tls_handshakes,
            "endpoints_pruned": self.endpoints_pruned,
            "served": {host: {app: n for (h, app), n in sorted(self.served.items()) if h == host}
                       for host in sorted({h for h, _ in self.served})},
            "instances": [
                {"guid": i.guid, "app": i.app, "index": i.index, "cell": i.cell,
                 "quota_mb": i.quota_mb, "peak_connections": i.peak_connections,
                 "peak_memory_mb": round(i.peak_memory_mb, 6),
                 "connections_opened": i.connections_opened, "oom_kills": i.oom_kills,
                 "refused": i.refused, "peak_queue": i.peak_queue,
                 "utilisation": round(i.utilisation, 6), "mean_queue": round(i.mean_queue, 6),
                 "overflow": i.overflow, "envoy_utilisation": round(i.envoy_utilisation, 6),
                 "envoy_peak_queue": i.envoy_peak_queue,
                 "envoy_limit_mb": i.envoy_limit_mb,
                 "reported_memory_mb": None if (r := i.reported_peak_mb) is None
                 else round(r, 6)}
                for i in self.instances
            ],
        }
