"""Diego's per-container proxy ports and the CF_INSTANCE_PORTS a container sees.

Reproduces cloudfoundry/executor's proxy port allocation (diego-release docs, "Envoy Proxy
Configuration"): proxy ports come from 61001 upward, clear of service ports (1-32767) and the
ephemeral range (32768-61000); one per distinct app port, in order, skipping any port the app
itself asked for and 61443, which is reserved for container-to-container TLS and always fronts
app port 8080. The Envoy admin API takes the first port from 61001 that no mapping uses, on
127.0.0.1 only: 61443 is skipped there only when the app has 8080 (cloudfoundry/executor
envoyconfig ``GetAvailablePort`` skips the allocated container and TLS proxy ports, nothing
else; ``AssignProxyPorts`` skips 61443 always).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from simnet.errors import PortRangeExhausted

PROXY_PORT_START = 61001
PROXY_PORT_END = 65534  # exclusive, as in the executor
C2C_TLS_PORT = 61443
C2C_APP_PORT = 8080


@dataclass(frozen=True)
class PortMapping:
    """One Envoy listener: TLS on ``proxy`` forwarded to the app's ``app`` port."""

    app: int
    proxy: int


@dataclass(frozen=True)
class ProxyPorts:
    """Everything the executor decides about one container's proxy ports."""

    app_ports: tuple[int, ...]
    mappings: tuple[PortMapping, ...]
    admin: int

    def proxy_for(self, app_port: int) -> int:
        """The routable TLS port for an app port (the C2C 61443 listener is not routable)."""
        return next(m.proxy for m in self.mappings if m.app == app_port and m.proxy != C2C_TLS_PORT)


def _free_ports(taken: set[int]) -> Iterable[int]:
    for port in range(PROXY_PORT_START, PROXY_PORT_END):
        if port not in taken and port != C2C_TLS_PORT:
            yield port


def proxy_ports(app_ports: Iterable[int]) -> ProxyPorts:
    """Allocate proxy listener ports and the admin port for a container's app ports."""
    ports = tuple(dict.fromkeys(app_ports))  # de-duplicate, keep order
    if C2C_TLS_PORT in ports:
        raise ValueError(f"app port {C2C_TLS_PORT} is reserved for container-to-container TLS")
    taken = set(ports)
    free = _free_ports(taken)
    mappings: list[PortMapping] = []
    try:
        for app in ports:
            mappings.append(PortMapping(app, next(free)))
            if app == C2C_APP_PORT:
                mappings.append(PortMapping(app, C2C_TLS_PORT))
        used = taken | {m.proxy for m in mappings}
        admin = next(p for p in range(PROXY_PORT_START, PROXY_PORT_END) if p not in used)
    except StopIteration:
        raise PortRangeExhausted(
            f"{len(ports)} app ports leave no free proxy port in "
            f"{PROXY_PORT_START}-{PROXY_PORT_END - 1}"
        ) from None
    return ProxyPorts(ports, tuple(mappings), admin)


def instance_ports(
    app_ports: Iterable[int],
    pp: ProxyPorts | None,
    host_ports: int | Iterable[int] = 61008,
    unproxied: bool = True,
) -> list[dict[str, int]]:
    """CF_INSTANCE_PORTS entries for a container: one per port mapping, so an app port with
    two proxy ports (8080: its routable one and the C2C 61443) has two entries, and the C2C
    one has no ``external_tls_proxy`` (Garden publishes no host port for 61443). Keys in the
    executor's order, absent ones left out (cloudfoundry/executor depot/containerstore/
    storenode.go ``portMappingFromContainerInfo``, depot/steps/run_step.go: ``omitempty``).

    With unproxied port mappings the cell maps both the app port and its TLS proxy port to
    host ports (``external``, ``external_tls_proxy``); without them only the proxy port is
    mapped and ``external`` disappears (diego-release: "Disabling Unproxied Port Mappings").
    Without a proxy (``pp`` is None) only ``internal`` and ``external`` exist. Host ports are
    handed out in the order the seed's example shows: app ports first, then proxy ports
    (``host_ports``: the ports in that order, or the first of consecutive ones).
    """
    ports = list(dict.fromkeys(app_ports))
    host = iter(range(host_ports, PROXY_PORT_END) if isinstance(host_ports, int) else host_ports)
    external = {app: next(host) for app in ports} if unproxied else {}
    external_tls = {app: next(host) for app in ports} if pp else {}
    entries = []
    for app in ports:
        proxies = [m.proxy for m in pp.mappings if m.app == app] if pp else [None]
        for proxy in proxies:
            entry = {"external": external[app]} if unproxied else {}
            entry["internal"] = app
            if proxy is not None and proxy != C2C_TLS_PORT:
                entry["external_tls_proxy"] = external_tls[app]
            if proxy is not None:
                entry["internal_tls_proxy"] = proxy
            entries.append(entry)
    return entries


def instance_env(entries: list[dict[str, int]], external_ip: str) -> dict[str, str]:
    """CF_INSTANCE_PORT, CF_INSTANCE_ADDR and CF_INSTANCE_PORTS as the executor sets them
    (depot/steps/run_step.go): the first mapping's host port, when it has one (not with
    unproxied port mappings disabled), and every mapping; all empty without mappings."""
    if not entries:
        return {"CF_INSTANCE_PORT": "", "CF_INSTANCE_ADDR": "", "CF_INSTANCE_PORTS": "[]"}
    env = {}
    if entries[0].get("external"):
        env["CF_INSTANCE_PORT"] = str(entries[0]["external"])
        env["CF_INSTANCE_ADDR"] = f"{external_ip}:{entries[0]['external']}"
    env["CF_INSTANCE_PORTS"] = cf_instance_ports_json(entries)
    return env


def cf_instance_ports_json(entries: list[dict[str, int]]) -> str:
    """The CF_INSTANCE_PORTS environment variable's value."""
    return json.dumps(entries, separators=(",", ":"))
