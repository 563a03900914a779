"""Cross-references the scenario schema cannot see (routes to unknown apps or unserved ports,
faults on instances that do not exist, port clashes, route weights, istio-iptables fields), for
the loader; those ``simnet analyze`` reports as findings carry a neutral ``ProblemKind``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from pydantic import TypeAdapter, ValidationError

from simnet.errors import SimnetError
from simnet.model.istio_config import IstioConfig
from simnet.model.ports import C2C_TLS_PORT
from simnet.scenario.schema import App, Client, Fault, Route, Routers, Scenario
from simnet.scenario.source import Loc

__all__ = ["ProblemKind", "Ref", "raw_reference_problems", "reference_problems"]


class ProblemKind(Enum):
    """Problems the loader rejects that ``simnet analyze`` reports as findings of their own (it
    maps each kind to its code) rather than as load errors."""

    RESERVED_PORT = "reserved_port"  # an app or sidecar port is 61443
    PORT_COLLISION = "port_collision"  # two processes of one container on one port
    ROUTE_WEIGHTS = "route_weights"  # weights on some destinations only, or not summing to 100
    ROUTE_PORT_UNSERVED = "route_port_unserved"  # a route to a port its app does not listen on


@dataclass(frozen=True)
class _Parts:
    """The parts of a scenario cross-references need; ``None`` where a part is invalid.

    ``app_names`` holds every app name in the file, valid app or not, so that a reference
    to an app with an unrelated mistake is not reported as a reference to no app.
    """

    apps: list[App | None] | None
    app_names: set[str] | None
    routes: list[Route | None] | None
    clients: list[Client | None]
    faults: list[Any]
    duration_s: float | None
    platform: str | None = None
    router_count: int | None = None

    @classmethod
    def of(cls, s: Scenario) -> _Parts:
        return cls(list(s.apps), {a.name for a in s.apps}, list(s.routes), list(s.clients),
                   list(s.faults), s.duration_s, s.platform, s.routers.count)

    @classmethod
    def of_raw(cls, data: dict) -> _Parts:
        """Best effort on a file that failed validation: each item validated on its own."""

        def each(key: str, adapter: TypeAdapter) -> list | None:
            raw = data.get(key, [])
            if not isinstance(raw, list):
                return None
            out = []
            for item in raw:
                try:
                    out.append(adapter.validate_python(item, strict=True))
                except (ValidationError, ValueError, TypeError):
                    out.append(None)
            return out

        apps = each("apps", _APP)
        raw_apps = data.get("apps")
        names = None
        if isinstance(raw_apps, list):
            names = {a["name"] for a in raw_apps
                     if isinstance(a, dict) and isinstance(a.get("name"), str)}
        duration = data.get("duration_s", Scenario.model_fields["duration_s"].default)
        if not (isinstance(duration, (int, float)) and not isinstance(duration, bool)
                and 0 < duration <= 86_400):
            duration = None
        platform = data.get("platform", Scenario.model_fields["platform"].default)
        routers = data.get("routers")
        default = Routers.model_fields["count"].default
        count = routers.get("count", default) if isinstance(routers, dict) else default
        return cls(apps, names, each("routes", _ROUTE), each("clients", _CLIENT) or [],
                   each("faults", _FAULT) or [], duration,
                   platform if isinstance(platform, str) else None,
                   count if isinstance(count, int) and not isinstance(count, bool) else None)


_APP = TypeAdapter(App)
_ROUTE = TypeAdapter(Route)
_CLIENT = TypeAdapter(Client)
_FAULT = TypeAdapter(Fault)


class Ref(NamedTuple):
    """A problem a cross-reference check found. ``kind``: the kind of problem ``simnet analyze``
    reports as a finding of its own; the loader rejects it either way, the analyzer reports the
    ones with a kind as findings and goes on."""

    loc: Loc
    message: str
    kind: ProblemKind | None = None


def _reserved(port: int) -> str:
    return f"port {port} is reserved for container-to-container TLS"


def _references(p: _Parts) -> Iterator[Ref]:
    apps: dict[str, App] = {}
    seen: set[str] = set()
    for i, app in enumerate(p.apps or []):
        if app is None:
            continue
        if app.name in seen:
            yield Ref(("apps", i, "name"), f"duplicate app name {app.name!r}")
        seen.add(app.name)
        apps.setdefault(app.name, app)
        for k, port in enumerate(app.ports):
            if port == C2C_TLS_PORT:
                yield Ref(("apps", i, "ports", k), _reserved(port), ProblemKind.RESERVED_PORT)
        owner: dict[int, str] = {}
        for j, sc in enumerate(app.sidecars):
            for k, port in enumerate(sc.ports):
                loc = ("apps", i, "sidecars", j, "ports", k)
                if port in app.ports:
                    yield Ref(loc, (
                        f"port {port} is already the app's port: sidecars share the network "
                        "namespace, so two processes cannot listen on it"
                    ), ProblemKind.PORT_COLLISION)
                elif port == C2C_TLS_PORT:
                    yield Ref(loc, _reserved(port), ProblemKind.RESERVED_PORT)
                elif port in owner and owner[port] != sc.name:
                    yield Ref(loc, (
                        f"port {port} is already sidecar {owner[port]!r}'s: sidecars share the "
                        "network namespace, so two processes cannot listen on it"
                    ), ProblemKind.PORT_COLLISION)
                owner.setdefault(port, sc.name)
        if p.duration_s is not None and app.start_s >= p.duration_s:
            yield Ref(("apps", i, "start_s"), (
                f"at or after the end of the run ({p.duration_s:g} s): this app never starts"))
    names = p.app_names

    def unknown(name: str) -> bool:
        return names is not None and name not in names

    hosts: set[str] = set()
    hosts_known = p.routes is not None
    for i, r in enumerate(p.routes or []):
        if r is None:
            hosts_known = False  # an invalid route might have been the one a client needs
            continue
        hosts.add(r.host)
        if unknown(r.app):
            yield Ref(("routes", i, "app"), f"no app named {r.app!r}")
        elif r.app in apps and r.port not in apps[r.app].ports:
            yield Ref(("routes", i, "port"), (
                f"app {r.app!r} does not listen on {r.port} (its ports: {apps[r.app].ports})"
            ), ProblemKind.ROUTE_PORT_UNSERVED)
        if p.duration_s is not None and r.at_s >= p.duration_s:
            yield Ref(("routes", i, "at_s"), f"at or after the end of the run ({p.duration_s:g} s)")
    yield from _weight_problems(p)
    for i, c in enumerate(p.clients):
        if c is None:
            continue
        if hosts_known and c.host not in hosts:
            known = f" (routes: {', '.join(sorted(hosts))})" if hosts else " (there are no routes)"
            yield Ref(("clients", i, "host"), f"no route for host {c.host!r}{known}")
        if p.duration_s is not None and c.start_s >= p.duration_s:
            yield Ref(("clients", i, "start_s"), (
                f"at or after the end of the run ({p.duration_s:g} s): this client never sends"
            ))
    for i, f in enumerate(p.faults):
        if f is None:
            continue
        if (f.kind == "restart_router" and p.router_count is not None
                and f.router >= p.router_count):
            yield Ref(("faults", i, "router"), (
                f"there are {p.router_count} router(s) (0-{p.router_count - 1}); "
                f"index {f.router} does not exist"))
        if not hasattr(f, "app"):  # router and link faults
            if p.duration_s is not None and f.at_s > p.duration_s:
                yield Ref(("faults", i, "at_s"), f"after the end of the run ({p.duration_s:g} s)")
            continue
        if unknown(f.app):
            yield Ref(("faults", i, "app"), f"no app named {f.app!r}")
        elif f.app in apps and f.instance >= apps[f.app].instances:
            yield Ref(("faults", i, "instance"), (
                f"app {f.app!r} has {apps[f.app].instances} instance(s) (0-"
                f"{apps[f.app].instances - 1}); index {f.instance} does not exist"
                if apps[f.app].instances else
                f"app {f.app!r} has no instances; index {f.instance} does not exist"
            ))
        if p.duration_s is not None and f.at_s > p.duration_s:
            yield Ref(("faults", i, "at_s"), f"after the end of the run ({p.duration_s:g} s)")
        elif f.app in apps and f.at_s < apps[f.app].start_s:
            yield Ref(("faults", i, "at_s"), (
                f"app {f.app!r} is pushed at {apps[f.app].start_s:g} s: no instance runs yet"))
        if f.kind == "move":
            if unknown(f.reused_by):
                yield Ref(("faults", i, "reused_by"), f"no app named {f.reused_by!r}")
            elif f.reused_by == f.app:
                yield Ref(("faults", i, "reused_by"), (
                    "must be another app: the move fault tests that a stale route to the old "
                    "address never reaches a different app"
                ))


def _weight_problems(p: _Parts) -> Iterator[Ref]:
    """Weights are cf-for-k8s's: at every moment, all or none of a route's destinations carry
    one, and they sum to 100 (the RouteController rejects anything else). Mapping an app's port
    to the route again later sets its new weight."""
    groups: dict[tuple[str, str], list[tuple[int, Route]]] = {}
    for i, r in enumerate(p.routes or []):
        if r is not None:
            groups.setdefault((r.host, r.path), []).append((i, r))
    for (host, path), members in groups.items():
        if all(r.weight is None for _, r in members):
            continue
        if p.platform not in (None, "istio"):
            for i, r in members:
                if r.weight is not None:
                    yield Ref(("routes", i, "weight"), (
                        f"weights are cf-for-k8s (platform: istio) only; {p.platform} balances "
                        "over every instance of every app mapped to the route"))
            continue
        for at in sorted({r.at_s for _, r in members}):
            latest: dict[tuple[str, int], tuple[int, Route]] = {}
            for i, r in sorted(members, key=lambda m: (m[1].at_s, m[0])):
                if r.at_s <= at:
                    latest[r.app, r.port] = (i, r)
            now = sorted(latest.values(), key=lambda m: m[0])
            where = f"route {host}{path} at {at:g} s"
            weighted = [(i, r) for i, r in now if r.weight is not None]
            if weighted and len(weighted) < len(now):
                i = next(i for i, r in now if r.weight is None)
                yield Ref(("routes", i, "weight"), (
                    f"{where}: weights must be given for all of its destinations or none"),
                    ProblemKind.ROUTE_WEIGHTS)
                break
            if weighted and (total := sum(r.weight for _, r in weighted)) != 100:
                yield Ref(("routes", weighted[-1][0], "weight"), (
                    f"{where}: destination weights sum to {total}, not 100"),
                    ProblemKind.ROUTE_WEIGHTS)
                break


def reference_problems(s: Scenario) -> Iterator[Ref]:
    """Cross-references the schema cannot see: unknown apps, ports no app listens on, clashes,
    istio-iptables fields."""
    yield from _references(_Parts.of(s))
    yield from _capture_problems(s)


def raw_reference_problems(data: dict) -> Iterator[Ref]:
    """The cross-references of plain scenario data that failed validation, on the parts that
    are valid (each item validated on its own), so one load shows everything there is to fix."""
    yield from _references(_Parts.of_raw(data))


def _capture_problems(s: Scenario) -> Iterator[Ref]:
    if not s.capture.istio:
        return
    if s.platform != "istio":
        yield Ref(("capture", "istio"), "istio-iptables settings need platform: istio")
        return
    try:
        IstioConfig.from_mapping(s.capture.istio)
    except SimnetError as e:
        for p in e.problems:
            yield Ref(("capture", "istio", p.field) if p.field else ("capture", "istio"), p.message)
