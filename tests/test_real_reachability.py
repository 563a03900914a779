"""The reachability model against the real thing: a Diego cell in network namespaces.

A router namespace, a cell namespace holding Garden's NetIn DNAT rules for one derived instance
(``diego_netin_rules``, loaded with iptables-restore) and a container namespace running the real
Envoy with the derived sidecar bootstrap in front of an echo app and a sidecar process. From the
router and from inside the container, every address the model names (and the ones it says lead
nowhere) is dialled with every kind of client: plain, TLS without a certificate, the router's
certificate, a certificate with another SAN, one from an untrusted CA. Whether each round trip
succeeds must be exactly what the model's ``Access.admits`` answers.

Needs root: without it these tests FAIL, they do not skip. Only veths between the test's own
namespaces are used; every namespace and process is gone when a test ends, even a failing one.
"""

from __future__ import annotations

import os
import ssl
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from simnet.model import pki
from simnet.model.deployment import derive
from simnet.model.reachability import Client, PortReach, Target, reachability
from simnet.real.netns import CellTopology, list_namespaces
from simnet.real.realize import Realization, realize
from simnet.real.reach import EchoServer, RoundTrip, round_trip
from simnet.scenario.schema import Scenario
from simnet.real.tls import write_credential

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.usefixtures("kernel_netns")]

ROUTER_CA = "router-backends"
ROUTER_SAN = "gorouter.service.cf.internal"
STRANGER_CA = "somebody-else"
CLIENTS = {  # what a client brings, in the model's terms; real certificates are made to match
    "plain": Client(),
    "tls-no-cert": Client(tls=True),
    "router-cert": Client(tls=True, cert_ca=ROUTER_CA, cert_san=ROUTER_SAN),
    "router-ca-other-san": Client(tls=True, cert_ca=ROUTER_CA, cert_san="other.internal"),
    "untrusted-ca": Client(tls=True, cert_ca=STRANGER_CA, cert_san=ROUTER_SAN),
}
CASES = {
    "mtls-no-unproxied": {"require_and_verify_client_certificates": True,
                          "enable_unproxied_port_mappings": False},
    "mtls-san-no-unproxied": {"require_and_verify_client_certificates": True,
                              "enable_unproxied_port_mappings": False,
                              "verify_subject_alt_name": [ROUTER_SAN]},
    "tls-unproxied": {"require_and_verify_client_certificates": False,
                      "enable_unproxied_port_mappings": True},
}


def scenario(proxy: dict) -> Scenario:
    return Scenario.model_validate({
        "name": "real-reach", "cells": {"count": 1, "memory_mb": 1024},
        "proxy": {"trusted_ca_certificates": [ROUTER_CA], **proxy},
        "apps": [{"name": "web", "ports": [8080],
                  "sidecars": [{"name": "helper", "ports": [8082]}]}],
        "routes": [{"host": "web.example.com", "app": "web", "port": 8080}],
        "routers": {"backends": {"client_cert": {"ca": ROUTER_CA, "san": ROUTER_SAN}}},
    })


@dataclass(frozen=True)
class Credentials:
    identity_ca: str  # PEM file the router trusts for backends
    clients: dict[str, tuple[str, str] | None]  # CLIENTS key -> (chain file, key file)


def credentials(directory: Path, real: Realization) -> Credentials:
    """One client certificate per CLIENTS entry, from the CAs the realization made as the
    scenario names them (a stranger's CA made here), and the identity CA gorouter trusts."""
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    cas = {**real.authorities, STRANGER_CA: pki.make_ca(STRANGER_CA, now=now)}
    clients = {}
    for name, c in CLIENTS.items():
        clients[name] = None if c.cert_ca is None else write_credential(
            directory, name, pki.client_certificate(cas[c.cert_ca], name, c.cert_san, now=now))
    return Credentials(real.ca_file(real.deployment.scenario.cells.instance_identity_ca), clients)


def context(creds: Credentials, name: str) -> ssl.SSLContext | None:
    """The client side: gorouter's trust (the identity CA, SAN = instance guid) and, if the
    client has one, its certificate."""
    if not CLIENTS[name].tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(creds.identity_ca)
    if creds.clients[name]:
        ctx.load_cert_chain(*creds.clients[name])
    return ctx


def expectations(pr: PortReach, openers: set[str], candidates: list[tuple[str, int]]
                 ) -> dict[tuple[tuple[str, int], str], bool]:
    """The model's answer for every (address, client): some access whose connection these
    openers make, at that address, admits the client. ``candidates`` are addresses the target
    would have if it were published (the port on the cell, the container address): the model
    says whether they lead there too."""
    access = [a for a in pr.access if a.opened_by in openers and not a.needs.grants]
    addresses = list(dict.fromkeys([a.address for a in access] + candidates))
    return {(addr, name): any(a.admits(c) for a in access if a.address == addr)
            for addr in addresses for name, c in CLIENTS.items()}


