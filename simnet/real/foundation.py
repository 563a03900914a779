"""A whole foundation's network in namespaces: the emulated twin's wiring.

::

    edge (load generator, load balancer) --+
    router-0 ... router-k -----------------+-- core (forwards) --+-- cell-0 --+-- container ...
                                                                 +-- cell-1 --+-- container ...

``core`` stands for the foundation's network: it forwards between the edge, the routers and the
cells, and knows a host route to each of their addresses, never to a container. A cell forwards
to its containers (each on its own veth, the cell's end at ``CONTAINER_GATEWAY``), as a Diego cell
does, and publishes their ports only through Garden's NetIn DNAT rules, which
``add_container`` loads into the cell (``model.capture.diego_netin_rules``) and
``remove_container`` takes out again, as guardian does when a container is destroyed. A router
therefore reaches an instance only at the cell address and host port the route names.

Every address is the derived deployment's (cells and containers) or this module's (edge, routers,
core), all in 198.18.0.0/15. Every namespace is removed on ``close()`` (also after an error) and,
through ``real.netns``, at interpreter exit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simnet.model.addresses import CONTAINER_GATEWAY
from simnet.model.capture import diego_netin_rules
from simnet.model.placement import Instance
from simnet.real.netfilter import load_rules
from simnet.real.netns import Namespace, NamespaceGroup, create_namespaces, sysctl_defaults

CORE_IP = "198.19.254.1"  # core's end of every link (a /32 on each veth)
EDGE_IP = "198.19.255.100"  # the load balancer's address (the foundation's VIP)
ROUTER_NET = "198.19.255."  # router k at 198.19.255.(k + 1)
_CHAIN_RE = re.compile(r"^-N (w--instance-\S+)$", re.M)


def router_ip(k: int) -> str:
    """The address of router ``k``."""
    return f"{ROUTER_NET}{k + 1}"


@dataclass
class Container:
    """One instance's container: its namespace, the veth name on the cell's side, its NetIn
    chain once attached."""

    instance: Instance
    namespace: Namespace
    cell_if: str
    chain: str | None


@dataclass
class Foundation(NamespaceGroup):
    """The edge, ``routers`` routers and the ``cells`` (index -> cell address) around a core."""

    routers: int
    cells: dict[int, str]
    core: Namespace = field(default_factory=lambda: Namespace("core"))
    edge: Namespace = field(default_factory=lambda: Namespace("edge"))
    router_ns: list[Namespace] = field(default_factory=list)
    cell_ns: dict[int, Namespace] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    _links: int = 0
    _netin_ready: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.router_ns = [Namespace(f"router{k}") for k in range(self.routers)]
        self.cell_ns = {c: Namespace(f"cell{c}") for c in sorted(self.cells)}

    @property
    def namespaces(self) -> tuple[Namespace, ...]:
        return (*(c.namespace for c in self.containers.values()), *self.cell_ns.values(),
                *self.router_ns, self.edge, self.core)

    def _peers(self) -> list[tuple[Namespace, str, bool]]:
        """Each namespace joined to core, its address, and whether it forwards."""
        return ([(self.edge, EDGE_IP, False)]
                + [(ns, router_ip(k), False) for k, ns in enumerate(self.router_ns)]
                + [(self.cell_ns[c], ip, True) for c, ip in sorted(self.cells.items())])

    def open(self) -> Foundation:
        """Create the core, edge, router and cell namespaces and their links to core."""
        peers = self._peers()
        veths = [f"link add l{n} netns {self.core.name} type veth peer name eth0 netns {ns.name}"
                 for n, (ns, _, _) in enumerate(peers)]
        create_namespaces([self.core] + [ns for ns, _, _ in peers], veths)
        try:
            self.core.sysctls(sysctl_defaults([f"l{n}" for n in range(len(peers))], True))
            core_lines = ["link set lo up"]
            for n, (ns, address, forwards) in enumerate(peers):
                core_lines += [f"link set l{n} up", f"addr add {CORE_IP}/32 dev l{n}",
                               f"route add {address}/32 dev l{n}"]
                ns.sysctls(sysctl_defaults(["eth0"], forwards))
                ns.ip("link set lo up", "link set eth0 up", f"addr add {address}/32 dev eth0",
                      f"route add {CORE_IP}/32 dev eth0",
                      f"route add default via {CORE_IP} dev eth0")
            self.core.ip(*core_lines)
        except BaseException:
            self.close()
            raise
        return self

    def add_container(self, inst: Instance, *, attach: bool = True) -> Container:
        """Create ``inst``'s container on its cell: its namespace and veth, and (``attach``)
        the cell's side. A container created unattached can have its processes started while
        another container still holds its address, and takes over in ``attach``'s few
        commands: the emulation's stand-in for a container created while its predecessor is
        destroyed, which the simulator takes as one instant."""
        cell = self.cell_ns[inst.cell]
        self._links += 1
        cell_if = f"w{self._links}"
        ns = Namespace(f"c{inst.app[:8]}{inst.index}".replace("-", "_"))
        create_namespaces([ns], [f"link add {cell_if} netns {cell.name} type veth "
                                 f"peer name eth0 netns {ns.name}"])
        try:
            ns.sysctls(sysctl_defaults(["eth0"], False))
            ns.ip("link set lo up", "link set eth0 up", f"addr add {inst.container_ip}/32 dev eth0",
                  f"route add {CONTAINER_GATEWAY}/32 dev eth0",
                  f"route add default via {CONTAINER_GATEWAY} dev eth0")
        except BaseException:
            ns.close()
            raise
        container = self.containers[inst.guid] = Container(inst, ns, cell_if, None)
        if attach:
            self.attach(inst.guid)
        return container

    def attach(self, guid: str) -> None:
        """The cell's side of a container: its veth end at the container gateway, the route to
        the container, and Garden's NetIn rules for its host ports."""
        container = self.containers[guid]
        inst, cell_if = container.instance, container.cell_if
        cell = self.cell_ns[inst.cell]
        cell.sysctls(sysctl_defaults([cell_if], True))
        cell.ip(f"link set {cell_if} up", f"addr add {CONTAINER_GATEWAY}/32 dev {cell_if}",
                f"route add {inst.container_ip}/32 dev {cell_if}")
        rules = diego_netin_rules(inst, global_chains=inst.cell not in self._netin_ready)
        load_rules(cell, rules)
        self._netin_ready.add(inst.cell)
        container.chain = _CHAIN_RE.search(rules).group(1)

    def detach(self, guid: str) -> None:
        """Take the container off its cell: its NetIn chain out and the cell's veth end
        deleted (with the route over it), as guardian does first when destroying a container;
        the cell now refuses its host ports. Its processes may still be running."""
        container = self.containers[guid]
        if container.chain is None:
            return
        cell = self.cell_ns[container.instance.cell]
        load_rules(cell, "\n".join([
            "* nat", f"-D w--prerouting -m comment --comment {guid} -j {container.chain}",
            f"-F {container.chain}", f"-X {container.chain}", "COMMIT"]))
        container.chain = None
        cell.ip(f"link del {container.cell_if}")

    def remove_container(self, guid: str) -> None:
        """Destroy a container: detached from its cell, its namespace gone."""
        container = self.containers[guid]
        try:
            self.detach(guid)
        finally:
            del self.containers[guid]
            container.namespace.close()
