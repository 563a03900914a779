"""Derive a deployment from a scenario: placement, addresses, ports, routes and fault timeline.

This is the pure "derive" lens: no time passes and nothing is opened. The simulator and the
real-component adapters consume the ``Deployment`` it returns and never re-derive any of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from simnet.errors import PortRangeExhausted
from simnet.model.gateway import gateway_destinations
from simnet.model.interception import (CapturedPath, bosh_client, bosh_vip, istio_config,
                                       istio_inbound)
from simnet.model.memory import (NO_PROXY, Footprint, additional_allocation_mb, footprint,
                                 listener_kind)
from simnet.model.ports import ProxyPorts, instance_ports, proxy_ports
from simnet.model.tls import Verdict, backend_verdicts
from simnet.scenario.schema import App, MoveFault, Scenario
from simnet.scenario.source import Loc

CONTAINER_NET = ipaddress.ip_address("198.18.0.0")  # benchmarking range, never routed
CELL_NET = ipaddress.ip_address("198.19.0.0")
HOST_PORT_START = 61001  # garden hands out host ports per cell from here upward
MAX_CONTAINERS = 65_000
ISTIO_INBOUND_PORT = 15006
GATEWAY_IP = "198.19.255.254"  # the istio ingress gateway's pod, as the app pods see it

Address = tuple[str, int]


@dataclass(frozen=True)
class Instance:
    """One app instance in its container on a cell."""

    guid: str
    app: str
    index: int
    cell: int
    cell_ip: str
    container_ip: str
    proxy: ProxyPorts | None
    cf_instance_ports: tuple[dict, ...]
    host_ports: dict[int, int]  # container port -> host port on the cell
    quota_mb: int  # app quota + additional allocation: the container's real limit
    base_used_mb: float  # app process + sidecar processes, before Envoy
    envoy: Footprint = NO_PROXY  # the sidecar's memory: base MB and KB per connection


@dataclass(frozen=True)
class Endpoint:
    """A route registration: where the router dials, and whom it expects to find there."""

    address: Address
    guid: str  # server_cert_domain_san for TLS routes
    app: str
    tls: bool
    service: str = ""  # cf-for-k8s: the Kubernetes Service (route destination) it stands behind


Weights = tuple[tuple[str, int], ...]  # (Service, weight) of a host's route, in order


@dataclass(frozen=True)
class Listener:
    """What answers at an address: which instance, and whether it speaks TLS there."""

    guid: str
    app: str
    tls: bool


@dataclass(frozen=True)
class Event:
    """A change at a point in simulated time, derived from a fault."""

    at_s: float
    # "stop" | "start" | "routes" | "cert_expired" | "cert_rotated" | "router_down" |
    # "router_up" | "latency"
    kind: str
    guid: str = ""
    routes: tuple[tuple[str, tuple[Endpoint, ...]], ...] = ()
    weights: tuple[tuple[str, Weights], ...] = ()  # hosts whose destination weights changed
    router: int = 0  # router_down, router_up: which router
    hop: str = ""  # latency: which hop, and the change in its extra delay (+ at start, - at end)
    extra_s: float = 0.0


@dataclass(frozen=True)
class Change:
    """A control-plane change (``cf push``, ``cf map-route``) and when routers have it."""

    at_s: float
    effective_s: float
    what: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Deployment:
    scenario: Scenario
    additional_mb: int
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

    def instance(self, guid: str) -> Instance:
        return next(i for i in self.instances if i.guid == guid)

    @property
    def backend_verdict(self) -> Verdict:
        """The verdict when the route's own instance answers with a valid certificate."""
        return self.backend_verdicts[True, False]


