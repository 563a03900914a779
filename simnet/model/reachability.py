"""Who can open a connection to which port of an app instance, and with what: a networkx graph.

The graph holds the deployment as a connection sees it: the sources (an external client, the
router tier, another container, a process in the same container), the load balancer, the
routes, the cells and their host ports, and inside each container the sockets that answer: Envoy
listeners, app ports, sidecar process ports and Envoy's admin API. Each edge is one hop a
connection takes, labelled with what it needs there (``Needs``): plain TCP, TLS with the
instance's certificate, a client certificate from the CAs the sidecar trusts and one of the SANs
it verifies, "from inside the container only", or a permission the platform must grant first
(a container-to-container network policy, an application security group).

Nothing is re-derived: Diego's host ports and what they lead to come from
``capture.diego_host_view`` (the same mapping ``capture.diego_netin_rules`` writes as Garden's
DNAT rules), a listener's TLS requirements from the Envoy listener ``envoy.downstream_tls_context``
writes, routes from the derived route table, Istio's capture from ``interception.istio_inbound``
and the BOSH VIP rule from the deployment's client paths. Paths are networkx's
(``all_simple_paths`` over the target's ancestors). Pure: no simpy, subprocess or sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import networkx as nx

from simnet.model.bosh import BOSH_ADMIN
from simnet.model.capture import diego_host_view
from simnet.model.deployment import Deployment
from simnet.model.placement import GATEWAY_IP, Instance
from simnet.model.platform import Bosh, Diego, Istio, Platform
from simnet.model.envoy import CertFiles, cluster_name, downstream_tls_context
from simnet.model.interception import istio_config, istio_inbound
from simnet.model.ports import C2C_TLS_PORT
from simnet.scenario.schema import App, Scenario

SOURCES = ("external", "router", "peer", "local")
"""Source node ids, in the order answers list them."""

TARGET_KINDS = ("app-port", "sidecar-port", "envoy-admin", "listener")
"""Node kinds a question can name: the sockets that answer inside an instance."""

C2C_POLICY = "c2c-policy"  # Silk: `cf add-network-policy SRC DST --port P`; default deny
ASG = "asg"  # an application security group letting containers reach the cell network
GRANTS = {
    C2C_POLICY: "a container-to-container network policy for this port (Silk denies by default)",
    ASG: "an application security group allowing egress to the cell network",
}
ISTIO_ADMIN_PORT = 15000  # istio-proxy's Envoy admin API, bound to localhost only
ISTIO_INBOUND_PORT = 15006

_LABEL_CERT_FILES = CertFiles("identity.crt", "identity.key", trusted_ca="trusted-cas.crt")


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """What a connection needs on one hop (an edge label), or along a whole path.

    ``tls``: the socket terminates TLS with a certificate carrying ``server_san`` (Diego: the
    instance guid). ``client_cert_cas``: non-empty means a client certificate issued by one of
    these CAs is required, carrying one of ``client_sans`` when that is non-empty (Envoy's
    ``require_client_certificate``, ``trusted_ca`` and SAN matchers). ``loopback``: only a process
    inside the container can open it. ``grants``: permissions the platform must grant first
    (``GRANTS``); a scenario cannot express them, so paths needing one do not exist as written.
    """

    tls: bool = False
    server_san: str | None = None
    client_cert_cas: tuple[str, ...] = ()
    client_sans: tuple[str, ...] = ()
    loopback: bool = False
    grants: tuple[str, ...] = ()

    @property
    def client_cert(self) -> bool:
        return bool(self.client_cert_cas)

    @property
    def level(self) -> str:
        """``plain``, ``tls`` or ``mtls``: how much the connection must bring."""
        return "mtls" if self.client_cert else ("tls" if self.tls else "plain")

    def then(self, other: Needs) -> Needs:
        """Both hops' needs: what a connection taking this hop and then ``other`` needs."""
        return Needs(
            tls=self.tls or other.tls,
            server_san=self.server_san or other.server_san,
            client_cert_cas=self.client_cert_cas or other.client_cert_cas,
            client_sans=self.client_sans or other.client_sans,
            loopback=self.loopback or other.loopback,
            grants=tuple(sorted(set(self.grants) | set(other.grants))),
        )

    def accepts_cert(self, ca: str | None, san: str | None = None) -> bool:
        """Whether a client certificate from CA ``ca`` with SAN ``san`` (``ca`` None: no
        certificate) passes this hop's client-certificate check."""
        if not self.client_cert:
            return True
        return ca in self.client_cert_cas and (not self.client_sans or san in self.client_sans)

    def text(self) -> str:
        """One line for people: ``plain TCP``, ``TLS (server SAN g)``, ``mTLS: ...``."""
        if self.client_cert:
            words = f"mTLS: client cert from {', '.join(self.client_cert_cas)}"
            if self.client_sans:
                words += f" with SAN {' or '.join(self.client_sans)}"
        elif self.tls:
            words = "TLS, no client cert"
        else:
            words = "plain TCP"
        if self.tls and self.server_san:
            words += f" (server SAN {self.server_san})"
        if self.loopback:
            words += ", from inside the container"
        if self.grants:
            words += f", needs {' and '.join(self.grants)}"
        return words

    def to_json(self) -> dict:
        return {"level": self.level, "tls": self.tls, "server_san": self.server_san,
                "client_cert_cas": list(self.client_cert_cas), "client_sans": list(self.client_sans),
                "loopback": self.loopback, "grants": list(self.grants)}


