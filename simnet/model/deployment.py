"""Derive a deployment from a scenario: placement, addresses, ports, routes and fault timeline.

This is the pure "derive" lens: no time passes and nothing is opened. The simulator, the
report, the questions, the analysis and the real-component adapters consume the
``Deployment`` it returns and never re-derive any of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simnet.errors import Error, Loc, PortRangeExhausted
from simnet.model.interception import CapturedPath
from simnet.model.capacity import EnvoyCapacity, RouterCapacity, envoy_capacity
from simnet.model.cpu import packaged_cpu_calibration
from simnet.model.memory import additional_allocation_mb, listener_kind
from simnet.model.placement import (MAX_CONTAINERS, Address, Cells, Endpoint, Instance, Listener,
                                    Weights, make_instance, mapping_count)
from simnet.model.platform import Platform, platform_of
from simnet.model.timeline import Change, Event, timeline
from simnet.model.tls import Verdict
from simnet.scenario.schema import Scenario


@dataclass(frozen=True)
class Deployment:
    """Everything derived from one scenario, and the only source of derived facts downstream:
    which instances run where with what memory, the route table and weights routers start
    with, what answers at each address, gorouter's TLS verdicts, the timeline of events, and
    the platform object that answers what differs between Diego, Istio and BOSH."""

    scenario: Scenario
    platform: Platform
    additional_mb: int  # what the cell adds to every container's limit for Envoy
    listener_kind: str  # the sidecars' listener kind (memory calibration: tls, mtls, ...)
    # gorouter's verdict on a new TLS connection to a sidecar, keyed by (the instance that
    # answers is the one the route names, its identity certificate has expired)
    backend_verdicts: dict[tuple[bool, bool], Verdict]
    instances: tuple[Instance, ...]
    routes: dict[str, tuple[Endpoint, ...]]  # route table every router starts with
    running: tuple[str, ...]  # guids running at t=0
    listeners: dict[str, tuple[tuple[Address, Listener], ...]]  # guid -> what it serves where
    events: tuple[Event, ...] = field(default=())
    # route host -> how a client's connection to it leaves the client's host (bosh: via the
    # VM's VIP rule into its local Envoy, or not); hosts not listed go straight to the ingress
    client_paths: dict[str, CapturedPath] = field(default_factory=dict)
    # cf-for-k8s: host -> the weights of its route's destinations (Services) at t=0
    weights: dict[str, Weights] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()  # pushes and route mappings after t=0
    envoy: EnvoyCapacity | None = None  # what each sidecar Envoy can carry (None: no proxy)
    router: RouterCapacity | None = None  # each router's CPU, connection cap and timeouts

    def instance(self, guid: str) -> Instance:
        return next(i for i in self.instances if i.guid == guid)

    @property
    def backend_verdict(self) -> Verdict:
        """The verdict when the route's own instance answers with a valid certificate."""
        return self.backend_verdicts[True, False]


class DeriveError(Error, ValueError):
    """Problems found while deriving, each located by its path in the scenario."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))


def _configuration_problems(s: Scenario, platform: Platform):
    yield from platform.configuration_problems(s)
    for k, f in enumerate(s.faults):
        if f.kind == "stop" and platform.name != "diego":
            yield ("faults", k, "kind"), (
                f"stop is Diego's graceful stop (the rep's credential manager); on "
                f"{platform.name} use kill")
    total = sum(a.instances for a in s.apps)
    if total > MAX_CONTAINERS:
        yield ("apps",), f"{total} instances: simnet addresses at most {MAX_CONTAINERS} containers"


def derive(s: Scenario) -> Deployment:
    """Derive the deployment, or raise DeriveError listing every problem with its location."""
    platform = platform_of(s)
    problems = list(_configuration_problems(s, platform))
    if problems:
        raise DeriveError(problems)
    extra = additional_allocation_mb(s.proxy, max(mapping_count(s, a) for a in s.apps))
    cells = Cells(s.cells.count, s.cells.memory_mb)
    instances: list[Instance] = []
    for a, app in enumerate(s.apps):
        need = app.memory_mb + extra
        placed = 0
        for index in range(app.instances):
            cell = cells.place(need, app.name)
            if cell is None:
                break
            try:
                instances.append(make_instance(s, app, index, 0, cell, cells, extra))
            except PortRangeExhausted as e:
                problems.append((("apps", a, "ports"), str(e)))
                placed = app.instances  # reported; placement is not the problem
                break
            placed += 1
        if placed < app.instances:
            problems.append((("apps", a, "instances"), (
                f"only {placed} of {app.instances} instances fit: each needs {need} MB "
                f"({app.memory_mb} quota + {extra} additional) and {s.cells.count} cells of "
                f"{s.cells.memory_mb} MB never overcommit"
            )))
    if problems:
        raise DeriveError(problems)
    pushed_later = {a.name for a in s.apps if a.start_s > 0}
    initial = [i for i in instances if i.app not in pushed_later]
    mapped = frozenset(k for k, r in enumerate(s.routes) if r.at_s == 0)
    later = timeline(s, platform, instances, cells, extra, problems)
    if problems:
        raise DeriveError(problems)
    instances += later.started
    table = platform.route_table(s, initial, mapped)
    return Deployment(
        scenario=s,
        platform=platform,
        additional_mb=extra,
        listener_kind=listener_kind(s.proxy),
        backend_verdicts=platform.verdicts(s),
        instances=tuple(instances),
        routes=table.endpoints,
        running=tuple(i.guid for i in initial),
        listeners={i.guid: tuple(platform.listeners(s, i)) for i in instances},
        events=tuple(later.events),
        client_paths=platform.client_paths(s),
        weights=table.weights,
        changes=tuple(later.changes),
        envoy=envoy_capacity(s, platform.envoy_workers(s), listener_kind(s.proxy),
                             packaged_cpu_calibration()) if s.proxy.enabled else None,
        router=platform.router_capacity(s),
    )
