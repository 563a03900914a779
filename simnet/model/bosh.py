"""The BOSH + Istio prototype's control plane (seed 003): from a manifest's ``expose_ports``
to the names, virtual IPs, Envoy listeners and clusters every VM gets.

The Pilot adapter turns each exposed port of a job into a service named
``<job>.<instance group>.<deployment>.boshy``; the VIP/DNS agent resolves each name to a VIP in
169.254.255.0/24 (``capture.boshy_vips``); the VM's egress rule sends TCP for those VIPs into
its Envoy on 15001 (``capture.bosh_vip_rules``); Envoy, told by Pilot, matches the original
destination VIP:port and load-balances over the job's instances. The prototype ran Pilot's v1
API; ``vm_bootstrap`` writes the same listeners and clusters as an Envoy v3 static bootstrap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simnet.model.capture import bosh_vip_rules, boshy_vips
from simnet.model.interception import BOSH_PROXY_PORT
from simnet.scenario.bosh_manifest import Manifest

TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST_TYPE = ("type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
                     "OriginalDst")
INSTANCE_NETWORK = "198.19.0.0/16"  # simnet's stand-in for the deployment's BOSH network


@dataclass(frozen=True)
class ExposedService:
    """One exposed port of a job: its name, port, instance group and instance count."""

    name: str  # <job>.<instance group>.<deployment>.boshy
    port: int
    port_name: str
    group: str
    job: str
    instances: int


@dataclass(frozen=True)
class PilotView:
    """What Pilot gives every VM's Envoy: a listener per VIP:port, a cluster per name:port."""

    vips: dict[str, str]  # name -> VIP
    listeners: tuple[tuple[str, int, str], ...]  # (VIP, port, cluster)
    clusters: dict[str, tuple[tuple[str, int], ...]]  # cluster -> instance (ip, port)
    redirect_rule: str  # iptables-restore text of the VM's egress rule


def exposed_services(m: Manifest) -> list[ExposedService]:
    """Every exposed port of every job, in manifest order."""
    return [ExposedService(f"{job.name}.{g.name}.{m.name}.boshy", p.port, p.name, g.name,
                           job.name, g.instances)
            for g in m.instance_groups for job in g.jobs for p in job.expose_ports]


def instance_addresses(m: Manifest, network: str = INSTANCE_NETWORK) -> dict[tuple[str, int], str]:
    """A deterministic address per instance ``(group, index)``: the network's addresses in
    manifest order, as the director hands out static IPs from a subnet."""
    hosts = ipaddress.ip_network(network).hosts()
    return {(g.name, i): str(next(hosts)) for g in m.instance_groups for i in range(g.instances)}


def cluster_name(s: ExposedService) -> str:
    return f"out.{s.name}|{s.port}"


def pilot_view(m: Manifest, addresses: Mapping[tuple[str, int], str] | None = None) -> PilotView:
    """The names, VIPs, listeners, clusters and redirect rule for a manifest."""
    addresses = addresses if addresses is not None else instance_addresses(m)
    services = exposed_services(m)
    vips = boshy_vips([s.name for s in services])
    return PilotView(
        vips=vips,
        listeners=tuple((vips[s.name], s.port, cluster_name(s)) for s in services),
        clusters={cluster_name(s): tuple((addresses[s.group, i], s.port)
                                         for i in range(s.instances)) for s in services},
        redirect_rule=bosh_vip_rules(BOSH_PROXY_PORT),
    )


def vm_bootstrap(view: PilotView, *, admin_port: int = 0, proxy_port: int = BOSH_PROXY_PORT,
                 clusters: Mapping[str, Sequence[tuple[str, int]]] | None = None) -> dict:
    """One VM's Envoy: the outbound listener the egress rule redirects into, reading each
    connection's original destination and proxying it to that VIP:port's cluster (round
    robin over the instances). ``clusters`` overrides the endpoints (a test's addresses)."""
    endpoints = {**view.clusters, **(clusters or {})}
    chains = [{
        "filter_chain_match": {"prefix_ranges": [{"address_prefix": vip, "prefix_len": 32}],
                               "destination_port": port},
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": TCP_PROXY_TYPE, "stat_prefix": cluster.replace("|", "_"), "cluster": cluster}}],
    } for vip, port, cluster in view.listeners]
    return {
        "node": {"id": "sidecar~0.0.0.0~bosh-vm~boshy", "cluster": "boshy"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": f"outbound_{proxy_port}",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": proxy_port}},
                "listener_filters": [{"name": "envoy.filters.listener.original_dst",
                                      "typed_config": {"@type": ORIGINAL_DST_TYPE}}],
                "filter_chains": chains,
            }],
            "clusters": [{
                "name": name, "type": "STATIC", "lb_policy": "ROUND_ROBIN",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": p}}}}
                    for ip, p in eps]}]},
            } for name, eps in sorted(endpoints.items())],
        },
    }


def scenario_parts(m: Manifest) -> dict[str, list[dict]]:
    """The manifest as scenario ``apps`` (one per job with exposed ports, named
    ``<job>-<group>``) and ``routes`` (one per exposed port, host = its .boshy name)."""
    apps: dict[str, dict] = {}
    routes = []
    for s in exposed_services(m):
        name = f"{s.job}-{s.group}"
        app = apps.setdefault(name, {"name": name, "instances": s.instances, "ports": []})
        if s.port not in app["ports"]:
            app["ports"].append(s.port)
        routes.append({"host": s.name, "app": name, "port": s.port})
    return {"apps": list(apps.values()), "routes": routes}
