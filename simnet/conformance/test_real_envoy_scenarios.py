"""Every bundled scenario's derived sidecar bootstraps pass the real Envoy's validation.

Derive gives each instance its ports and guid; the bootstrap built from them, with a real
identity certificate for that instance, must be accepted by `envoy --mode validate`.
"""

from datetime import datetime, timedelta, timezone

import pytest

from simnet.model import pki
from simnet.model.envoy import CertFiles, sidecar_bootstrap
from simnet.pipeline import load_and_derive
from simnet.real.envoy import validate
from simnet.scenario.load import BUNDLED, load_scenario
from simnet.real.tls import write_credential

pytestmark = pytest.mark.envoy


def _has_diego_sidecars(path) -> bool:
    scenario, _ = load_scenario(path)
    return scenario.platform == "diego" and scenario.proxy.enabled


# cf-for-k8s (Istio) and bosh-istio get their Envoy config from a control plane (a later issue).
SCENARIOS = [p for p in sorted(BUNDLED.glob("*.yaml")) if _has_diego_sidecars(p)]


def test_the_diego_scenarios_are_covered():
    assert {p.stem for p in SCENARIOS} >= {"diego-route-integrity", "sidecar-patches",
                                           "sidecar-buildpack"}


@pytest.fixture(scope="module")
def identity_ca():
    return pki.make_ca("instance-identity", now=datetime.now(timezone.utc) - timedelta(minutes=1))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_bundled_scenario_bootstraps_pass_envoy_validate(path, identity_ca, tmp_path):
    scenario, deployment = load_and_derive(path)
    (tmp_path / "ca.crt").write_bytes(pki.bundle_pem(identity_ca))
    seen = set()
    for inst in deployment.instances:
        if inst.proxy.app_ports in seen:
            continue  # same ports, same bootstrap shape
        seen.add(inst.proxy.app_ports)
        pair = pki.instance_identity(identity_ca, inst.guid, inst.container_ip,
                                     now=datetime.now(timezone.utc) - timedelta(minutes=1))
        cert, key = write_credential(tmp_path, inst.guid, pair)
        files = CertFiles(cert, key, trusted_ca=str(tmp_path / "ca.crt"))
        bootstrap = sidecar_bootstrap(inst.proxy, guid=inst.guid, proxy=scenario.proxy,
                                      cert_files=files, app_address=inst.container_ip)
        validate(bootstrap)  # raises EnvoyError with Envoy's own complaint
    assert seen
