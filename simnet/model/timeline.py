"""What happens in simulated time: faults, pushes and route mappings turned into events, and
the delayed route updates routers will see.

Each event is its own type (a tagged union, ``Event``) so consumers dispatch with ``match``.
Route changes reach routers ``route_propagation_delay_s`` after they happen, as the
route-emitter's (Diego) or istiod's (cf-for-k8s) updates do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from simnet.errors import Loc, PortRangeExhausted
from simnet.model.placement import Cells, Endpoint, Instance, Weights, make_instance, reused_host_ports
from simnet.model.platform import Platform, RouteTable
from simnet.model.ports import instance_ports
from simnet.scenario.schema import (CertificateFault, KillFault, LatencySpikeFault, MoveFault,
                                    RouterRestartFault, Scenario, StopFault)

RouteEntries = tuple[tuple[str, tuple[Endpoint, ...]], ...]


@dataclass(frozen=True)
class Stop:
    """An instance stops: its listeners go away."""

    at_s: float
    guid: str
    kind: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Start:
    """An instance starts (or starts again) with a fresh sidecar."""

    at_s: float
    guid: str
    kind: ClassVar[str] = "start"


@dataclass(frozen=True)
class CertExpired:
    """An instance's identity certificate expires: new handshakes to it fail."""

    at_s: float
    guid: str
    kind: ClassVar[str] = "cert_expired"


@dataclass(frozen=True)
class CertWithoutGuid:
    """A stopping instance's credential manager writes its identity without the instance guid
    (executor credmanager.go, on signal): new handshakes fail gorouter's SAN check."""

    at_s: float
    guid: str
    kind: ClassVar[str] = "cert_without_guid"


@dataclass(frozen=True)
class CertRotated:
    """An instance gets a fresh identity certificate."""

    at_s: float
    guid: str
    kind: ClassVar[str] = "cert_rotated"


@dataclass(frozen=True)
class RouterDown:
    """A router process stops (restart_router)."""

    at_s: float
    router: int
    kind: ClassVar[str] = "router_down"


@dataclass(frozen=True)
class RouterUp:
    """A stopped router is back, with its routes and an empty connection pool."""

    at_s: float
    router: int
    kind: ClassVar[str] = "router_up"


@dataclass(frozen=True)
class LatencyChange:
    """A hop's extra delay changes by ``extra_s`` (+ when a spike starts, - when it ends)."""

    at_s: float
    hop: str
    extra_s: float
    kind: ClassVar[str] = "latency"


@dataclass(frozen=True)
class RoutesChanged:
    """A route update reaches the routers: the changed hosts with their new entries (no
    entry: the host is gone) and the hosts whose destination weights changed."""

    at_s: float
    routes: RouteEntries = ()
    weights: tuple[tuple[str, Weights], ...] = ()
    kind: ClassVar[str] = "routes"

    def apply(self, table: dict, keeps_empty: bool) -> None:
        """Update a router's route table in place: each changed host takes its new entries; a
        host left with none is gone, unless the platform keeps empty routes
        (``Platform.keeps_empty_routes``)."""
        for host, endpoints in self.routes:
            if endpoints or keeps_empty:
                table[host] = endpoints
            else:
                table.pop(host, None)


Event = (Stop | Start | CertExpired | CertWithoutGuid | CertRotated | RouterDown | RouterUp
         | LatencyChange | RoutesChanged)


@dataclass(frozen=True)
class Change:
    """A control-plane change (``cf push``, ``cf map-route``) and when routers have it."""

    at_s: float
    effective_s: float
    what: str
    hosts: tuple[str, ...]


@dataclass
class Timeline:
    """Events in time order, the instances faults start (moved instances and the ones that
    take their place) and the control-plane changes the report follows."""

    events: list[Event]
    started: list[Instance]
    changes: list[Change]


