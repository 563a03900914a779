"""Where things are: app instances in containers on cells, their addresses and host ports,
and what answers at each address.

Diego's auction places each container on the cell it scores lowest, never overcommitting: 1000
for every instance of the same process already there (anti-affinity), plus the share of the
cell's memory used once it is placed (so the most free memory wins among the rest); Garden hands
each container host ports from the cell's FIFO port pool and silk's host-local IPAM an address
round-robin, so a released port or address comes back only after the rest of its pool.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from simnet.errors import PortRangeExhausted
from simnet.model.memory import NO_PROXY, Footprint, footprint, listener_kind
from simnet.model.ports import ProxyPorts, instance_ports, proxy_ports
from simnet.scenario.schema import App, Scenario

CONTAINER_NET = ipaddress.ip_address("198.18.0.0")  # benchmarking range, never routed
CELL_NET = ipaddress.ip_address("198.19.0.0")
# guardian gdn flags --port-pool-start 61001 --port-pool-size 4534 (kawasaki/ports/pool.go)
HOST_PORT_START = 61001
PORT_POOL_SIZE = 4534
MAX_CONTAINERS = 65_000
GATEWAY_IP = "198.19.255.254"  # the istio ingress gateway's pod, as the app pods see it

Address = tuple[str, int]
Weights = tuple[tuple[str, int], ...]  # (Service, weight) of a host's route, in order


@dataclass(frozen=True)
class Instance:
    """One app instance in its container on a cell, with every memory fact the simulator and
    the report need: the container's real limit, what the app asked for, what its processes
    use before Envoy, and its own sidecar's footprint (its own number of port mappings)."""

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
    app_quota_mb: int = 0  # what the app asked for (``apps[].memory_mb``)

    @property
    def envoy_limit_mb(self) -> float:
        """What Envoy may use before the container's limit OOM-kills it: the limit less what
        the app and its sidecar processes use."""
        return self.quota_mb - self.base_used_mb

    def reported_mb(self, envoy_mb: float) -> float:
        """What Diego reports for the container with Envoy at ``envoy_mb``: the app, its
        sidecar processes and Envoy, rescaled linearly from the real limit into the quota the
        app asked for (seed 002)."""
        used = self.base_used_mb + envoy_mb
        return used * self.app_quota_mb / self.quota_mb if self.quota_mb else 0.0


@dataclass(frozen=True)
class Endpoint:
    """A route registration: where the router dials, and whom it expects to find there."""

    address: Address
    guid: str  # server_cert_domain_san for TLS routes
    app: str
    tls: bool
    service: str = ""  # cf-for-k8s: the Kubernetes Service (route destination) it stands behind


@dataclass(frozen=True)
class Listener:
    """What answers at an address: which instance, and whether it speaks TLS there."""

    guid: str
    app: str
    tls: bool


