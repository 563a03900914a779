"""Assertions for a platform's own CI tests, on top of ``simnet.questions``: each raises
AssertionError with a message that says what failed, where and what would fix it.

    from simnet.asserts import assert_no_bypass, assert_memory_fits

    def test_platform():
        assert_no_bypass("deploy/scenario.yaml")
        assert_memory_fits("deploy/scenario.yaml", peak_connections=500)
"""

from __future__ import annotations

from pathlib import Path

from simnet import questions
from simnet.model.netfilter import Ruleset
from simnet.questions import ScenarioLike


def _fail(headline: str, lines: list[str]) -> None:
    raise AssertionError(headline + "".join(f"\n  - {line}" for line in lines))


def assert_no_bypass(scenario: ScenarioLike) -> None:
    """No path from outside an instance reaches an app or sidecar port around its Envoy."""
    found = [r for r in questions.bypasses(scenario) if r.reachable]
    if found:
        _fail(f"{len(found)} path(s) reach app or sidecar ports without going through Envoy "
              "(set proxy.enable_unproxied_port_mappings: false once routes use TLS):",
              [f"{r.source} -> {r.path} reaches {r.target} with {r.needs}" for r in found])


def assert_all_rules_reachable(rules: ScenarioLike | Ruleset) -> None:
    """Every rule of a ruleset (or of every ruleset a scenario's platform installs) can match
    some packet: none is shadowed by an earlier rule or sits in a chain nothing jumps to."""
    found = questions.unreachable_rules(rules)
    if found:
        _fail(f"{len(found)} rule(s) can never match:",
              [f"{u.ruleset}: {u.explanation}" for u in found])


def assert_memory_fits(scenario: ScenarioLike, peak_connections: int | None = None) -> None:
    """Each app's sidecar at ``peak_connections`` (default: the scenario's expected peak) fits
    in the additional memory allocation."""
    short = [h for h in questions.memory_headroom(scenario, peak_connections) if not h.fits]
    if short:
        _fail("the additional memory allocation does not hold Envoy at the peak:",
              [f"app {h.app}: Envoy needs {h.envoy_mb:g} MB at {h.peak_connections} connections, "
               f"the allocation is {h.additional_mb} MB (OOM at {h.oom_at_connections} "
               f"connections); set proxy.additional_memory_allocation_mb to at least "
               f"{h.recommended_mb}" for h in short])


def assert_no_findings(scenario: str | Path, threshold: str = "error") -> None:
    """``simnet analyze`` finds nothing at or above ``threshold`` (info, warning, error)."""
    from simnet.analysis import analyze

    found = analyze(scenario).at_or_above(threshold)
    if found:
        _fail(f"simnet analyze: {len(found)} finding(s) at or above {threshold}:",
              [str(f) for f in found])