def timeline(s: Scenario, platform: Platform, instances: list[Instance], cells: Cells,
             extra: int, problems: list[tuple[Loc, str]]) -> Timeline:
    """Faults, pushes and route mappings in time order (problems are appended to ``problems``)."""
    events: list[Event] = []
    started: list[Instance] = []
    changes: list[Change] = []
    later = {a.name for a in s.apps if a.start_s > 0}
    live = [i for i in instances if i.app not in later]
    mapped = frozenset(k for k, r in enumerate(s.routes) if r.at_s == 0)
    delay = s.routers.route_propagation_delay_s
    generation = 0

    def table(running: list[Instance], routes: frozenset[int]) -> RouteTable:
        return platform.route_table(s, running, routes)

    def update(at: float, before: RouteTable, after: RouteTable) -> None:
        events.append(changed(before, after, at + delay))

    def hosts(routes) -> tuple[str, ...]:
        return tuple(sorted({r.host for r in routes}))

    steps = sorted(
        [(f.at_s, 0, n) for n, f in enumerate(s.faults)]
        + [(a.start_s, 1, n) for n, a in enumerate(s.apps) if a.start_s > 0]
        + [(at, 2, n) for n, at in enumerate(sorted({r.at_s for r in s.routes if r.at_s > 0}))])
    for at, step, n in steps:
        if step == 1:  # cf push: the app's instances start; routes to them follow
            app = s.apps[n]
            new = [i for i in instances if i.app == app.name]
            events += [Start(at, i.guid) for i in new]
            update(at, table(live, mapped), table(live + new, mapped))
            live += new
            changes.append(Change(at, at + delay, f"push {app.name}",
                                  hosts(r for r in s.routes if r.app == app.name)))
            continue
        if step == 2:  # cf map-route, every mapping made at this moment
            now = frozenset(k for k, r in enumerate(s.routes) if r.at_s == at)
            update(at, table(live, mapped), table(live, mapped | now))
            mapped |= now
            what = "; ".join(
                f"map {r.host}{r.path} -> {r.app}:{r.port}"
                + (f" weight {r.weight}" if r.weight is not None else "")
                for r in (s.routes[k] for k in sorted(now)))
            changes.append(Change(at, at + delay, what, hosts(s.routes[k] for k in now)))
            continue
        f = s.faults[n]
        if isinstance(f, (KillFault, StopFault, MoveFault, CertificateFault)):
            victim = _victim(live, f)
            if victim is None:
                problems.append((("faults", n, "instance"), (
                    f"{f.app}/{f.instance} is not running at {f.at_s:g} s: an earlier stop "
                    "ended it")))
                continue
        match f:
            case RouterRestartFault():
                events += [RouterDown(f.at_s, f.router), RouterUp(f.at_s + f.down_s, f.router)]
            case LatencySpikeFault():
                extra_s = f.extra_ms / 1000
                events += [LatencyChange(f.at_s, f.hop, extra_s),
                           LatencyChange(f.at_s + f.duration_s, f.hop, -extra_s)]
            case CertificateFault():
                events.append(CertExpired(f.at_s, victim.guid))
                if f.rotated_after_s is not None:
                    fresh = f.at_s + f.rotated_after_s
                    events.append(CertRotated(fresh, victim.guid))
                    # the next route registration puts the endpoint routers pruned back
                    events.append(_reregistered(s, table(live, mapped), mapped, victim.app,
                                                fresh + delay))
            case KillFault():
                events.append(Stop(f.at_s, victim.guid))
                without = [i for i in live if i is not victim]
                update(f.at_s, table(live, mapped), table(without, mapped))
                if f.restart_after_s is not None:
                    back = f.at_s + f.restart_after_s
                    events.append(Start(back, victim.guid))
                    update(back, table(without, mapped), table(live, mapped))
            case StopFault():
                after = [i for i in live if i is not victim]
                if f.evacuate:  # the replacement runs before the evacuating instance stops
                    generation += 1
                    moved = _elsewhere(s, victim, cells, extra, generation, n, problems)
                    if moved is None:
                        continue
                    started.append(moved)
                    events.append(Start(f.at_s, moved.guid))
                    after.append(moved)
                reload = s.proxy.envoy_config_reload_duration_s
                events += [CertWithoutGuid(f.at_s, victim.guid), Stop(f.at_s + reload, victim.guid)]
                update(f.at_s, table(live, mapped), table(after, mapped))
                cells.leave(victim.cell, s.app(f.app).memory_mb + extra, f.app)
                cells.release(victim.cell, victim.host_ports.values())
                live = after
            case MoveFault():
                generation += 1
                moved, newcomer = _move(s, f, victim, live, cells, extra, generation, n, problems)
                if moved is None:
                    continue
                started += [moved, newcomer]
                after = [i for i in live if i is not victim] + [moved, newcomer]
                events += [Stop(f.at_s, victim.guid), Start(f.at_s, newcomer.guid),
                           Start(f.at_s, moved.guid)]
                update(f.at_s, table(live, mapped), table(after, mapped))
                live = after
            case other:
                raise AssertionError(f"unknown fault {other!r}")
    return Timeline(sorted(events, key=lambda e: e.at_s), started, changes)