@dataclass(frozen=True)
class Client:
    """What a connecting client brings: TLS or not, a client certificate (its issuing CA's name
    and its SAN), and any platform grants it holds."""

    tls: bool = False
    cert_ca: str | None = None
    cert_san: str | None = None
    grants: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Target:
    """A socket inside one instance that a question can name: ``app/port``."""

    guid: str
    app: str
    index: int
    port: int
    kind: str  # one of TARGET_KINDS
    address: tuple[str, int]  # where it listens (127.0.0.1 for the admin API)
    app_port: int | None = None  # the app port behind a listener
    label: str = ""


@dataclass(frozen=True)
class Access:
    """One way in: a source, the path it takes to a target, and what the connection needs.

    ``opened_by`` is who opens the connection those needs apply to: the router for a client
    that goes through it (its own TLS to the router ends there). ``address`` is where that
    connection is dialled. ``met_by_router``: for connections the router opens, whether the
    router's configured client certificate (``routers.backends.client_cert``) passes the
    client-certificate check; None for other openers.
    """

    source: str
    target: Target
    opened_by: str
    address: tuple[str, int] | None
    name: str
    path: tuple[str, ...]  # node labels
    hops: tuple[str, ...]  # edge labels
    needs: Needs
    met_by_router: bool | None = None
    proxied: bool = False  # the path passes through an Envoy listener (TLS proxy, inbound)

    def admits(self, client: Client) -> bool:
        """Whether ``client``, opening this access's connection, reaches the target: it speaks
        TLS exactly where TLS is terminated, its certificate passes, it holds every grant."""
        n = self.needs
        return (client.tls == n.tls and n.accepts_cert(client.cert_ca, client.cert_san)
                and set(n.grants) <= set(client.grants))

    def to_json(self) -> dict:
        return {"source": self.source, "opened_by": self.opened_by,
                "address": _address_text(self.address), "name": self.name,
                "needs": self.needs.to_json(), "text": self.needs.text(),
                "met_by_router": self.met_by_router, "proxied": self.proxied,
                "path": list(self.path),
                "hops": list(self.hops)}


@dataclass(frozen=True)
class PortReach:
    """Every way into one target, grouped for the answer "who can reach this, with what"."""

    target: Target
    access: tuple[Access, ...]

    def by(self, source: str, *, grants: bool = False) -> tuple[Access, ...]:
        """The accesses from ``source``; those needing a platform grant only with ``grants``."""
        return tuple(a for a in self.access if a.source == source and (grants or not a.needs.grants))

    def easiest(self, source: str, *, grants: bool = False) -> Access | None:
        """The access from ``source`` that needs least (plain before TLS before mTLS)."""
        return min(self.by(source, grants=grants), key=_strength, default=None)

    def to_json(self) -> dict:
        t = self.target
        return {"app": t.app, "index": t.index, "guid": t.guid, "port": t.port, "kind": t.kind,
                "label": t.label, "listens_on": _address_text(t.address), "app_port": t.app_port,
                "access": [a.to_json() for a in self.access]}