def instance_guid(seed: int, app: str, index: int, generation: int = 0) -> str:
    """A stable instance guid in Diego's 8-4-4-4-4 hex form."""
    h = hashlib.sha256(f"{seed}/{app}/{index}/{generation}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:24]}"


# cloudfoundry/auction auctionrunner/cell.go ScoreForLRP: LocalityOffset per instance of the
# same process guid on the cell, added to the resource score (a share of the cell, under 1)
LOCALITY_OFFSET = 1000


class Cells:
    """Cell memory, the instances of each app on each cell and host ports, handed out without
    overcommit (the rep never overcommits)."""

    def __init__(self, count: int, memory_mb: int):
        self.memory_mb = memory_mb
        self.free = [memory_mb] * count
        self.apps: list[Counter] = [Counter() for _ in range(count)]
        self.next_host_port = [HOST_PORT_START] * count  # the never-used part of each pool
        self.released_ports: list[deque[int]] = [deque() for _ in range(count)]
        self.next_container = 0

    def place(self, need_mb: int, app: str, avoid: int | None = None) -> int | None:
        """The cell Diego's auction picks for an instance of ``app``: the lowest score among
        those it fits, LOCALITY_OFFSET per instance of ``app`` already there plus the share of
        memory used once placed (auctionrunner/cell.go ScoreForLRP, rep's ComputeScore, memory
        alone here: simnet models no disk or container-count limits); ties to the first."""
        best, best_score = None, 0.0
        for c, free in enumerate(self.free):
            if c == avoid or free < need_mb:
                continue
            score = LOCALITY_OFFSET * self.apps[c][app] + 1 - (free - need_mb) / self.memory_mb
            if best is None or score < best_score:
                best, best_score = c, score
        if best is not None:
            self.take(best, need_mb, app)
        return best

    def take(self, cell: int, need_mb: int, app: str) -> None:
        """An instance of ``app`` takes its memory and its place on ``cell`` (``free`` may go
        below zero: the caller reports that it did not fit)."""
        self.free[cell] -= need_mb
        self.apps[cell][app] += 1

    def leave(self, cell: int, need_mb: int, app: str) -> None:
        """An instance of ``app`` leaves ``cell`` (a move): its memory and its place free."""
        self.free[cell] += need_mb
        self.apps[cell][app] -= 1

    def host_ports(self, cell: int, n: int) -> list[int]:
        """``n`` host ports from ``cell``'s pool, as guardian's PortPool.Acquire takes them:
        from the front of a FIFO whose released ports went to the back (kawasaki/ports/pool.go),
        so the never-used ports come first."""
        pool = self.released_ports[cell]
        ports = []
        for _ in range(n):
            if self.next_host_port[cell] < HOST_PORT_START + PORT_POOL_SIZE:
                ports.append(self.next_host_port[cell])
                self.next_host_port[cell] += 1
            elif pool:
                ports.append(pool.popleft())
            else:
                raise PortRangeExhausted(
                    f"garden's host port pool on cell {cell} is exhausted ({PORT_POOL_SIZE} "
                    f"ports from {HOST_PORT_START}: guardian's --port-pool-size)")
        return ports

    def release(self, cell: int, host_ports: Iterable[int]) -> None:
        """A destroyed container's host ports go to the back of its cell's pool
        (PortPool.Release). Its address is not reused before the whole range: host-local's
        allocator starts from the last reserved address + 1 (containernetworking/plugins
        plugins/ipam/host-local/backend/allocator/allocator.go GetIter, which silk-cni runs)."""
        self.released_ports[cell].extend(host_ports)

    def container_ip(self) -> str:
        self.next_container += 1
        return str(CONTAINER_NET + self.next_container)


def mapping_count(s: Scenario, app: App) -> int:
    """Port mappings (Envoy listeners) of an app's sidecar: ``auto`` sizes the cell-wide
    additional allocation for the app with the most."""
    if not s.proxy.enabled:
        return 1
    try:
        return len(proxy_ports(app.ports).mappings)
    except PortRangeExhausted:
        return 1  # reported where the instance is made


def container_ports(app: App, pp: ProxyPorts | None, unproxied: bool) -> list[int]:
    """Container ports the cell maps to host ports, in the order they are requested."""
    ports = list(dict.fromkeys(app.ports)) if (unproxied or pp is None) else []
    if pp is not None:
        ports += [pp.proxy_for(p) for p in dict.fromkeys(app.ports)]
    return ports


def make_instance(s: Scenario, app: App, index: int, generation: int, cell: int,
                  cells: Cells, extra_mb: int) -> Instance:
    """A new instance of ``app`` on ``cell``: its address, proxy ports, host ports and memory."""
    pp = proxy_ports(app.ports) if s.proxy.enabled else None
    unproxied = s.proxy.enable_unproxied_port_mappings
    mapped = container_ports(app, pp, unproxied)
    ports = cells.host_ports(cell, len(mapped))
    used = app.memory_used_mb if app.memory_used_mb is not None else app.memory_mb / 2
    return Instance(
        guid=instance_guid(s.seed, app.name, index, generation),
        app=app.name,
        index=index,
        cell=cell,
        cell_ip=str(CELL_NET + 1 + cell),
        container_ip=cells.container_ip(),
        proxy=pp,
        cf_instance_ports=tuple(instance_ports(app.ports, pp, ports, unproxied)),
        host_ports=dict(zip(mapped, ports)),
        quota_mb=app.memory_mb + extra_mb,
        # sidecar processes run beside the process types they name, inside its quota
        base_used_mb=used + sum(sc.memory_mb for sc in app.sidecars
                                if app.process_type in sc.process_types),
        envoy=(footprint(s.proxy.memory, listener_kind(s.proxy), len(pp.mappings))
               if pp is not None else NO_PROXY),
        app_quota_mb=app.memory_mb,
    )


def reused_host_ports(victim: Instance, newcomer: Instance) -> dict[int, int]:
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
