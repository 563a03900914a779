"""The BOSH + Istio prototype's control plane (seed 003): from a manifest's ``expose_ports``
to the names, virtual IPs, Envoy listeners and clusters every VM gets.

As rosenhouse/istio's BOSH registry (``pilot/pkg/serviceregistry/bosh``) does, each exposed
port of a job (``scenario.bosh_schema.exposed_services``) becomes a port of the service
``<job>.<instance group>.<deployment>.boshy``, whose endpoints are every VM of the group at
that port. The VIP/DNS agent resolves each name to a VIP in 169.254.255.0/24
(``capture.boshy_vips``); the VM's egress rule sends TCP for those VIPs into its Envoy on 15001
(``capture.bosh_vip_rules``); Envoy matches the original destination VIP:port and balances
round robin over the cluster. The prototype served Pilot's v1 API (listeners
``tcp_<VIP>_<port>`` behind the ``virtual`` listener, clusters ``out.<name>|<port name>``);
``vm_bootstrap`` writes the same as an Envoy v3 bootstrap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from simnet.errors import Problem, SimnetError
from simnet.model.capture import BOSH_VIP_CIDR, bosh_vip_rules, boshy_vips
from simnet.model.interception import BOSH_PROXY_PORT
from simnet.scenario.bosh_schema import ExposedService, Manifest, exposed_services

TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST_TYPE = ("type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
                     "OriginalDst")
INSTANCE_NETWORK = "198.19.0.0/16"  # simnet's stand-in for the deployment's BOSH network
VIRTUAL_LISTENER = "virtual"  # Istio v1's VirtualListenerName: the listener iptables feeds
OUTBOUND_CLUSTER_PREFIX = "out."  # Istio v1's OutboundClusterPrefix
CONNECT_TIMEOUT = "1s"  # Istio's mesh default connect_timeout
# the add-on Envoy's admin API on every interface (boshy-istio-release jobs/bosh-envoy/templates/
# envoy.json.erb: "address": "tcp://0.0.0.0:8001"), reachable from every other VM
BOSH_ADMIN = ("0.0.0.0", 8001)

InstanceKey = tuple[str, int]  # (instance group, index), as `bosh instances` names apricot/3


@dataclass(frozen=True)
class Listener:
    """What Pilot's LDS gives every VM for one VIP:port (Istio v1 ``tcp_<VIP>_<port>``)."""

    name: str
    vip: str
    port: int
    cluster: str


@dataclass(frozen=True)
class Cluster:
    """One name and port's cluster: the group's instances at that port, round robin."""

    name: str  # out.<.boshy name>|<port name>
    service: str
    port: int
    endpoints: tuple[tuple[str, int], ...]  # (instance ip, port), in instance order


@dataclass(frozen=True)
class PilotView:
    """What Pilot and the VIP agent give every VM: names, VIPs, listeners, clusters, and the
    VM's egress rule."""

    services: tuple[ExposedService, ...]
    vips: dict[str, str]  # .boshy name -> VIP
    listeners: tuple[Listener, ...]
    clusters: tuple[Cluster, ...]
    redirect_rule: str  # iptables-restore text of the VM's egress rule

    def cluster(self, name: str) -> Cluster:
        """The cluster called ``name``."""
        return next(c for c in self.clusters if c.name == name)


def instance_addresses(m: Manifest, network: str = INSTANCE_NETWORK) -> dict[InstanceKey, str]:
    """One address per instance ``(group, index)``: ``network``'s addresses in manifest order,
    as the director hands out IPs from a manual network's subnet."""
    try:
        net = ipaddress.ip_network(network)
    except ValueError as e:
        raise SimnetError(Problem("<bosh>", None, "network", f"{network!r}: {e}")) from None
    wanted = [(g.name, i) for g in m.instance_groups for i in range(g.instances)]
    hosts = net.hosts()
    addresses = dict(zip(wanted, hosts))
    if len(addresses) < len(wanted):
        raise SimnetError(Problem("<bosh>", None, "network", (
            f"{len(wanted)} instances but {network} has only {len(addresses)} addresses")))
    return {k: str(ip) for k, ip in addresses.items()}