@dataclass(frozen=True)
class Reachability:
    """The answer for a deployment: every target asked about, and what the graph cannot show."""

    scenario: str
    platform: str
    ports: tuple[PortReach, ...]
    limits: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "platform": self.platform,
                "sources": {s: SOURCE_LABELS[s] for s in SOURCES}, "grants": dict(GRANTS),
                "limits": list(self.limits), "targets": [p.to_json() for p in self.ports]}


SOURCE_LABELS = {
    "external": "external client (through the load balancer and a route)",
    "router": "the router tier itself (gorouter / ingress gateway / a VM's local Envoy)",
    "peer": "another container (another app's instance)",
    "local": "a process in the same container (app, sidecar, cf ssh)",
}


def _strength(a: Access) -> tuple[int, int]:
    return ({"plain": 0, "tls": 1, "mtls": 2}[a.needs.level], len(a.needs.grants))


def _address_text(address: tuple[str, int] | None) -> str | None:
    return None if address is None else f"{address[0]}:{address[1]}"


# --- what runs in a container ------------------------------------------------------------


def sidecar_ports(app: App) -> tuple[int, ...]:
    """Ports of the sidecar processes that run beside the app's process type (a sidecar runs in
    the containers of the process types it lists), de-duplicated in order."""
    return tuple(dict.fromkeys(p for sc in app.sidecars if app.process_type in sc.process_types
                               for p in sc.ports))


def _sidecar_names(app: App) -> dict[int, str]:
    return {p: sc.name for sc in app.sidecars if app.process_type in sc.process_types
            for p in sc.ports}


def listener_needs(s: Scenario, proxy_port: int, guid: str) -> Needs:
    """What the Envoy listener on ``proxy_port`` demands, read from the listener's derived
    DownstreamTlsContext (``envoy.downstream_tls_context``): TLS with the instance identity,
    and with ``require_client_certificate`` a certificate from the trusted CAs (the file holds
    ``proxy.trusted_ca_certificates``) carrying one of the matched SANs."""
    ctx = downstream_tls_context(proxy_port, proxy=s.proxy, cert_files=_LABEL_CERT_FILES)
    if not ctx.get("require_client_certificate"):
        return Needs(tls=True, server_san=guid)
    validation = ctx["common_tls_context"]["validation_context"]
    sans = tuple(dict.fromkeys(m["matcher"]["exact"]
                               for m in validation.get("match_typed_subject_alt_names", ())))
    return Needs(tls=True, server_san=guid, client_cert_cas=tuple(s.proxy.trusted_ca_certificates),
                 client_sans=sans)


def _istio_inbound_needs(s: Scenario) -> Needs:
    """Envoy's inbound listener in an Istio pod: with mTLS required (STRICT) a client
    certificate from the mesh CA; otherwise Istio's PERMISSIVE mode, which also accepts plain
    text. The server identity is the workload's SPIFFE service account, not derived here."""
    p = s.proxy
    if not p.require_and_verify_client_certificates:
        return Needs()
    return Needs(tls=True, client_cert_cas=tuple(p.trusted_ca_certificates),
                 client_sans=tuple(p.verify_subject_alt_name))


# --- the graph ----------------------------------------------------------------------------


