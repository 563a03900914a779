"""The three platforms as objects: each answers, for a scenario, where a router reaches an
instance, what answers at an instance's addresses, what happens to a route with no
instances, what captures traffic into the sidecar (its rules) and who terminates TLS.

Diego (cloudfoundry/executor, gorouter): routers dial the cell's host port, DNATed by Garden's
NetIn rules to the sidecar's TLS proxy port; gorouter drops a route whose pool is empty (404).
Istio (cf-for-k8s): the ingress gateway dials the pod IP and the pod's istio-iptables rules
capture it into Envoy's 15006; a VirtualService whose Service has no ready pod stays (503).
BOSH (boshy-istio prototype): a job dials a ``*.boshy`` VIP, its VM's OUTPUT rule redirects it
into the local Envoy, which dials the instance in plain TCP.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from simnet.errors import Loc
from simnet.model.capacity import RouterCapacity, router_capacity
from simnet.model.capture import BOSHY_SUFFIX, bosh_vip_rules, diego_netin_rules, istio_capture
from simnet.model.gateway import gateway_destinations
from simnet.model.bosh import CONNECT_TIMEOUT as BOSH_CONNECT_TIMEOUT
from simnet.model.ingress import ISTIO_CONNECT_TIMEOUT
from simnet.model.interception import (BOSH_JOB_UID, BOSH_PROXY_PORT, CONTAINER_APP_UID, CapturedPath,
                                       bosh_client, bosh_vip, istio_config, istio_inbound)
from simnet.model.placement import CELL_NET, GATEWAY_IP, Address, Endpoint, Instance, Listener, Weights
from simnet.model.tls import Verdict, backend_verdicts, gateway_verdicts
from simnet.scenario.schema import App, Scenario


@dataclass(frozen=True)
class CaptureRules:
    """A ruleset the platform installs, named, with the ports its Envoy captures onto."""

    name: str
    text: str
    proxy_ports: frozenset[int]
    where: str  # the instance (or "every pod") it stands for


@dataclass(frozen=True)
class RouteTable:
    """The routers' view at one moment: endpoints per host and, on cf-for-k8s, the weights of
    each host's destinations."""

    endpoints: dict[str, tuple[Endpoint, ...]]
    weights: dict[str, Weights]


class Platform(ABC):
    """What differs between platforms, asked by derive, the simulator, the questions and the
    analysis instead of branching on ``scenario.platform``."""

    name: ClassVar[str]
    router: ClassVar[str]  # what dials the instances
    dialer: ClassVar[str]  # the same, as a sentence names it
    route_kind: ClassVar[str]  # what a route is to that router
    # A host whose pool becomes empty stays known to the router (answers 503) instead of
    # being dropped (404).
    keeps_empty_routes: ClassVar[bool] = False
    app_uid: ClassVar[int] = CONTAINER_APP_UID  # the uid app processes run as by default

    def uid(self, app: App) -> int:
        """The uid an app's processes run as: its own ``uid``, else the platform's."""
        return self.app_uid if app.uid is None else app.uid

    def own_address(self, inst: Instance) -> str:
        """The address an instance's processes have."""
        return inst.container_ip

    def router_capacity(self, s: Scenario) -> RouterCapacity:
        """Each router's limits: gorouter's, as the scenario sets them."""
        return router_capacity(s)

    def envoy_workers(self, s: Scenario) -> int:
        """Worker threads of each sidecar Envoy: one per core of the cell, Envoy's default
        when ``--concurrency`` is not given, and the Diego executor's command line gives only
        ``-c``, ``--drain-time-s`` and ``--log-level`` (executor depot/transformer)."""
        return s.cells.cores

    @abstractmethod
    def endpoint(self, s: Scenario, inst: Instance, port: int, service: str = "") -> Endpoint:
        """Where a router reaches ``port`` of an instance."""

    def listeners(self, s: Scenario, inst: Instance) -> Iterator[tuple[Address, Listener]]:
        """Every address reachable from the routers that lands in this instance's container."""
        for p in dict.fromkeys(s.app(inst.app).ports):
            yield (inst.container_ip, p), Listener(inst.guid, inst.app, False)

    def route_table(self, s: Scenario, instances: list[Instance],
                    mapped: frozenset[int]) -> RouteTable:
        """Endpoints per host for the routes mapped so far (indices into ``s.routes``); only
        hosts with registered instances are known."""
        table: dict[str, list[Endpoint]] = {}
        for k, r in enumerate(s.routes):
            if k in mapped:
                eps = table.setdefault(r.host, [])
                eps.extend(self.endpoint(s, i, r.port) for i in instances if i.app == r.app)
        return RouteTable({h: tuple(e) for h, e in table.items() if e}, {})

    def verdicts(self, s: Scenario) -> dict[tuple[bool, bool], Verdict]:
        """The router's verdict on a new TLS connection to a sidecar (see ``Deployment``)."""
        return backend_verdicts(s)

    def client_paths(self, s: Scenario) -> dict[str, CapturedPath]:
        """How a client's connection to each route host leaves the client's host; hosts not
        listed go straight to the ingress."""
        return {}

    def configuration_problems(self, s: Scenario) -> Iterator[tuple[Loc, str]]:
        """Settings this platform cannot run with."""
        return iter(())

    def terminates_tls(self, s: Scenario) -> bool:
        """Whether the sidecar terminates the router's TLS (else the app answers in plain)."""
        return s.proxy.enabled and s.routers.backends.enabled

    @abstractmethod
    def capture_rules(self, s: Scenario, inst: Instance | None) -> CaptureRules:
        """What captures traffic into the sidecar: the rules in front of ``inst`` (outside
        Diego every pod or VM has the same, and ``inst`` may be None)."""


