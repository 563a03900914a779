"""What an emulation observed, as the ``Metrics`` a simulated run fills in, so ``summary.json``
and the report have exactly the schema ``simnet run`` writes.

Each request the load generator sent is one outcome: its status, or, when the load balancer's
connection failed (no HTTP answer at all), 502 with the failure as the cause; a client timeout
is counted as timed out, as the simulator counts it. A 200 whose ``X-Simnet-App`` is not the
app the host routes to is misdelivered. Retries, prunes, connections and handshakes are the
routers' own counters; peak connections and Envoy's memory the sidecars' samples (established
connections in the container's kernel table, smaps_rollup Private_Dirty of Envoy, the measure
the memory model is fitted on). The time breakdown is not observable from outside the
processes and stays zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simnet.model.deployment import Deployment
from simnet.model.timeline import RoutesChanged
from simnet.sim.metrics import InstanceSeries, Metrics, RouterSeries

@dataclass
class Sample:
    """One instance's sidecar at one moment: established connections and Envoy's memory
    (None when this sample did not read it)."""

    t: float
    connections: int
    private_mb: float | None


@dataclass
class Observed:
    """What the emulation saw: the generator's requests, the routers' and apps' counters,
    the sidecars' samples, and what of the timeline could not be applied."""

    load: dict
    routers: list[dict]
    apps: dict[str, dict]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    alive_s: dict[str, float] = field(default_factory=dict)  # seconds each instance ran
    not_applied: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)  # events applied later than LATE_S
    wall_s: float = 0.0

    def facts(self) -> dict:
        """What the report says about the emulation itself: whether the load generator kept
        its schedule, and what of the timeline was not applied or applied late."""
        return {"send_lag_ms": self.load.get("send_lag_ms"), "not_applied": self.not_applied,
                "late": self.late}


# load generator record fields, in order (real/twin/main.go, ``load``)
(CLIENT, INTENDED_S, LAG_MS, LATENCY_MS, STATUS, ERROR, APP, GUID, CAUSE, ROUTER_MS, BACKEND_MS,
 APP_MS, SLEPT_MS, ROUTER_SLEPT_MS) = range(14)


def host_apps(d: Deployment) -> dict[str, set[str]]:
    """The apps each host routes to, over the whole run (a route may be remapped)."""
    apps: dict[str, set[str]] = {}
    for host, endpoints in d.routes.items():
        apps.setdefault(host, set()).update(e.app for e in endpoints)
    for event in d.events:
        if isinstance(event, RoutesChanged):
            for host, endpoints in event.routes:
                apps.setdefault(host, set()).update(e.app for e in endpoints)
    return apps


def metrics_of(d: Deployment, observed: Observed) -> Metrics:
    """The emulation's observations as a run's ``Metrics``."""
    s = d.scenario
    m = Metrics(duration_s=s.duration_s, bin_s=s.time_bin_s)
    hosts = [c.host for c in s.clients]
    expected = host_apps(d)
    for r in observed.load["requests"]:
        host = hosts[r[CLIENT]]
        t0 = r[INTENDED_S]
        m.issued += 1
        m.issued_per_bin[m.bin_of(t0)] += 1
        end_bin = m.bin_of(t0 + r[LATENCY_MS] / 1000)
        status = r[STATUS]
        if status == 0 and r[ERROR] == "timeout":
            m.timed_out += 1
            m.causes["client timeout"] += 1
            m.errors_per_bin[end_bin] += 1
            continue
        cause = r[CAUSE] or (f"load balancer connection {r[ERROR]}" if status == 0
                             else f"answered {status}")
        if status == 0:
            status = 502
        m.outcomes[status] += 1
        m.latencies_ms.append(r[LATENCY_MS])
        m.requests_per_bin[end_bin] += 1
        if status != 200:
            m.errors_per_bin[end_bin] += 1
            m.causes[cause] += 1
            m.failed(host, status, t0)
            continue
        app = r[APP]
        m.served[host, app] += 1
        if app and app not in expected.get(host, ()):
            m.misdelivered += 1
            m.misdelivered_per_bin[m.bin_of(t0)] += 1
    for k, stats in enumerate(observed.routers):
        m.retries += stats.get("retries", 0)
        m.endpoints_pruned += stats.get("endpoints_pruned", 0)
        m.connections_opened += stats.get("connections_opened", 0)
        m.tls_handshakes += stats.get("tls_handshakes", 0)
        m.routers.append(RouterSeries(k, handled=stats.get("handled", 0)))
    m.instances = [_instance(d, inst, observed, m) for inst in d.instances]
    return m


def _instance(d: Deployment, inst, observed: Observed, m: Metrics) -> InstanceSeries:
    series = InstanceSeries.of(inst)
    samples = observed.samples.get(inst.guid, [])
    conns = [0] * m.bins
    memory = [0.0] * m.bins
    for sample in samples:
        if 0 <= sample.t < m.duration_s:
            b = m.bin_of(sample.t)
            conns[b] = max(conns[b], sample.connections)
            if sample.private_mb is not None:
                memory[b] = max(memory[b], sample.private_mb)
    series.conns_max = conns
    series.highwater = conns  # sampled: the most seen in the bin
    series.memory_mb = memory
    series.peak_connections = max((x.connections for x in samples), default=0)
    series.peak_memory_mb = max((x.private_mb for x in samples if x.private_mb is not None),
                                default=0.0)
    app = observed.apps.get(inst.guid, {})
    alive = observed.alive_s.get(inst.guid, 0.0)
    concurrency = d.scenario.app(inst.app).concurrency
    series.refused = app.get("refused", 0)
    series.peak_queue = app.get("peak_queue", 0)
    if alive:
        series.utilisation = app.get("busy_s", 0.0) / (concurrency * alive)
        series.mean_queue = app.get("queue_s", 0.0) / alive
    return series