class _Builder:
    def __init__(self, d: Deployment):
        self.d, self.s = d, d.scenario
        self.g = nx.DiGraph(platform=self.s.platform, scenario=self.s.name,
                            apps=tuple(a.name for a in self.s.apps))
        # dialled address -> (node a route's connection enters, what it needs there)
        self.entries: dict[tuple[str, int], tuple[str, Needs]] = {}

    def node(self, nid: str, kind: str, label: str, **attrs) -> str:
        self.g.add_node(nid, kind=kind, label=label, **attrs)
        return nid

    def edge(self, a: str, b: str, label: str, needs: Needs = Needs(),
             dial: tuple[str, int] | None = None) -> None:
        self.g.add_edge(a, b, label=label, needs=needs, dial=dial)

    def socket(self, inst: Instance, kind: str, port: int, label: str, address: tuple[str, int],
               app_port: int | None = None) -> str:
        return self.node(f"{kind}:{inst.guid}:{port}", kind, f"{inst.app}/{inst.index} {label}",
                         target=Target(inst.guid, inst.app, inst.index, port, kind, address,
                                       app_port, label))

    def sources(self) -> None:
        for sid in SOURCES:
            self.node(sid, "source", SOURCE_LABELS[sid])
        if isinstance(self.d.platform, Bosh):
            self.g.nodes["router"]["label"] = "a VM's local Envoy (the routers stand for them)"
            self.g.nodes["peer"]["label"] = "a job on another VM"
            self.g.nodes["local"]["label"] = "a process on the same VM"
            self.g.remove_node("external")  # no ingress: the clients are jobs on other VMs
            return
        ingress = self.s.ingress.kind
        front = "external"
        if ingress != "none":
            front = self.node("ingress", "ingress", {"load_balancer": "load balancer",
                                                     "istio_gateway": "cloud load balancer in front "
                                                     "of the ingress gateway"}[ingress])
            self.edge("external", "ingress", "client to the load balancer")
            # Containers reach the public load balancer like any client (CF's default
            # `public_networks` ASG allows it; on Kubernetes nothing blocks it).
            self.edge("peer", "ingress", "the app's public route, like any client")
        self.front = front

    def routes(self) -> None:
        kind, dialer = self.d.platform.route_kind, self.d.platform.dialer
        for host, endpoints in sorted(self.d.routes.items()):
            rid = self.node(f"route:{host}", "route", f"{kind} {host}", host=host)
            if not isinstance(self.d.platform, Bosh):
                self.edge(self.front, rid, f"request for {host}")
                if self.front == "external":  # no load balancer: containers call routers too
                    self.edge("peer", rid, f"request for {host}, like any client")
            else:
                self.edge("router", rid, f"the local Envoy's cluster for {host}")
            for ep in endpoints:
                if ep.address in self.entries:
                    entry, needs = self.entries[ep.address]
                    how = (f"dials TLS, checks SAN {ep.guid}" if ep.tls else "dials plain")
                    self.edge(rid, entry, f"{dialer} {how} at {ep.address[0]}:{ep.address[1]}",
                              needs, dial=ep.address)

    # -- Diego -------------------------------------------------------------------------------

    def diego(self, inst: Instance) -> None:
        """The cell's host ports (Garden NetIn, per ``diego_host_view``) and the container's sockets."""
        app = self.s.app(inst.app)
        cell = self.node(f"cell:{inst.cell}", "cell", f"cell {inst.cell} ({inst.cell_ip})",
                         ip=inst.cell_ip)
        if not self.g.has_edge("router", cell):
            self.edge("router", cell, "platform network to the cell")
            self.edge("peer", cell, "egress to the cell network", Needs(grants=(ASG,)))
        local = f"local:{inst.guid}"
        names = _sidecar_names(app)
        sockets: dict[int, str] = {}
        views = diego_host_view(inst, sidecar_ports(app))
        for v in views:  # sockets first, so DNAT edges can find their target
            if v.kind in ("tls-proxy", "c2c-tls"):
                label = "C2C TLS" if v.kind == "c2c-tls" else "TLS proxy"
                sockets[v.container_port] = self.socket(
                    inst, "listener", v.container_port, f"Envoy {label} {v.container_port}",
                    (inst.container_ip, v.container_port), v.app_port)
            elif v.kind == "unproxied-app":
                sockets[v.container_port] = self.socket(
                    inst, "app-port", v.container_port, f"app port {v.container_port}",
                    (inst.container_ip, v.container_port), v.container_port)
            elif v.kind == "sidecar":
                sockets[v.container_port] = self.socket(
                    inst, "sidecar-port", v.container_port,
                    f"sidecar {names[v.container_port]} port {v.container_port}",
                    (inst.container_ip, v.container_port))
            elif v.kind == "envoy-admin":
                sockets[v.container_port] = self.socket(
                    inst, "envoy-admin", v.container_port, f"Envoy admin {v.container_port}",
                    ("127.0.0.1", v.container_port))
        self.node(local, "source", f"{inst.app}/{inst.index}: {SOURCE_LABELS['local']}",
                  guid=inst.guid)
        self.edge("local", local, "inside the container")
        for v in views:
            sock = sockets[v.container_port]
            kind = self.g.nodes[sock]["kind"]
            needs = (listener_needs(self.s, v.container_port, inst.guid) if kind == "listener"
                     else Needs())
            if v.host_port is not None:
                hp = self.node(f"hostport:{inst.cell}:{v.host_port}", "host-port",
                               f"cell {inst.cell} host port {v.host_port}",
                               address=(inst.cell_ip, v.host_port))
                self.edge(cell, hp, f"TCP to {inst.cell_ip}:{v.host_port}",
                          dial=(inst.cell_ip, v.host_port))
                self.edge(hp, sock, f"Garden NetIn DNAT {inst.cell_ip}:{v.host_port} -> "
                          f"{inst.container_ip}:{v.container_port}", needs)
                self.entries[(inst.cell_ip, v.host_port)] = (hp, Needs())
            self.edge(local, sock, f"loopback 127.0.0.1:{v.container_port}",
                      needs.then(Needs(loopback=True)), dial=("127.0.0.1", v.container_port))
            if kind != "envoy-admin":
                self.edge("peer", sock, f"container network to {inst.container_ip}:"
                          f"{v.container_port}", needs.then(Needs(grants=(C2C_POLICY,))),
                          dial=(inst.container_ip, v.container_port))
            if kind == "listener":
                self.edge(sock, sockets[v.app_port], f"Envoy tcp_proxy to {cluster_name(v.app_port)}")

    # -- Istio -------------------------------------------------------------------------------

    def istio(self, inst: Instance) -> None:
        """A pod: each app and sidecar port is either captured into Envoy's inbound listener
        (as the pod's istio-iptables rules decide) or reached directly; admin on localhost."""
        app = self.s.app(inst.app)
        local = self.node(f"local:{inst.guid}", "source",
                          f"{inst.app}/{inst.index}: {SOURCE_LABELS['local']}", guid=inst.guid)
        self.edge("local", local, "inside the pod")
        names = _sidecar_names(app)
        captured = {addr[1]: lst.tls for addr, lst in self.d.listeners.get(inst.guid, ())}
        inbound_needs = _istio_inbound_needs(self.s)
        ports = [(p, "app-port", f"app port {p}") for p in dict.fromkeys(app.ports)]
        ports += [(p, "sidecar-port", f"sidecar {names[p]} port {p}") for p in sidecar_ports(app)]
        for port, kind, label in ports:
            sock = self.socket(inst, kind, port, label, (inst.container_ip, port),
                               port if kind == "app-port" else None)
            via = captured.get(port)
            if via is None:  # not in the derived listeners (sidecar ports): ask the rules
                via = istio_inbound(inst.container_ip, port, GATEWAY_IP,
                                   istio_config(self.s)).via_proxy
            entry = sock
            if via:
                entry = self.node(f"inbound:{inst.guid}:{port}", "envoy-inbound",
                                  f"{inst.app}/{inst.index} Envoy inbound {ISTIO_INBOUND_PORT} "
                                  f"(for port {port})")
                self.edge(entry, sock, f"Envoy forwards to the original destination port {port}")
            self.entries[(inst.container_ip, port)] = (entry, inbound_needs if via else Needs())
            capture = (f"captured: iptables REDIRECT {inst.container_ip}:{port} -> "
                       f"{ISTIO_INBOUND_PORT}" if via else f"not captured: {inst.container_ip}:{port}")
            for src in ("router", "peer"):
                self.edge(src, entry, f"pod network, {capture}", inbound_needs if via else Needs(),
                          dial=(inst.container_ip, port))
            self.edge(local, sock, f"loopback 127.0.0.1:{port}", Needs(loopback=True),
                      dial=("127.0.0.1", port))
        admin = self.socket(inst, "envoy-admin", ISTIO_ADMIN_PORT, f"Envoy admin {ISTIO_ADMIN_PORT}",
                            ("127.0.0.1", ISTIO_ADMIN_PORT))
        self.edge(local, admin, f"loopback 127.0.0.1:{ISTIO_ADMIN_PORT}", Needs(loopback=True),
                  dial=("127.0.0.1", ISTIO_ADMIN_PORT))

    # -- BOSH --------------------------------------------------------------------------------

    def bosh(self, inst: Instance) -> None:
        """A VM running the job: its ports answer on the VM's address to anyone (the prototype
        has no inbound capture and no server-side TLS)."""
        app = self.s.app(inst.app)
        local = self.node(f"local:{inst.guid}", "source",
                          f"{inst.app}/{inst.index}: a process on the same VM", guid=inst.guid)
        self.edge("local", local, "on the VM")
        names = _sidecar_names(app)
        ports = [(p, "app-port", f"job port {p}") for p in dict.fromkeys(app.ports)]
        ports += [(p, "sidecar-port", f"process {names[p]} port {p}") for p in sidecar_ports(app)]
        if self.s.proxy.enabled:  # the add-on's Envoy: its admin API on every interface
            ports.append((BOSH_ADMIN[1], "envoy-admin", f"Envoy admin {BOSH_ADMIN[1]}"))
        for port, kind, label in ports:
            sock = self.socket(inst, kind, port, label, (inst.container_ip, port),
                               port if kind == "app-port" else None)
            self.entries[(inst.container_ip, port)] = (sock, Needs())
            self.edge("peer", sock, f"VM network to {inst.container_ip}:{port}",
                      dial=(inst.container_ip, port))
            self.edge(local, sock, f"loopback 127.0.0.1:{port}", Needs(loopback=True),
                      dial=("127.0.0.1", port))

    def vips(self) -> None:
        """A job calls ``<name>.boshy``: its VM's VIP rule sends the connection into the local
        Envoy, which picks an instance (``Deployment.client_paths``); without the add-on the
        VIP leads nowhere."""
        for host, path in sorted(self.d.client_paths.items()):
            vip = self.node(f"vip:{host}", "vip", f"VIP of {host}")
            self.edge("peer", vip, f"connect to {host}")
            if path.via_proxy and self.g.has_node(f"route:{host}"):
                self.edge(vip, f"route:{host}", f"VIP rule REDIRECT -> local Envoy {path.proxy_port}")


