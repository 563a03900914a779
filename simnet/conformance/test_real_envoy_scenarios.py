"""Every bundled scenario's derived sidecar bootstraps pass the real Envoy's validation.

Derive gives each instance its ports and guid; the bootstrap built from them, with a real
identity certificate for that instance, must be accepted by `envoy --mode validate`.
"""

import os

import pytest

from simnet.lenses import load, load_and_derive, realize
from simnet.model.platform import Diego, platform_of
from simnet.scenario.load import BUNDLED

pytestmark = pytest.mark.envoy


def _has_diego_sidecars(path) -> bool:
    scenario, _ = load(path)
    return isinstance(platform_of(scenario), Diego) and scenario.proxy.enabled


# cf-for-k8s (Istio) and bosh-istio get their Envoy config from a control plane (a later issue).
SCENARIOS = [p for p in sorted(BUNDLED.glob("*.yaml")) if _has_diego_sidecars(p)]


def test_the_diego_scenarios_are_covered():
    assert {p.stem for p in SCENARIOS} >= {"diego-route-integrity", "sidecar-patches",
                                           "sidecar-buildpack"}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_bundled_scenario_bootstraps_pass_envoy_validate(path):
    _, deployment = load_and_derive(path)
    with realize(deployment) as real:
        assert real.validate() >= 1  # raises EnvoyError with Envoy's own complaint
        directory = real.directory
        assert {sc.instance.guid for sc in real.sidecars.values()} == {
            i.guid for i in deployment.instances}
    assert not directory.exists()  # the credentials are gone with the realization


def test_a_broken_bootstrap_is_refused_by_envoy():
    """The negative control: the same realization with one listener on port 70,000 (Envoy's
    SocketAddress.port_value is constrained to <= 65535) must fail validation, so the check
    above can fail."""
    from simnet.real.envoy import EnvoyError

    _, deployment = load_and_derive(SCENARIOS[0])
    with realize(deployment) as real:
        sc = next(iter(real.sidecars.values()))
        listener = sc.bootstrap["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = 70_000
        with pytest.raises(EnvoyError, match="port_value"):
            real.validate()


@pytest.mark.netns
@pytest.mark.usefixtures("kernel_netns")
def test_realize_starts_an_instance_as_its_cell_would():
    """``realize(...).start(guid)``: the router reaches the instance only through the cell's
    host port (Garden's DNAT), the real Envoy in the container terminates TLS with the
    instance's identity (SAN = guid, verified against the identity CA) and proxies to the app;
    on close no Envoy and no namespace is left."""
    import ssl

    from simnet.real.netns import list_namespaces
    from simnet.real.reach import EchoServer, round_trip

    _, deployment = load_and_derive(BUNDLED / "diego-route-integrity.yaml")
    # backend TLS without router client certificates: a plain TLS client is what gorouter is
    assert deployment.platform.terminates_tls(deployment.scenario)
    assert not deployment.scenario.proxy.require_and_verify_client_certificates
    inst = deployment.instance(deployment.running[0])
    port = inst.proxy.app_ports[0]
    endpoint = deployment.platform.endpoint(deployment.scenario, inst, port)
    with realize(deployment, guids=[inst.guid]) as real:
        sc = real.start(inst.guid)
        names = {ns.name for ns in sc.cell.namespaces}
        with EchoServer(sc.cell.container, port, "app"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(real.ca_file(deployment.scenario.cells.instance_identity_ca))
            trip = round_trip(sc.cell.router, endpoint.address, ctx, server_hostname=inst.guid)
            assert (trip.answered_by, trip.tls) == ("app", True), trip.detail
            wrong = round_trip(sc.cell.router, endpoint.address, ctx, server_hostname="other-guid")
            assert wrong.answered_by is None and "CERTIFICATE_VERIFY_FAILED" in wrong.detail
        pid = sc.envoy.pid
    assert not names & set(list_namespaces())
    assert not os.path.exists(f"/proc/{pid}"), "Envoy outlived the realization"
