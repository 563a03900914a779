"""Scenarios and the other inputs (Route resources, BOSH manifests, istio-iptables
configurations): their schemas, and loaders whose problems name the file, line and field."""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "schema": ("Scenario",),
    "load": ("load_scenario", "load_text"),
    "bundled": ("BUNDLED", "DEFAULT_SCENARIO", "bundled", "scenario_path"),
    "source": ("SourceMap",),
    "routes": ("load_routes",),
    "bosh_manifest": ("load_manifest",),
    "istio_config": ("load_istio_config",),
})