def _instances(d: Deployment, guids: Iterable[str] | None) -> list[Instance]:
    wanted = list(d.running) if guids is None else list(guids)
    return [d.instance(g) for g in dict.fromkeys(wanted)]


def deployment_graph(d: Deployment, guids: Iterable[str] | None = None) -> nx.DiGraph:
    """The reachability graph of the instances ``guids`` (default: every instance running at
    t=0; give instances that run at the same time: a moved instance's successor reuses its
    host ports). Nodes carry ``kind`` and ``label`` (target sockets also a ``Target``); edges carry
    ``label``, ``needs`` (``Needs``) and ``dial`` (the address a connection is opened to on
    that hop, if it opens one). ``graph["limits"]`` says what the platform's edges leave out."""
    b = _Builder(d)
    b.sources()
    build = {Diego: b.diego, Istio: b.istio, Bosh: b.bosh}[type(d.platform)]
    for inst in _instances(d, guids):
        build(inst)
    b.routes()
    if isinstance(d.platform, Bosh):
        b.vips()
    b.g.graph["limits"] = platform_limits(d.platform)
    return b.g


def platform_limits(platform: Platform) -> tuple[str, ...]:
    """What the graph cannot show for the scenario's platform, said plainly."""
    if isinstance(platform, Diego):
        return (
            "Processes on the cell VM itself are trusted platform components and not a source.",
            "Paths that need a container-to-container network policy (Silk) or an application "
            "security group to the cell network are listed with that grant: the scenario cannot "
            "grant either, so as written they do not exist.",
        )
    if isinstance(platform, Istio):
        return (
            "istio: limited. Every pod reaches every pod IP (the scenario has no Kubernetes "
            "NetworkPolicy); capture follows the pod's istio-iptables rules.",
            "istio: the server identity is the workload's SPIFFE service account, not derived "
            "(no server SAN shown); without require_and_verify_client_certificates Istio's "
            "PERMISSIVE mode also accepts plain text on captured ports.",
            "istio: Envoy's own ports other than admin (15001, 15006, 15090, 15021, 15020) are "
            "not targets.",
        )
    return (
        "bosh: limited. A VM has no container boundary: its job ports answer every other VM in "
        "plain text (the prototype has no inbound capture and no mTLS); no ingress, so no "
        "external client.",
        "bosh: the add-on Envoy's admin API is a target on 0.0.0.0:8001; its virtual "
        "listener (15001) is not.",
    )