def envoy_router_capacity(s: Scenario, connect_timeout: str) -> RouterCapacity:
    """The limits when an Envoy dials the instances instead of gorouter: no per-endpoint
    connection cap (Istio sets its clusters' circuit breakers to 2^32-1), the cluster's
    ``connect_timeout``, no handshake timeout of its own, no route timeout by default."""
    return dataclasses.replace(router_capacity(s), max_conns=0,
                               dial_timeout_s=float(connect_timeout.removesuffix("s")),
                               tls_timeout_s=math.inf, request_timeout_s=math.inf)


class Diego(Platform):
    name = "diego"
    router = "gorouter"
    dialer = "gorouter"
    route_kind = "gorouter route"

    def endpoint(self, s: Scenario, inst: Instance, port: int, service: str = "") -> Endpoint:
        tls = s.routers.backends.enabled and inst.proxy is not None
        container_port = inst.proxy.proxy_for(port) if tls else port
        return Endpoint((inst.cell_ip, inst.host_ports[container_port]), inst.guid, inst.app, tls)

    def listeners(self, s: Scenario, inst: Instance) -> Iterator[tuple[Address, Listener]]:
        tls_ports = {m.proxy for m in inst.proxy.mappings} if inst.proxy else set()
        for port, host_port in inst.host_ports.items():
            yield (inst.cell_ip, host_port), Listener(inst.guid, inst.app, port in tls_ports)

    def configuration_problems(self, s: Scenario) -> Iterator[tuple[Loc, str]]:
        if (s.proxy.enabled and not s.proxy.enable_unproxied_port_mappings
                and not s.routers.backends.enabled):
            yield ("routers", "backends", "enabled"), (
                "backend TLS is off but enable_unproxied_port_mappings is false: the cell maps "
                "only TLS proxy ports, so routers have no plain port to reach"
            )

    def capture_rules(self, s: Scenario, inst: Instance | None) -> CaptureRules:
        """Garden's NetIn DNAT rules for the container's host ports (one ruleset per instance)."""
        return CaptureRules(
            f"garden netin (cell {inst.cell})", diego_netin_rules(inst),
            frozenset(m.proxy for m in inst.proxy.mappings) if inst.proxy else frozenset(),
            f"{inst.app}/{inst.index}")


