"""Registers simnet's strategies with ``st.from_type`` when Hypothesis starts (its
``hypothesis`` entry point). Deferred, so a project that merely has simnet installed pays for
the types' imports only, not for building strategies."""

from __future__ import annotations


def _hypothesis_setup_hook() -> None:
    from hypothesis import strategies as st

    from simnet.model.capture import IstioConfig
    from simnet.model.packet import Connection
    from simnet.scenario.route_schema import RouteResource
    from simnet.scenario.schema import Scenario

    def lazily(name: str):
        def build():
            import simnet.strategies as sst

            return getattr(sst, name)()
        return st.deferred(build)

    st.register_type_strategy(Scenario, lazily("scenarios"))
    st.register_type_strategy(Connection, lazily("connections"))
    st.register_type_strategy(IstioConfig, lazily("istio_configs"))
    st.register_type_strategy(RouteResource, lazily("route_resources"))