def cluster_name(s: ExposedService) -> str:
    """Istio v1's outbound cluster name: ``out.`` + the service key ``<host>|<port name>``."""
    return f"{OUTBOUND_CLUSTER_PREFIX}{s.name}|{s.port_name}"


def listener_name(vip: str, port: int) -> str:
    """Istio v1's TCP listener name for a service address and port."""
    return f"tcp_{vip}_{port}"


def pilot_view(m: Manifest, addresses: Mapping[InstanceKey, str] | None = None, *,
               network: str = INSTANCE_NETWORK, proxy_port: int = BOSH_PROXY_PORT,
               vip_cidr: str = BOSH_VIP_CIDR) -> PilotView:
    """The names, VIPs, listeners, clusters and egress rule for a manifest; instance
    addresses from ``addresses`` or, by default, ``instance_addresses(m, network)``."""
    addresses = addresses if addresses is not None else instance_addresses(m, network)
    services = tuple(exposed_services(m))
    vips = boshy_vips([s.name for s in services], vip_cidr=vip_cidr)
    return PilotView(
        services=services,
        vips=vips,
        listeners=tuple(Listener(listener_name(vips[s.name], s.port), vips[s.name], s.port,
                                 cluster_name(s)) for s in services),
        clusters=tuple(Cluster(cluster_name(s), s.name, s.port, tuple(
            (addresses[s.group, i], s.port) for i in range(s.instances))) for s in services),
        redirect_rule=bosh_vip_rules(proxy_port, vip_cidr=vip_cidr),
    )


def round_robin_counts(endpoints: tuple[tuple[str, int], ...], connections: int,
                       start: int = 0) -> dict[tuple[str, int], int]:
    """How many of ``connections`` each endpoint gets from Envoy's round robin (one worker,
    equal weights) when the rotation begins at ``start``: ``connections // n`` each, and one
    more for the ``connections % n`` endpoints from ``start`` on."""
    n = len(endpoints)
    return {ep: connections // n + ((i - start) % n < connections % n)
            for i, ep in enumerate(endpoints)}


def vm_bootstrap(view: PilotView, *, admin_port: int = BOSH_ADMIN[1],
                 proxy_port: int = BOSH_PROXY_PORT) -> dict:
    """One VM's Envoy (v3): the ``virtual`` listener on 0.0.0.0:``proxy_port`` that the egress
    rule redirects into, reading each connection's original destination (``original_dst``) and
    choosing the filter chain of that VIP:port, which TCP-proxies to the name's STATIC
    round-robin cluster. A connection to a VIP:port nobody exposed matches no chain and is
    closed. Admin on 0.0.0.0:``admin_port`` as the add-on has it (BOSH_ADMIN; 0: any free
    port)."""
    chains = [{
        "name": lst.name,
        "filter_chain_match": {"prefix_ranges": [{"address_prefix": lst.vip, "prefix_len": 32}],
                               "destination_port": lst.port},
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TCP_PROXY_TYPE, "stat_prefix": lst.name, "cluster": lst.cluster}}],
    } for lst in view.listeners]
    return {
        "node": {"id": "sidecar~0.0.0.0~bosh-vm~boshy", "cluster": "boshy"},
        "admin": {"address": {"socket_address": {"address": BOSH_ADMIN[0],
                                                 "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": VIRTUAL_LISTENER,
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": proxy_port}},
                "listener_filters": [{"name": "envoy.filters.listener.original_dst",
                                      "typed_config": {"@type": ORIGINAL_DST_TYPE}}],
                "filter_chains": chains,
            }],
            "clusters": [{
                "name": c.name, "type": "STATIC", "lb_policy": "ROUND_ROBIN",
                "connect_timeout": CONNECT_TIMEOUT,
                "load_assignment": {"cluster_name": c.name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": p}}}}
                    for ip, p in c.endpoints]}]},
            } for c in view.clusters],
        },
    }