# --- questions ---------------------------------------------------------------------------


def targets(g: nx.DiGraph) -> list[str]:
    """Target socket nodes, in a stable order: app (as the scenario lists them), instance
    index, kind (app ports, sidecar ports, admin, listeners), port."""
    kinds = {k: n for n, k in enumerate(TARGET_KINDS)}
    apps = {a: n for n, a in enumerate(g.graph["apps"])}

    def key(n: str) -> tuple:
        t = g.nodes[n]["target"]
        return (apps[t.app], t.index, kinds[t.kind], t.port)

    return sorted((n for n, a in g.nodes(data=True) if a["kind"] in TARGET_KINDS), key=key)


def _paths(g: nx.DiGraph, target: str) -> Iterator[tuple[str, list[str]]]:
    """(source, path) for every simple path from a source node to ``target``."""
    ancestors = nx.ancestors(g, target)
    sub = g.subgraph(ancestors | {target})
    for source in SOURCES:
        if source in ancestors:
            for path in sorted(nx.all_simple_paths(sub, source, target)):
                yield source, path


def accesses(g: nx.DiGraph, target: str, router_cert: tuple[str, str | None] | None = None
             ) -> tuple[Access, ...]:
    """Every way a source reaches the ``target`` node, with what each connection needs.

    ``router_cert``: the router's client certificate as (CA name, SAN), or None when it has
    none; it fills in ``Access.met_by_router``.
    """
    out = []
    t = g.nodes[target]["target"]
    for source, path in _paths(g, target):
        edges = [g.edges[a, b] for a, b in zip(path, path[1:])]
        needs = Needs()
        for e in edges:
            needs = needs.then(e["needs"])
        kinds = [g.nodes[n]["kind"] for n in path]
        relayed = "route" in kinds or (source == "router")
        opened_by = "router" if relayed else source
        dial = next((e["dial"] for e in edges if e["dial"] is not None), None)
        met = None
        if opened_by == "router":
            met = needs.accepts_cert(*(router_cert or (None, None)))
        out.append(Access(
            source=source, target=t, opened_by=opened_by, address=dial,
            name=_path_name(g, path, needs), path=tuple(g.nodes[n]["label"] for n in path),
            hops=tuple(e["label"] for e in edges), needs=needs, met_by_router=met,
            proxied=any(k in ("listener", "envoy-inbound") for k in kinds)))
    return tuple(sorted(out, key=lambda a: (SOURCES.index(a.source), _strength(a), a.name,
                                            a.path)))


