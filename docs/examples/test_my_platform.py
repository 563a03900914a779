"""A platform team's own conformance tests, written with simnet's pytest plugin and strategies.

Run with ``pytest docs/examples/test_my_platform.py`` after ``pip install 'simnet[conform]'``
(as root for the netns test; ``--simnet-envoy /path/to/envoy`` to check your own Envoy build).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import given

from simnet import strategies as sst
from simnet.model.bosh import pilot_view, vm_bootstrap
from simnet.model.capture import IstioConfig, istio_capture
from simnet.model.routecontroller import translate
from simnet.scenario.bosh_manifest import load_manifest, sample_manifest_path


@pytest.mark.envoy
@pytest.mark.netns
def test_our_envoy_serves_the_derived_bosh_config(simnet_envoy, simnet_netns):
    """Our Envoy binary accepts the config simnet derives from our manifest and serves it (in
    a namespace of its own: its listener binds 0.0.0.0:15001)."""
    view = pilot_view(load_manifest(sample_manifest_path()))
    envoy = simnet_envoy(vm_bootstrap(view), namespace=simnet_netns(role="vm"))
    listeners = json.loads(envoy.admin_get("/listeners?format=json"))["listener_statuses"]
    assert {item["name"] for item in listeners} == {"virtual"}
    clusters = envoy.admin_get("/clusters")
    assert all(f"{c.name}::" in clusters for c in view.clusters)


@pytest.mark.netns
def test_our_kernel_loads_the_istio_capture_rules(simnet_netns):
    """Our kernel's netfilter takes the rules istio-iptables would write for our settings."""
    ns = simnet_netns(istio_capture(IstioConfig()).v4)
    saved = subprocess.run(["ip", "netns", "exec", ns.name, "iptables-save", "-t", "nat"],
                           capture_output=True, text=True, check=True).stdout
    assert "-A ISTIO_OUTPUT" in saved and "--to-ports 15001" in saved


@given(sst.route_sets())
def test_every_route_set_our_users_can_create_translates(routes):
    """Any set of Routes the API accepts gives one VirtualService per host."""
    assert len(translate(routes).virtual_services) == len({r.fqdn for r in routes})


def test_the_ca_fixture_gives_a_chain(simnet_ca):
    assert simnet_ca.intermediate.chain == (simnet_ca.root.cert,)
