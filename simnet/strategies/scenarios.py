"""Hypothesis strategies for small, valid scenarios (composable values, as Hypothesis's are)."""

from hypothesis import strategies as st

from simnet.scenario.schema import Scenario

latency = st.one_of(
    st.builds(lambda v: {"dist": "constant", "value_ms": v}, st.floats(0, 5)),
    st.builds(lambda m: {"dist": "exponential", "mean_ms": m}, st.floats(0.05, 5)),
    st.builds(lambda m, s: {"dist": "lognormal", "median_ms": m, "sigma": s},
              st.floats(0.05, 5), st.floats(0, 1.5)),
)


@st.composite
def scenarios(draw, max_apps=3, backend_tls: bool | None = None):
    """Small Diego scenarios with open and closed clients and every fault kind: instance kills
    (with and without restart), graceful stops and evacuations, moves that give another app
    the victim's place (and with ``reuse_address`` its address), certificate
    expiry (with and without rotation), router restarts, latency spikes on a hop, and Envoy
    OOM kills (a per-connection memory cost that outgrows the quota). ``backend_tls`` fixes
    router-to-sidecar TLS on or off."""
    n_apps = draw(st.integers(1, max_apps))
    apps = []
    for a in range(n_apps):
        ports = draw(st.lists(st.sampled_from([8080, 9999, 2222, 3000]), min_size=1,
                              max_size=3, unique=True))
        apps.append({"name": f"app{a}", "instances": draw(st.integers(1, 3)), "ports": ports,
                     "memory_mb": draw(st.sampled_from([64, 128, 256])),
                     "service_time": draw(latency)})
    routes = [{"host": f"app{a}.example.com", "app": f"app{a}", "port": apps[a]["ports"][0]}
              for a in range(n_apps)]
    duration = draw(st.floats(0.5, 3))
    clients = []
    for a in range(draw(st.integers(1, n_apps))):
        if draw(st.booleans()):
            c = {"model": "open", "rate_per_s": draw(st.floats(1, 400))}
        else:
            c = {"model": "closed", "users": draw(st.integers(1, 8)), "think_time": draw(latency)}
        c.update(host=f"app{a}.example.com", keep_alive=draw(st.booleans()))
        clients.append(c)
    faults = []
    touched, stopped = set(), set()  # (app, instance) a fault names, and those it stops
    n_routers = draw(st.integers(1, 3))
    for _ in range(draw(st.integers(0, 2))):
        link = draw(st.sampled_from([None, None, None, "restart_router", "latency_spike"]))
        if link == "restart_router":
            faults.append({"kind": link, "at_s": draw(st.floats(0, duration)),
                           "router": draw(st.integers(0, n_routers - 1)),
                           "down_s": draw(st.floats(0.01, 2))})
            continue
        if link == "latency_spike":
            faults.append({"kind": link, "at_s": draw(st.floats(0, duration)),
                           "duration_s": draw(st.floats(0.01, 2)),
                           "hop": draw(st.sampled_from(["client_to_ingress", "router_to_sidecar",
                                                        "sidecar_to_app"])),
                           "extra_ms": draw(st.floats(1, 500))})
            continue
        a = draw(st.integers(0, n_apps - 1))
        f = {"at_s": draw(st.floats(0, duration)), "app": f"app{a}",
             "instance": draw(st.integers(0, apps[a]["instances"] - 1))}
        kind = draw(st.sampled_from(["kill", "expire_certificate", "stop"]
                                    + (["move"] if n_apps > 1 else [])))
        which = (a, f["instance"])
        if which in stopped or (kind == "stop" and which in touched):
            continue  # a stopped instance is gone: no fault may name it after, or before it
        touched.add(which)
        if kind == "stop":
            stopped.add(which)
            f.update(kind="stop", evacuate=draw(st.booleans()))
        elif kind == "move":
            f.update(kind="move", reused_by=f"app{(a + 1) % n_apps}", reuse_address=draw(st.booleans()))
        elif kind == "kill":
            f.update(kind="kill", restart_after_s=draw(st.one_of(st.none(), st.floats(0, 2))))
        else:
            f.update(kind=kind, rotated_after_s=draw(st.one_of(st.none(), st.floats(0, 2))))
        faults.append(f)
    per_connection_kb = draw(st.sampled_from([30.0, 3000.0, 12000.0]))
    # "auto" sizes the allocation for 100 connections: at 12 MB each, instances would not fit
    extra_mb = draw(st.sampled_from([0, 16] if per_connection_kb > 3000 else [0, 16, "auto"]))
    doc = {
        "name": "generated", "seed": draw(st.integers(0, 2**32)), "duration_s": duration,
        "time_bin_s": 0.25,
        "cells": {"count": 4, "memory_mb": 4096},
        "proxy": {"enabled": True,
                  "additional_memory_allocation_mb": extra_mb,
                  # 12 MB a connection: a couple of connections outgrow a small quota (OOM kill)
                  "memory": {"base_mb": 7.5, "per_connection_kb": per_connection_kb}},
        "apps": apps, "routes": routes, "clients": clients, "faults": faults,
        "routers": {"count": n_routers, "max_attempts": draw(st.integers(1, 3)),
                    "backends": {"enabled": draw(st.booleans()) if backend_tls is None
                                 else backend_tls},
                    "keep_alive_to_backends": draw(st.booleans()),
                    "max_idle_conns_per_backend": draw(st.integers(0, 4)),
                    "balancing": draw(st.sampled_from(["round-robin", "least-connection"])),
                    "route_propagation_delay_s": draw(st.floats(0, 1))},
        "latency": {"router_to_sidecar": draw(latency), "tls_handshake": draw(latency)},
    }
    return Scenario.model_validate(doc, strict=True)