def process_name(kind: str, port: int) -> str:
    """The name the echo process on an app or sidecar port answers with."""
    return f"{'app' if kind == 'app-port' else 'sidecar'}-{port}"


def reached(t: Target, trip: RoundTrip) -> bool:
    """Whether a round trip reached ``t``: its own process answered; for an Envoy listener, the
    app behind it answered over TLS that verified the instance identity (only Envoy has it);
    for the admin API, an HTTP server answered."""
    if t.kind == "envoy-admin":
        return trip.answered_by == "http"
    if t.kind == "listener":
        return trip.tls and trip.answered_by == process_name("app-port", t.app_port)
    return trip.answered_by == process_name(t.kind, t.port)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("case", CASES)
def test_real_cell_answers_as_the_model_does(case, tmp_path):
    s = scenario(CASES[case])
    d = derive(s)
    inst = d.instance(d.running[0])
    answer = reachability(d, guids=[inst.guid])
    processes = [p.target for p in answer.ports if p.target.kind in ("app-port", "sidecar-port")]
    with realize(d, tmp_path, guids=[inst.guid]) as real, ExitStack() as stack:
        creds = credentials(tmp_path, real)
        sc = real.start(inst.guid)  # the cell's NetIn rules, the real Envoy in the container
        topo, envoy = sc.cell, sc.envoy
        names = {ns.name for ns in topo.namespaces}
        for t in processes:  # the app and its sidecar, listening on every interface
            stack.enter_context(EchoServer(topo.container, t.port, process_name(t.kind, t.port)))
        pid = envoy.pid  # Envoy runs in the container's network namespace
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(topo.container.path).st_ino
        expected, real_trips = {}, {}
        for pr in answer.ports:
            t = pr.target
            for who, ns, openers, candidates in (
                    ("router", topo.router, {"router"},
                     [(inst.cell_ip, t.port), (inst.container_ip, t.port)]),
                    ("container", topo.container, {"local"}, [])):
                for (addr, client), ok in expectations(pr, openers, candidates).items():
                    key = (t.label, who, f"{addr[0]}:{addr[1]}", client)
                    expected[key] = ok
                    trip = round_trip(ns, addr, context(creds, client),
                                      server_hostname=inst.guid)
                    real_trips[key] = reached(t, trip)
        assert real_trips == expected, "\n".join(
            f"{k}: model {expected[k]}, real {real_trips[k]}" for k in expected
            if real_trips[k] != expected[k])
        # the properties seed 002 promises, seen for real
        app = next(pr for pr in answer.ports if pr.target.kind == "app-port")
        from_router = {k: v for k, v in real_trips.items() if k[0] == app.target.label
                       and k[1] == "router" and v}
        clients = {k[3] for k in from_router}
        if s.proxy.require_and_verify_client_certificates:
            assert clients == {"router-cert"} | (
                set() if s.proxy.verify_subject_alt_name else {"router-ca-other-san"})
        if not s.proxy.enable_unproxied_port_mappings:
            assert "plain" not in clients
            assert inst.host_ports.get(8080) is None
        else:
            assert "plain" in clients
        for pr in answer.ports:
            if pr.target.kind in ("sidecar-port", "envoy-admin"):
                sources = {k[1] for k, v in real_trips.items() if k[0] == pr.target.label and v}
                assert sources == {"container"}, pr.target
    assert envoy.pid is None and not _alive(pid), "Envoy outlived its context"
    assert not names & set(list_namespaces())


def test_envoy_in_a_namespace_is_stopped_even_when_the_body_raises(tmp_path):
    s = scenario(CASES["mtls-no-unproxied"])
    d = derive(s)
    inst = d.instance(d.running[0])
    with pytest.raises(RuntimeError, match="boom"):
        with realize(d, tmp_path, guids=[inst.guid]) as real:
            sc = real.start(inst.guid)
            envoy, names, pid = sc.envoy, {ns.name for ns in sc.cell.namespaces}, sc.envoy.pid
            assert envoy.admin_get("/ready").strip() == "LIVE"
            raise RuntimeError("boom")
    assert not _alive(pid) and envoy.pid is None
    assert not names & set(list_namespaces())


def test_cell_topology_refuses_addresses_outside_the_benchmark_range():
    with pytest.raises(ValueError, match="198.18.0.0/15"):
        CellTopology("10.0.0.1", "198.18.0.1")
