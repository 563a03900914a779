"""Capture rules as the real platforms write them, in ``iptables-restore --noflush`` form.

Three generators, each reproducing what a real component does:

- ``istio_capture``: Istio's sidecar capture rules, exactly as ``istio-iptables``
  (istio/istio ``tools/istio-iptables``) writes them, checked line for line against its own
  golden files (peers/istio-capture-golden/);
- ``bosh_vip_rules`` / ``boshy_vips``: the BOSH + Istio prototype's egress rule sending
  connections for ``*.boshy`` virtual IPs into the VM's local Envoy (seed 003);
- ``diego_netin_rules`` / ``diego_host_view``: the per-container DNAT rules Garden
  (cloudfoundry/guardian) installs on a Diego cell for the ports the executor asks it to
  publish, and which container ports that makes reachable from outside the container.

Pure: text in, text out; nothing here runs iptables.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from simnet.errors import Problem, SimnetError
from simnet.model.istio_config import IstioConfig, checked, parse_istio_config
from simnet.model.istio_rules import BUILT_IN, istio_rules, restore_text
from simnet.model.ports import C2C_APP_PORT, C2C_TLS_PORT, ProxyPorts

__all__ = [
    "BOSH_VIP_CIDR", "BUILT_IN", "IstioCapture", "IstioConfig", "HostPortView", "bosh_vip_rules",
    "boshy_vips", "diego_host_view", "diego_netin_rules", "garden_instance_id",
    "istio_capture", "parse_istio_config",
]

# --- Istio: tools/istio-iptables ------------------------------------------------------------

@dataclass(frozen=True)
class IstioCapture:
    """What istio-iptables applies: one iptables-restore input per family."""

    v4: str
    v6: str | None  # None when IPv6 is not enabled

    def golden(self) -> str:
        """The dry-run transcript, as in Istio's golden files: the ``iptables-save`` /
        ``ip6tables-save`` state probes of ``VerifyIptablesState``, the restore input for
        IPv4 then IPv6 (``executeCommands``), and the final state dumps ``Run`` defers
        (``ip6tables-save`` only when IPv6 is enabled). Istio's dry-run stub always finds
        both binaries and an empty state, so the rules are always applied."""
        lines = ["iptables-save", "ip6tables-save", *self.v4.splitlines()]
        if self.v6 is not None:
            lines += self.v6.splitlines()
        lines.append("iptables-save")
        if self.v6 is not None:
            lines.append("ip6tables-save")
        return "\n".join(lines) + "\n"


def istio_capture(config: IstioConfig) -> IstioCapture:
    """Istio's sidecar capture rules for ``config``, as istio-iptables writes them.

    Raises SimnetError for a configuration Istio or iptables-restore would reject.
    """
    rules = istio_rules(checked(config))
    return IstioCapture(restore_text(rules.v4), restore_text(rules.v6) if config.EnableIPv6 else None)


# --- BOSH + Istio prototype (seed 003) ---------------------------------------------------------

BOSH_VIP_CIDR = "169.254.255.0/24"
BOSHY_SUFFIX = ".boshy"
_DNS_NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _bosh_problem(field: str, message: str) -> SimnetError:
    return SimnetError(Problem("<bosh>", None, field, message))


def _vip_network(vip_cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(vip_cidr)
    except ValueError as e:
        raise _bosh_problem("vip_cidr", f"{vip_cidr!r} is not a network: {e}") from None
    if net.version != 4:
        raise _bosh_problem("vip_cidr", f"{vip_cidr!r} is not an IPv4 network")
    return net


def boshy_vips(names: Iterable[str], *, vip_cidr: str = BOSH_VIP_CIDR) -> dict[str, str]:
    """Virtual IPs for ``*.boshy`` names, as the prototype's VIP/DNS agent hands them out.

    Names get the ``.boshy`` suffix if they lack it, are de-duplicated and sorted, and take
    the usable addresses of ``vip_cidr`` in order (169.254.255.1 upward), so every VM
    computes the same table. More names than addresses is an error.
    """
    wanted = sorted({n if n.endswith(BOSHY_SUFFIX) else n + BOSHY_SUFFIX for n in names})
    bad = [n for n in wanted if not _DNS_NAME.fullmatch(n)]
    if bad:
        raise SimnetError([Problem("<bosh>", None, "names", f"{n!r} is not a lowercase DNS name")
                           for n in bad])
    hosts = list(_vip_network(vip_cidr).hosts())
    if len(wanted) > len(hosts):
        raise _bosh_problem("names", (
            f"{len(wanted)} .boshy names but {vip_cidr} has only {len(hosts)} virtual IPs"))
    return {name: str(ip) for name, ip in zip(wanted, hosts)}


def bosh_vip_rules(proxy_port: int = 15001, vip_cidr: str = BOSH_VIP_CIDR) -> str:
    """The prototype's egress rule as its bosh-envoy job's pre-start installs it on every VM
    (rosenhouse/boshy-istio-release jobs/bosh-envoy/templates/pre-start.sh.erb): nat OUTPUT
    flushed (``iptables -t nat -F OUTPUT``, "TODO: make this not a total hack"), then TCP to the
    VIP range redirected into the local Envoy's outbound listener, which load-balances over the
    instances behind the name (seed 003, "DNAT rule for egress directs all VIP connections into
    local Envoy proxy"). No uid is exempt: Envoy's own upstream connections go to the instances'
    real addresses, never to a VIP. The flush wipes whatever else the VM had in nat OUTPUT
    (``simnet analyze``: SIM0017).
    """
    if not isinstance(proxy_port, int) or isinstance(proxy_port, bool) or not 1 <= proxy_port <= 65535:
        raise _bosh_problem("proxy_port", f"{proxy_port!r} is not a port number (1-65535)")
    net = _vip_network(vip_cidr)
    return "".join(f"{line}\n" for line in (
        "* nat",
        "-F OUTPUT",
        f"-A OUTPUT -d {net} -p tcp -j REDIRECT --to-ports {proxy_port}",
        "COMMIT",
    ))


# --- Diego: Garden NetIn ---------------------------------------------------------------------

GARDEN_CHAIN_PREFIX = "w--"  # guardiancmd: "w-" + server tag (empty by default) + "-"
_GARDEN_ID_DIGITS = "0123456789abcdefghijklmnopqrstuv"


def garden_instance_id(sequence: int) -> str:
    """Garden's per-container network id (kawasaki ``idgen.Generate``): the low 55 bits of a
    sequence number as 11 base-32 digits. It names the container's iptables chains."""
    return "".join(_GARDEN_ID_DIGITS[(sequence >> (50 - 5 * i)) & 31] for i in range(11))


class GardenContainer(Protocol):
    """What Garden's rules need of an app instance's container (``deployment.Instance`` is
    one); a protocol, so the rules do not depend on the deployment that derives instances."""

    @property
    def guid(self) -> str: ...
    @property
    def cell_ip(self) -> str: ...
    @property
    def container_ip(self) -> str: ...
    @property
    def host_ports(self) -> Mapping[int, int]: ...
    @property
    def proxy(self) -> ProxyPorts | None: ...


def _instance_id(instance: GardenContainer) -> str:
    """A stable garden id for an instance. Garden counts from its start time in nanoseconds;
    simnet derives the sequence from the instance guid so the chain name is reproducible."""
    return garden_instance_id(int(instance.guid.replace("-", ""), 16))


def diego_netin_rules(instance: GardenContainer, *, global_chains: bool = True,
                      chain_prefix: str = GARDEN_CHAIN_PREFIX, instance_id: str | None = None) -> str:
    """The nat rules Garden installs on the cell to publish one container's ports (IPv4).

    For every port mapping the executor requested (``Instance.host_ports``: TLS proxy ports,
    plus app ports with unproxied mappings; never 61443), guardian's ``PortForwarder.Forward``
    appends a DNAT from the cell's external IP and host port to the container IP and port to
    the container's chain ``w--instance-<id>``; ``InstanceChainCreator.Create`` jumps to that
    chain from ``w--prerouting``, which guardian's global setup (``setup_nat`` in
    kawasaki/iptables/global_chains.go) binds to PREROUTING and, for connections from the
    cell itself, to ``OUTPUT -o lo``. With ``global_chains`` those three lines are included,
    so the text loads into an empty namespace. Rules are written as ``iptables-save`` prints
    them; each carries the container handle (the instance guid) as a comment, as Garden's do.
    """
    prerouting = f"{chain_prefix}prerouting"
    chain = f"{chain_prefix}instance-{instance_id or _instance_id(instance)}"
    handle = instance.guid
    lines = ["* nat"]
    if global_chains:
        lines.append(f"-N {prerouting}")
    lines.append(f"-N {chain}")
    if global_chains:
        lines += [f"-A PREROUTING -j {prerouting}", f"-A OUTPUT -o lo -j {prerouting}"]
    lines.append(f"-A {prerouting} -m comment --comment {handle} -j {chain}")
    for container_port, host_port in instance.host_ports.items():
        lines.append(
            f"-A {chain} -d {instance.cell_ip}/32 -p tcp -m tcp --dport {host_port} "
            f"-m comment --comment {handle} -j DNAT "
            f"--to-destination {instance.container_ip}:{container_port}")
    lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class HostPortView:
    """One port in the container, as seen from outside it (the cell and beyond)."""

    container_port: int
    host_port: int | None  # None: nothing on the cell forwards to it
    kind: str  # "tls-proxy" | "c2c-tls" | "unproxied-app" | "envoy-admin" | "sidecar"
    app_port: int | None  # the app port served behind it (None for admin and sidecar ports)
    reason: str = ""  # why it is unreachable from the host side

    @property
    def reachable(self) -> bool:
        return self.host_port is not None


def diego_host_view(instance: GardenContainer, sidecar_ports: Iterable[int] = ()
                    ) -> list[HostPortView]:
    """Which of a Diego container's ports the cell publishes, and why the others are not.

    Per app port, in order: its TLS proxy port (mapped whenever Envoy runs), 61443 for app
    port 8080 (the executor never maps it: ``storenode.createGardenContainer`` skips
    ``C2CTLSPort`` when building NetIn rules; it is reached on the container IP over the
    container network), and the app port itself (mapped only with
    ``enable_unproxied_port_mappings``, or when there is no proxy). Then the Envoy admin
    port (127.0.0.1 only) and the ports of sidecar processes, which no NetIn rule names.
    The host ports are the instance's own (deployment.py); nothing is re-allocated here.
    """
    views: list[HostPortView] = []
    proxy = instance.proxy
    app_ports = proxy.app_ports if proxy else tuple(p for p in instance.host_ports)
    for app in app_ports:
        if proxy:
            tls = proxy.proxy_for(app)
            views.append(HostPortView(tls, instance.host_ports.get(tls), "tls-proxy", app))
            if app == C2C_APP_PORT:
                views.append(HostPortView(C2C_TLS_PORT, None, "c2c-tls", app, (
                    f"the executor never publishes {C2C_TLS_PORT}: container-to-container TLS "
                    f"is reached at {instance.container_ip}:{C2C_TLS_PORT} over the container network")))
        host = instance.host_ports.get(app)
        views.append(HostPortView(app, host, "unproxied-app", app, "" if host is not None else (
            "enable_unproxied_port_mappings is false: only TLS proxy ports get host ports, "
            f"so app port {app} is reached through Envoy on {proxy.proxy_for(app) if proxy else '?'}")))
    if proxy:
        views.append(HostPortView(proxy.admin, None, "envoy-admin", None, (
            "Envoy's admin API listens on 127.0.0.1 only and is never published")))
    for port in dict.fromkeys(sidecar_ports):
        views.append(HostPortView(port, None, "sidecar", None, (
            "sidecar processes share the container's network namespace; their ports get "
            "no NetIn rule and are reachable from inside the container only")))
    return views
