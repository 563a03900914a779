"""What each emulated process is told, read off the derived deployment (pure: no I/O).

The twin's app, router and load-generator processes (``real/twin/main.go``) take JSON configs;
these functions write them from what derive produced -- addresses, host ports, routes, the
router's capacity and timeouts, the clients -- and from the scenario's latency model, so
nothing here decides a port, a route or a limit. Which process carries which hop delay:

========================  ==========================================================
hop                       carried by
========================  ==========================================================
client_to_ingress         the load generator, before sending and after the answer
ingress_to_router         the router, on arrival and before answering
router_to_sidecar         the router, before each attempt and after the answer
sidecar_to_app            the app, on arrival and before answering
tcp_connect, tls_handshake  nobody: the real handshakes take their real time
========================  ==========================================================
"""

from __future__ import annotations

import hashlib

from simnet.model.deployment import Deployment
from simnet.model.placement import Endpoint, Instance
from simnet.scenario.schema import Scenario

ROUTER_PORT = 80
LB_PORT = 80


def seed_of(scenario: Scenario, *purpose: str) -> int:
    """A 63-bit seed for one process, from the scenario's seed and what the process is."""
    digest = hashlib.sha256(":".join([str(scenario.seed), *purpose]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def app_config(d: Deployment, inst: Instance) -> dict:
    """The app process of one instance: it listens on the container IP at each app port (the
    sidecar's clusters point there), serves with the app's service time and concurrency, and
    answers with its identity."""
    s = d.scenario
    app = s.app(inst.app)
    ports = inst.proxy.app_ports if inst.proxy else tuple(inst.host_ports)
    return {"listen": [f"{inst.container_ip}:{p}" for p in ports], "app": inst.app,
            "guid": inst.guid, "concurrency": app.concurrency, "queue_limit": app.queue_limit,
            "service": app.service_time.model_dump(), "hop": s.latency.sidecar_to_app.model_dump(),
            "seed": seed_of(s, "app", inst.guid)}


def routes_table(routes) -> dict:
    """The routers' route table file: host -> endpoints (``Deployment.routes`` or a change's)."""
    table = routes.items() if isinstance(routes, dict) else routes
    return {host: [_endpoint(e) for e in endpoints] for host, endpoints in table}


def _endpoint(e: Endpoint) -> dict:
    return {"address": f"{e.address[0]}:{e.address[1]}", "guid": e.guid, "app": e.app,
            "tls": e.tls}


def router_config(d: Deployment, k: int, *, listen: str, routes_file: str, ca_file: str,
                  client_cert: tuple[str, str] | None = None) -> dict:
    """Router ``k``: gorouter's settings from the scenario, limits from ``Deployment.router``,
    and its client certificate files (``router.backends.cert_chain``), if it has one."""
    s, cap = d.scenario, d.router
    cert_file, key_file = client_cert or ("", "")
    return {"listen": f"{listen}:{ROUTER_PORT}", "routes_file": routes_file, "ca_file": ca_file,
            "cert_file": cert_file, "key_file": key_file,
            "max_attempts": s.routers.max_attempts, "keep_alive": s.routers.keep_alive_to_backends,
            "max_idle_conns_per_backend": s.routers.max_idle_conns_per_backend,
            "max_conns": cap.max_conns, "dial_timeout_ms": round(cap.dial_timeout_s * 1000),
            "tls_handshake_timeout_ms": round(cap.tls_timeout_s * 1000),
            "request_timeout_ms": round(cap.request_timeout_s * 1000),
            "balancing": s.routers.balancing,
            "ingress_to_router": s.latency.ingress_to_router.model_dump(),
            "router_to_sidecar": s.latency.router_to_sidecar.model_dump(),
            "seed": seed_of(s, "router", str(k))}


def load_config(s: Scenario, *, target: str) -> dict:
    """The load generator: every client of the scenario, against the load balancer."""
    return {"target": f"{target}:{LB_PORT}", "duration_s": s.duration_s, "bin_s": s.time_bin_s,
            "seed": seed_of(s, "load"),
            "clients": [{"name": c.name, "host": c.host, "model": c.model,
                         "rate_per_s": c.rate_per_s, "users": c.users,
                         "think_time": c.think_time.model_dump(), "keep_alive": c.keep_alive,
                         "timeout_s": c.timeout_s, "start_s": c.start_s,
                         "duration_s": c.duration_s,
                         "client_to_ingress": s.latency.client_to_ingress.model_dump()}
                        for c in s.clients]}