class DeriveError(ValueError):
    """Problems found while deriving, each located by its path in the scenario."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))


def instance_guid(seed: int, app: str, index: int, generation: int = 0) -> str:
    """A stable instance guid in Diego's 8-4-4-4-4 hex form."""
    h = hashlib.sha256(f"{seed}/{app}/{index}/{generation}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:24]}"


class _Cells:
    """Cell memory and host ports, handed out without overcommit (the rep never overcommits)."""

    def __init__(self, count: int, memory_mb: int):
        self.free = [memory_mb] * count
        self.next_host_port = [HOST_PORT_START] * count
        self.next_container = 0

    def place(self, need_mb: int, avoid: int | None = None) -> int | None:
        """The cell with the most free memory that fits (Diego's auction spreads load)."""
        best = None
        for c, free in enumerate(self.free):
            if c != avoid and free >= need_mb and (best is None or free > self.free[best]):
                best = c
        if best is not None:
            self.free[best] -= need_mb
        return best

    def host_ports(self, cell: int, n: int) -> int:
        start = self.next_host_port[cell]
        self.next_host_port[cell] += n
        return start

    def container_ip(self) -> str:
        self.next_container += 1
        return str(CONTAINER_NET + self.next_container)


def _mappings(s: Scenario, app: App) -> int:
    """Port mappings (Envoy listeners) of an app's sidecar: ``auto`` sizes the cell-wide
    additional allocation for the app with the most."""
    if not s.proxy.enabled:
        return 1
    try:
        return len(proxy_ports(app.ports).mappings)
    except PortRangeExhausted:
        return 1  # reported where the instance is made


def _container_ports(app: App, pp: ProxyPorts | None, unproxied: bool) -> list[int]:
    """Container ports the cell maps to host ports, in the order they are requested."""
    ports = list(dict.fromkeys(app.ports)) if (unproxied or pp is None) else []
    if pp is not None:
        ports += [pp.proxy_for(p) for p in dict.fromkeys(app.ports)]
    return ports


def _make_instance(s: Scenario, app: App, index: int, generation: int, cell: int,
                   cells: _Cells, extra_mb: int) -> Instance:
    pp = proxy_ports(app.ports) if s.proxy.enabled else None
    unproxied = s.proxy.enable_unproxied_port_mappings
    mapped = _container_ports(app, pp, unproxied)
    start = cells.host_ports(cell, len(mapped))
    host = {p: start + i for i, p in enumerate(mapped)}
    used = app.memory_used_mb if app.memory_used_mb is not None else app.memory_mb / 2
    return Instance(
        guid=instance_guid(s.seed, app.name, index, generation),
        app=app.name,
        index=index,
        cell=cell,
        cell_ip=str(CELL_NET + 1 + cell),
        container_ip=cells.container_ip(),
        proxy=pp,
        cf_instance_ports=tuple(instance_ports(app.ports, pp, start, unproxied)),
        host_ports=host,
        quota_mb=app.memory_mb + extra_mb,
        # sidecar processes run beside the process types they name, inside its quota
        base_used_mb=used + sum(sc.memory_mb for sc in app.sidecars
                                if app.process_type in sc.process_types),
        envoy=(footprint(s.proxy.memory, listener_kind(s.proxy), len(pp.mappings))
               if pp is not None else NO_PROXY),
    )


def _endpoint(s: Scenario, inst: Instance, port: int, service: str = "") -> Endpoint:
    """Where a router reaches ``port`` of an instance, per platform."""
    if s.platform == "istio":
        # The ingress gateway dials the pod IP; iptables captures it into Envoy's 15006.
        return Endpoint((inst.container_ip, port), inst.guid, inst.app, tls=True, service=service)
    if s.platform == "bosh":
        # The client VM's own Envoy dials the instance directly (the prototype has no mTLS).
        return Endpoint((inst.container_ip, port), inst.guid, inst.app, tls=False)
    tls = s.routers.backends.enabled and inst.proxy is not None
    container_port = inst.proxy.proxy_for(port) if tls else port
    return Endpoint((inst.cell_ip, inst.host_ports[container_port]), inst.guid, inst.app, tls)


@dataclass(frozen=True)
class _Table:
    """The routers' view at one moment: endpoints per host and, on cf-for-k8s, the weights of
    each host's destinations. A host with no endpoints is still known where a route object
    exists without instances (Istio: a VirtualService whose Service has no ready pod -> 503);
    gorouter and the BOSH pilot only know hosts with registered instances (else 404)."""

    endpoints: dict[str, tuple[Endpoint, ...]]
    weights: dict[str, Weights]


def _route_table(s: Scenario, instances: list[Instance], mapped: frozenset[int]) -> _Table:
    table: dict[str, list[Endpoint]] = {}
    weights: dict[str, Weights] = {}
    if s.platform == "istio":
        for host, destinations in gateway_destinations(s, mapped).items():
            eps = table.setdefault(host, [])
            for d in destinations:
                eps.extend(_endpoint(s, i, d.port, d.service) for i in instances if i.app == d.app)
            weights[host] = tuple((d.service, d.weight) for d in destinations)
        return _Table({h: tuple(e) for h, e in table.items()}, weights)
    for k, r in enumerate(s.routes):
        if k in mapped:
            eps = table.setdefault(r.host, [])
            eps.extend(_endpoint(s, i, r.port) for i in instances if i.app == r.app)
    return _Table({h: tuple(e) for h, e in table.items() if e}, weights)


def _configuration_problems(s: Scenario) -> Iterator[tuple[Loc, str]]:
    if (s.platform == "diego" and s.proxy.enabled and not s.proxy.enable_unproxied_port_mappings
            and not s.routers.backends.enabled):
        yield ("routers", "backends", "enabled"), (
            "backend TLS is off but enable_unproxied_port_mappings is false: the cell maps only "
            "TLS proxy ports, so routers have no plain port to reach"
        )
    total = sum(a.instances for a in s.apps)
    if total > MAX_CONTAINERS:
        yield ("apps",), f"{total} instances: simnet addresses at most {MAX_CONTAINERS} containers"


def derive(s: Scenario) -> Deployment:
    """Derive the deployment, or raise DeriveError listing every problem with its location."""
    problems = list(_configuration_problems(s))
    if problems:
        raise DeriveError(problems)
    extra = additional_allocation_mb(s.proxy, max(_mappings(s, a) for a in s.apps))
    cells = _Cells(s.cells.count, s.cells.memory_mb)
    instances: list[Instance] = []
    for a, app in enumerate(s.apps):
        need = app.memory_mb + extra
        placed = 0
        for index in range(app.instances):
            cell = cells.place(need)
            if cell is None:
                break
            try:
                instances.append(_make_instance(s, app, index, 0, cell, cells, extra))
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
    events, started, changes = _timeline(s, instances, cells, extra, problems)
    if problems:
        raise DeriveError(problems)
    instances += started
    table = _route_table(s, initial, mapped)
    return Deployment(
        scenario=s,
        additional_mb=extra,
        backend_verdicts=backend_verdicts(s),
        instances=tuple(instances),
        routes=table.endpoints,
        running=tuple(i.guid for i in initial),
        listeners={i.guid: tuple(_listeners(s, i)) for i in instances},
        events=tuple(sorted(events, key=lambda e: e.at_s)),
        client_paths=_client_paths(s),
        weights=table.weights,
        changes=tuple(changes),
    )


def _client_paths(s: Scenario) -> dict[str, CapturedPath]:
    """bosh: clients are jobs on other VMs dialling ``<name>.boshy`` VIPs; whether that reaches
    the VM's Envoy is what the VM's iptables rules say (no Envoy add-on, no rule)."""
    if s.platform != "bosh":
        return {}
    vips = bosh_vip([r.host for r in s.routes])
    caller = str(CELL_NET + 1)
    port = {}
    for r in s.routes:
        port.setdefault(r.host, r.port)
    return {h: bosh_client(caller, vips[h], port[h], s.proxy.enabled) for h in port}


def _listeners(s: Scenario, inst: Instance) -> Iterator[tuple[Address, Listener]]:
    """Every address reachable from the routers that lands in this instance's container."""
    if s.platform == "istio":
        # Envoy answers (with mTLS) only where the pod's capture rules send the gateway's
        # connection to its inbound port; elsewhere the app itself answers, in plain text.
        config = istio_config(s)
        for p in dict.fromkeys(s.app(inst.app).ports):
            captured = istio_inbound(inst.container_ip, p, GATEWAY_IP, config).via_proxy
            yield (inst.container_ip, p), Listener(inst.guid, inst.app, captured)
        return
    if s.platform == "bosh":
        for p in dict.fromkeys(s.app(inst.app).ports):
            yield (inst.container_ip, p), Listener(inst.guid, inst.app, False)
        return
    tls_ports = {m.proxy for m in inst.proxy.mappings} if inst.proxy else set()
    for port, host_port in inst.host_ports.items():
        yield (inst.cell_ip, host_port), Listener(inst.guid, inst.app, port in tls_ports)


def _timeline(s: Scenario, instances: list[Instance], cells: _Cells, extra: int,
              problems: list[tuple[Loc, str]]) -> tuple[list[Event], list[Instance], list[Change]]:
    """Faults, pushes and route mappings in time order, as stop/start events and the delayed
    route updates routers will see; with the instances faults start (moved instances and the
    ones that take their place) and the control-plane changes the report follows."""
    events: list[Event] = []
    started: list[Instance] = []
    changes: list[Change] = []
    later = {a.name for a in s.apps if a.start_s > 0}
    live = [i for i in instances if i.app not in later]
    mapped = frozenset(k for k, r in enumerate(s.routes) if r.at_s == 0)
    delay = s.routers.route_propagation_delay_s
    generation = 0

    def update(at: float, before: _Table, after: _Table) -> None:
        events.append(_changed(before, after, at + delay))

    def hosts(routes) -> tuple[str, ...]:
        return tuple(sorted({r.host for r in routes}))

    steps = sorted(
        [(f.at_s, 0, n) for n, f in enumerate(s.faults)]
        + [(a.start_s, 1, n) for n, a in enumerate(s.apps) if a.start_s > 0]
        + [(at, 2, n) for n, at in enumerate(sorted({r.at_s for r in s.routes if r.at_s > 0}))])
    for at, kind, n in steps:
        if kind == 1:  # cf push: the app's instances start; routes to them follow
            app = s.apps[n]
            new = [i for i in instances if i.app == app.name]
            events += [Event(at, "start", i.guid) for i in new]
            update(at, _route_table(s, live, mapped), _route_table(s, live + new, mapped))
            live += new
            changes.append(Change(at, at + delay, f"push {app.name}",
                                  hosts(r for r in s.routes if r.app == app.name)))
            continue
        if kind == 2:  # cf map-route, every mapping made at this moment
            now = frozenset(k for k, r in enumerate(s.routes) if r.at_s == at)
            update(at, _route_table(s, live, mapped), _route_table(s, live, mapped | now))
            mapped |= now
            what = "; ".join(
                f"map {r.host}{r.path} -> {r.app}:{r.port}"
                + (f" weight {r.weight}" if r.weight is not None else "")
                for r in (s.routes[k] for k in sorted(now)))
            changes.append(Change(at, at + delay, what, hosts(s.routes[k] for k in now)))
            continue
        f = s.faults[n]
        if f.kind == "restart_router":
            events += [Event(f.at_s, "router_down", router=f.router),
                       Event(f.at_s + f.down_s, "router_up", router=f.router)]
            continue
        if f.kind == "latency_spike":
            extra = f.extra_ms / 1000
            events += [Event(f.at_s, "latency", hop=f.hop, extra_s=extra),
                       Event(f.at_s + f.duration_s, "latency", hop=f.hop, extra_s=-extra)]
            continue
        victim = next(i for i in live if i.app == f.app and i.index == f.instance)
        if f.kind == "expire_certificate":
            events.append(Event(f.at_s, "cert_expired", victim.guid))
            if f.rotated_after_s is not None:
                fresh = f.at_s + f.rotated_after_s
                events.append(Event(fresh, "cert_rotated", victim.guid))
                # the next route registration puts the endpoint routers pruned back
                events.append(_reregistered(s, live, mapped, victim.app, fresh + delay))
            continue
        if f.kind == "kill":
            events.append(Event(f.at_s, "stop", victim.guid))
            without = [i for i in live if i is not victim]
            update(f.at_s, _route_table(s, live, mapped), _route_table(s, without, mapped))
            if f.restart_after_s is not None:
                back = f.at_s + f.restart_after_s
                events.append(Event(back, "start", victim.guid))
                update(back, _route_table(s, without, mapped), _route_table(s, live, mapped))
            continue
        generation += 1
        moved, newcomer = _move(s, f, victim, live, cells, extra, generation, n, problems)
        if moved is None:
            continue
        started += [moved, newcomer]
        after = [i for i in live if i is not victim] + [moved, newcomer]
        events += [Event(f.at_s, "stop", victim.guid), Event(f.at_s, "start", newcomer.guid),
                   Event(f.at_s, "start", moved.guid)]
        update(f.at_s, _route_table(s, live, mapped), _route_table(s, after, mapped))
        live = after
    return events, started, changes


def _move(s: Scenario, f: MoveFault, victim: Instance, live: list[Instance], cells: _Cells,
          extra: int, generation: int, n: int, problems: list[tuple[Loc, str]]
          ) -> tuple[Instance | None, Instance | None]:
    """The victim restarts on another cell; another app's new instance takes its old place."""
    app = s.app(f.app)
    cell = cells.place(app.memory_mb + extra, avoid=victim.cell)
    if cell is None:
        problems.append((("faults", n), "no other cell has room for the moved instance"))
        return None, None
    moved = _make_instance(s, app, victim.index, generation, cell, cells, extra)
    other = s.app(f.reused_by)
    cells.free[victim.cell] += (app.memory_mb + extra) - (other.memory_mb + extra)
    if cells.free[victim.cell] < 0:
        problems.append((("faults", n, "reused_by"), (
            f"app {other.name!r} ({other.memory_mb} MB) does not fit in the place "
            f"{app.name!r} ({app.memory_mb} MB) leaves on its cell")))
        return None, None
    index = sum(1 for i in live if i.app == other.name)
    newcomer = _make_instance(s, other, index, generation, victim.cell, cells, extra)
    # Same cell, container IP and host ports as the victim: stale routes now land on it.
    newcomer = dataclasses.replace(
        newcomer, container_ip=victim.container_ip,
        host_ports=_reuse_host_ports(victim, newcomer),
        cf_instance_ports=tuple(instance_ports(
            other.ports, newcomer.proxy, min(victim.host_ports.values()),
            s.proxy.enable_unproxied_port_mappings)))
    return moved, newcomer


def _reuse_host_ports(victim: Instance, newcomer: Instance) -> dict[int, int]:
    """The newcomer takes over the victim's host ports, TLS ports onto TLS ports and plain
    onto plain, so a stale route to the victim now reaches the newcomer's listener."""

    def by_role(inst: Instance) -> tuple[list[int], list[int]]:
        tls = {m.proxy for m in inst.proxy.mappings} if inst.proxy else set()
        return ([p for p in inst.host_ports if p in tls], [p for p in inst.host_ports if p not in tls])

    ports = dict(newcomer.host_ports)
    for old_role, new_role in zip(by_role(victim), by_role(newcomer)):
        for old_port, new_port in zip(old_role, new_role):
            ports[new_port] = victim.host_ports[old_port]
    return ports


def _reregistered(s: Scenario, live: list[Instance], mapped: frozenset[int], app: str,
                  at: float) -> Event:
    """The full route table entries of every host routed to ``app`` (a re-registration)."""
    table = _route_table(s, live, mapped)
    hosts = sorted({r.host for k, r in enumerate(s.routes) if r.app == app and k in mapped})
    return Event(at, "routes", routes=tuple((h, table.endpoints.get(h, ())) for h in hosts))


def _changed(old: _Table, new: _Table, at: float) -> Event:
    """The route update that turns ``old`` into ``new``: changed hosts with their new entries
    (no entry: the host is gone) and the hosts whose weights changed."""
    hosts = sorted(set(old.endpoints) | set(new.endpoints))
    routes = tuple((h, new.endpoints.get(h, ())) for h in hosts
                   if old.endpoints.get(h) != new.endpoints.get(h))
    weights = tuple((h, new.weights.get(h, ())) for h in sorted(set(old.weights) | set(new.weights))
                    if old.weights.get(h) != new.weights.get(h))
    return Event(at, "routes", routes=routes, weights=weights)