_SHORT = {"host-port": "host port", "listener": "", "app-port": "app port",
          "sidecar-port": "sidecar port", "envoy-admin": "Envoy admin",
          "envoy-inbound": "Envoy inbound"}


def _path_name(g: nx.DiGraph, path: list[str], needs: Needs) -> str:
    """The path from where it enters the platform's sockets, e.g. ``host port 61001 -> app
    port 8080`` (the unproxied mapping) or ``host port 61004 -> TLS proxy 61001 -> app port 8080``."""
    parts = ["loopback"] if needs.loopback else []
    for n in path:
        a = g.nodes[n]
        kind = a["kind"]
        if kind == "host-port":
            parts.append(f"host port {a['address'][1]}")
        elif kind == "envoy-inbound":
            parts.append(f"Envoy inbound {ISTIO_INBOUND_PORT}")
        elif kind == "listener":
            t = a["target"]
            parts.append(f"{'C2C TLS' if t.port == C2C_TLS_PORT else 'TLS proxy'} {t.port}")
        elif kind in TARGET_KINDS:
            parts.append(f"{_SHORT[kind]} {a['target'].port}")
        elif kind == "vip":
            parts.append("VIP")
        elif kind == "route":
            parts.append(f"route {a['host']}")
    return " -> ".join(parts)