def _victim(live: list[Instance], f: KillFault | StopFault | MoveFault | CertificateFault
            ) -> Instance | None:
    return next((i for i in live if i.app == f.app and i.index == f.instance), None)


def _elsewhere(s: Scenario, victim: Instance, cells: Cells, extra: int, generation: int,
               n: int, problems: list[tuple[Loc, str]]) -> Instance | None:
    """The victim's successor (same app and index) on another cell, as the auction places it."""
    app = s.app(victim.app)
    cell = cells.place(app.memory_mb + extra, app.name, avoid=victim.cell)
    if cell is None:
        problems.append((("faults", n), f"no other cell has room for {app.name}/{victim.index}"))
        return None
    try:
        return make_instance(s, app, victim.index, generation, cell, cells, extra)
    except PortRangeExhausted as e:
        problems.append((("faults", n), str(e)))
        return None


def _move(s: Scenario, f: MoveFault, victim: Instance, live: list[Instance], cells: Cells,
          extra: int, generation: int, n: int, problems: list[tuple[Loc, str]]
          ) -> tuple[Instance | None, Instance | None]:
    """The victim restarts on another cell; another app's new instance takes its old place on
    its cell. Its host ports go back to the cell's pool, so the newcomer gets the pool's next
    ports and address, unless the fault asks for the coincidence (``reuse_address``): the
    victim's container IP and host ports, TLS onto TLS and plain onto plain."""
    app = s.app(f.app)
    moved = _elsewhere(s, victim, cells, extra, generation, n, problems)
    if moved is None:
        return None, None
    other = s.app(f.reused_by)
    cells.leave(victim.cell, app.memory_mb + extra, app.name)
    cells.take(victim.cell, other.memory_mb + extra, other.name)
    if cells.free[victim.cell] < 0:
        problems.append((("faults", n, "reused_by"), (
            f"app {other.name!r} ({other.memory_mb} MB) does not fit in the place "
            f"{app.name!r} ({app.memory_mb} MB) leaves on its cell")))
        return None, None
    index = sum(1 for i in live if i.app == other.name)
    try:
        if not f.reuse_address:
            cells.release(victim.cell, victim.host_ports.values())
            return moved, make_instance(s, other, index, generation, victim.cell, cells, extra)
        newcomer = make_instance(s, other, index, generation, victim.cell, cells, extra)
    except PortRangeExhausted as e:
        problems.append((("faults", n), str(e)))
        return None, None
    ports = reused_host_ports(victim, newcomer)
    kept = set(ports.values())
    cells.release(victim.cell, sorted(set(newcomer.host_ports.values()) - kept))
    cells.release(victim.cell, sorted(set(victim.host_ports.values()) - kept))
    return moved, dataclasses.replace(
        newcomer, container_ip=victim.container_ip, host_ports=ports,
        cf_instance_ports=tuple(instance_ports(
            other.ports, newcomer.proxy, list(ports.values()),
            s.proxy.enable_unproxied_port_mappings)))


def _reregistered(s: Scenario, table: RouteTable, mapped: frozenset[int], app: str,
                  at: float) -> RoutesChanged:
    """The full route table entries of every host routed to ``app`` (a re-registration)."""
    hosts = sorted({r.host for k, r in enumerate(s.routes) if r.app == app and k in mapped})
    return RoutesChanged(at, routes=tuple((h, table.endpoints.get(h, ())) for h in hosts))


def changed(old: RouteTable, new: RouteTable, at: float) -> RoutesChanged:
    """The route update that turns ``old`` into ``new``: changed hosts with their new entries
    (no entry: the host is gone) and the hosts whose weights changed."""
    hosts = sorted(set(old.endpoints) | set(new.endpoints))
    routes = tuple((h, new.endpoints.get(h, ())) for h in hosts
                   if old.endpoints.get(h) != new.endpoints.get(h))
    weights = tuple((h, new.weights.get(h, ())) for h in sorted(set(old.weights) | set(new.weights))
                    if old.weights.get(h) != new.weights.get(h))
    return RoutesChanged(at, routes=routes, weights=weights)