class Istio(Platform):
    name = "istio"
    router = "istio ingress gateway"
    dialer = "the gateway"
    route_kind = "gateway VirtualService"
    keeps_empty_routes = True  # Envoy: a VirtualService without ready pods -> 503 no healthy upstream

    def router_capacity(self, s: Scenario) -> RouterCapacity:
        """The ingress gateway is an Envoy, not gorouter (``envoy_router_capacity``) with
        MeshConfig's 10 s connect timeout."""
        return envoy_router_capacity(s, ISTIO_CONNECT_TIMEOUT)

    def envoy_workers(self, s: Scenario) -> int:
        """istio-proxy runs two worker threads: ProxyConfig ``concurrency`` defaults to 2
        for sidecars."""
        return 2

    def endpoint(self, s: Scenario, inst: Instance, port: int, service: str = "") -> Endpoint:
        # The ingress gateway dials the pod IP; iptables captures it into Envoy's 15006.
        return Endpoint((inst.container_ip, port), inst.guid, inst.app, tls=True, service=service)

    def listeners(self, s: Scenario, inst: Instance) -> Iterator[tuple[Address, Listener]]:
        # Envoy answers (with mTLS) only where the pod's capture rules send the gateway's
        # connection to its inbound port; elsewhere the app itself answers, in plain text.
        config = istio_config(s)
        for p in dict.fromkeys(s.app(inst.app).ports):
            captured = istio_inbound(inst.container_ip, p, GATEWAY_IP, config).via_proxy
            yield (inst.container_ip, p), Listener(inst.guid, inst.app, captured)

    def route_table(self, s: Scenario, instances: list[Instance],
                    mapped: frozenset[int]) -> RouteTable:
        """A host with no endpoints is still known where a route object exists without
        instances (a VirtualService whose Service has no ready pod)."""
        table: dict[str, list[Endpoint]] = {}
        weights: dict[str, Weights] = {}
        for host, destinations in gateway_destinations(s, mapped).items():
            eps = table.setdefault(host, [])
            for d in destinations:
                eps.extend(self.endpoint(s, i, d.port, d.service)
                           for i in instances if i.app == d.app)
            weights[host] = tuple((d.service, d.weight) for d in destinations)
        return RouteTable({h: tuple(e) for h, e in table.items()}, weights)

    def verdicts(self, s: Scenario) -> dict[tuple[bool, bool], Verdict]:
        return gateway_verdicts(s)

    def capture_rules(self, s: Scenario, inst: Instance | None) -> CaptureRules:
        """istio-iptables in every pod: inbound to 15006, outbound to 15001."""
        c = istio_config(s)
        return CaptureRules("istio-iptables (pod)", istio_capture(c).v4,
                            frozenset({int(c.ProxyPort), int(c.InboundCapturePort)}), "every pod")


class Bosh(Platform):
    name = "bosh"
    router = "the client VM's local Envoy"
    dialer = "the local Envoy"
    route_kind = "local Envoy cluster"
    app_uid = BOSH_JOB_UID

    def own_address(self, inst: Instance) -> str:
        return inst.cell_ip  # a job runs on its VM, with the VM's address

    def router_capacity(self, s: Scenario) -> RouterCapacity:
        """The client VM's local Envoy dials the instances (``envoy_router_capacity``), with
        its clusters' 1 s connect timeout."""
        return envoy_router_capacity(s, BOSH_CONNECT_TIMEOUT)

    def configuration_problems(self, s: Scenario) -> Iterator[tuple[Loc, str]]:
        for k, r in enumerate(s.routes):
            if not r.host.endswith(BOSHY_SUFFIX):
                yield ("routes", k, "host"), (
                    f"{r.host!r}: a BOSH job reaches another through a "
                    f"<job>.<instance group>.<deployment>{BOSHY_SUFFIX} name")

    def endpoint(self, s: Scenario, inst: Instance, port: int, service: str = "") -> Endpoint:
        # The client VM's own Envoy dials the instance directly (the prototype has no mTLS).
        return Endpoint((inst.container_ip, port), inst.guid, inst.app, tls=False)

    def client_paths(self, s: Scenario) -> dict[str, CapturedPath]:
        """Clients are jobs on other VMs dialling ``<name>.boshy`` VIPs; whether that reaches
        the VM's Envoy is what the VM's iptables rules say (no Envoy add-on, no rule)."""
        vips = bosh_vip([r.host for r in s.routes])
        caller = str(CELL_NET + 1)
        port: dict[str, int] = {}
        for r in s.routes:
            port.setdefault(r.host, r.port)
        return {h: bosh_client(caller, vips[h], port[h], s.proxy.enabled) for h in port}

    def terminates_tls(self, s: Scenario) -> bool:
        return False  # plain TCP from the job through its VM's Envoy to the instance

    def capture_rules(self, s: Scenario, inst: Instance | None) -> CaptureRules:
        """The VM's OUTPUT rule redirecting ``*.boshy`` VIPs into the local Envoy."""
        return CaptureRules("bosh VIP capture (VM)", bosh_vip_rules(BOSH_PROXY_PORT),
                            frozenset({BOSH_PROXY_PORT}), "every VM with the Envoy add-on")


PLATFORMS: dict[str, Platform] = {p.name: p for p in (Diego(), Istio(), Bosh())}


def platform_of(s: Scenario) -> Platform:
    """The platform object for a scenario's ``platform``."""
    return PLATFORMS[s.platform]