def _router_cert(s: Scenario) -> tuple[str, str | None] | None:
    cert = s.routers.backends.client_cert
    return (cert.ca, cert.san) if cert is not None else None


def reachability(d: Deployment, *, app: str | None = None, port: int | None = None,
                 guids: Iterable[str] | None = None) -> Reachability:
    """Who can open a connection to each target socket (of ``app``, on ``port``, when given)
    of the instances ``guids`` (default: running at t=0), and with what."""
    g = deployment_graph(d, guids)
    cert = _router_cert(d.scenario)
    ports = []
    for n in targets(g):
        t = g.nodes[n]["target"]
        if (app is None or t.app == app) and (port is None or t.port == port):
            ports.append(PortReach(t, accesses(g, n, cert)))
    return Reachability(d.scenario.name, d.scenario.platform, tuple(ports),
                        g.graph["limits"])


def representatives(d: Deployment) -> list[str]:
    """One running instance per app (its lowest index): every instance of an app has the same
    sockets and requirements, only addresses differ."""
    first: dict[str, Instance] = {}
    for guid in d.running:
        inst = d.instance(guid)
        if inst.app not in first or inst.index < first[inst.app].index:
            first[inst.app] = inst
    return [first[a.name].guid for a in d.scenario.apps if a.name in first]


# --- the per-app matrix (report) ----------------------------------------------------------


@dataclass(frozen=True)
class MatrixCell:
    """The easiest way one source reaches one port: ``level`` without any grant (``none``: no
    path), and ``granted`` the easiest level once grants are allowed (when it is easier)."""

    level: str  # "none" | "plain" | "tls" | "mtls"
    loopback: bool = False
    granted: str | None = None
    grants: tuple[str, ...] = ()

    def text(self) -> str:
        if self.level == "none":
            base = "none"
        else:
            base = {"plain": "plain", "tls": "TLS", "mtls": "mTLS"}[self.level]
            if self.loopback:
                base += " (loopback)"
        if self.granted:
            extra = {"plain": "plain", "tls": "TLS", "mtls": "mTLS"}[self.granted]
            base += f"; {extra} with {' and '.join(self.grants)}"
        return base


@dataclass(frozen=True)
class MatrixRow:
    app: str
    port: int
    kind: str
    label: str
    cells: tuple[MatrixCell, ...]  # one per SOURCES entry


@dataclass(frozen=True)
class ReachMatrix:
    """Sources x ports of one instance per app, for the report's figure and summary.json."""

    platform: str
    rows: tuple[MatrixRow, ...]
    limits: tuple[str, ...]

    def facts(self) -> list[dict]:
        """Plain rows: app, port, kind and one text per source (deterministic)."""
        return [{"app": r.app, "port": r.port, "kind": r.kind,
                 **{s: c.text() for s, c in zip(SOURCES, r.cells)}} for r in self.rows]


def _cell(pr: PortReach, source: str) -> MatrixCell:
    free = pr.easiest(source)
    anyway = pr.easiest(source, grants=True)
    cell = MatrixCell("none") if free is None else MatrixCell(free.needs.level, free.needs.loopback)
    if anyway is not None and (free is None or _strength(anyway)[0] < _strength(free)[0]):
        cell = MatrixCell(cell.level, cell.loopback, anyway.needs.level, anyway.needs.grants)
    return cell


def reach_matrix(d: Deployment) -> ReachMatrix:
    """The matrix of one running instance per app: for each target port, each source's easiest
    way in."""
    r = reachability(d, guids=representatives(d))
    rows = tuple(MatrixRow(p.target.app, p.target.port, p.target.kind, p.target.label,
                           tuple(_cell(p, s) for s in SOURCES)) for p in r.ports)
    return ReachMatrix(d.scenario.platform, rows, r.limits)
