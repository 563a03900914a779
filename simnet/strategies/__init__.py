"""Hypothesis strategies for sidecar-mesh inputs, for your own property-based tests.

Each is a composable value, as Hypothesis's own are::

    from hypothesis import given
    from simnet import strategies as sst

    @given(sst.rulesets(), sst.connections(), sst.certificate_defects)
    def test_my_rules(text, conn, defects): ...

``pip install 'simnet[conform]'`` brings Hypothesis. Installing simnet also registers these
for ``st.from_type`` (Hypothesis's ``hypothesis`` entry point): ``Scenario``, ``Connection``,
``IstioConfig`` and ``RouteResource``.
"""

from __future__ import annotations

from simnet.strategies.capture import istio_config_mappings, istio_configs
from simnet.strategies.netfilter import connections, rulesets
from simnet.strategies.ports import port_lists
from simnet.strategies.routes import route_resources, route_sets
from simnet.strategies.scenarios import latency as latencies
from simnet.strategies.scenarios import scenarios
from simnet.strategies.tls import cases as tls_cases
from simnet.strategies.tls import defects as certificate_defects  # sets of pki.Defect

__all__ = ["certificate_defects", "connections", "istio_config_mappings", "istio_configs",
           "latencies", "port_lists", "route_resources", "route_sets", "rulesets", "scenarios",
           "tls_cases"]
