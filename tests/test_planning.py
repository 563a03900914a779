"""Capacity planning: the seed's rule against the calibrated model, a foundation's cost, and
what the simulator does with a too-small allocation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet import planning
from simnet.model.memory import (
    Calibration,
    Footprint,
    KindCalibration,
    instances_that_fit,
    packaged_calibration,
    recommended_allocation_mb,
    seed_rule_mb,
)
from simnet.scenario.load import load_text


def calibration(**kinds: tuple[float, float, list[tuple[int, float]]]) -> Calibration:
    return Calibration("0.0.0", "2000-01-01", {}, {
        name: KindCalibration(base, per, 1.0, tuple(points)) for name, (base, per, points)
        in kinds.items()})


def rule(n: int) -> float:
    """Seed 002's rule before rounding."""
    return 10 + 0.03 * n


# --- the seed's rule -------------------------------------------------------------------------


def test_compare_rules_uses_the_calibration_for_each_kind():
    cal = calibration(tls=(14.0, 23.0, []), mtls=(14.0, 39.0, []))
    tls, mtls = planning.compare_rules(2000, ["tls", "mtls"], cal)
    assert (tls.kind, mtls.kind) == ("tls", "mtls")
    assert tls.predicted_mb == pytest.approx(Footprint(14.0, 23.0).memory_mb(2000))
    assert mtls.recommended_mb == recommended_allocation_mb(Footprint(14.0, 39.0), 2000)
    assert tls.seed_rule_mb == mtls.seed_rule_mb == seed_rule_mb(2000)
    assert not tls.seed_too_small and tls.seed_short_mb < 0
    assert mtls.seed_too_small and mtls.seed_short_mb == pytest.approx(
        mtls.predicted_mb - seed_rule_mb(2000))


def test_packaged_mtls_outgrows_the_seeds_rule():
    """The issue's example: mTLS at 2,000 connections needs more than the seed's 70 MB."""
    [mtls] = planning.compare_rules(2000, ["mtls"])
    fp = packaged_calibration().footprint("mtls")
    assert mtls.seed_rule_mb == 70 and mtls.predicted_mb == pytest.approx(fp.memory_mb(2000))
    assert mtls.seed_too_small and mtls.recommended_mb > mtls.predicted_mb > 70


def test_compare_rules_refuses_a_negative_count():
    with pytest.raises(ValueError, match="peak connections"):
        planning.compare_rules(-1)


@given(base=st.floats(0, 60), per_kb=st.floats(0, 60))
def test_seed_rule_suffices_from_the_first_count_that_holds(base, per_kb):
    fp = Footprint(base, per_kb)
    n = planning.seed_rule_suffices_from(fp)
    if n is None:  # only an Envoy that grows faster than the rule, or as fast from higher up
        per_mb = per_kb / 1000
        assert per_mb > 0.03 or (per_mb == 0.03 and base > 10)
        return
    assert rule(n) >= fp.memory_mb(n)
    assert n == 0 or rule(n - 1) < fp.memory_mb(n - 1)
    for m in (n + 1, n + 1000, n + 10**6):
        assert rule(m) >= fp.memory_mb(m) - 1e-9


def test_seed_rule_covers_the_seeds_own_envoy_but_not_todays_at_low_counts():
    assert planning.seed_rule_suffices_from(Footprint(7.5, 30.0)) == 0
    assert planning.seed_rule_suffices_from(Footprint(10.5, 30.0)) is None
    tls = packaged_calibration().footprint("tls")
    n = planning.seed_rule_suffices_from(tls)
    assert n is not None and n > 0 and rule(0) < tls.memory_mb(0)
    assert planning.seed_rule_suffices_from(packaged_calibration().footprint("mtls")) is None


# --- the calibration against its readings ----------------------------------------------------


def test_fit_errors_are_relative_to_the_measured_reading():
    cal = calibration(tcp=(10.0, 20.0, [(0, 10.0), (1000, 33.0)]))
    on_line, off_line = planning.fit_errors(cal)
    assert (on_line.kind, on_line.connections, on_line.relative_error) == ("tcp", 0, 0.0)
    assert off_line.predicted_mb == pytest.approx(30.0)
    assert off_line.relative_error == pytest.approx((30.0 - 33.0) / 33.0)


def test_packaged_calibration_fits_its_readings_within_the_target():
    errors = planning.fit_errors()
    assert {e.kind for e in errors} == set(packaged_calibration().kinds)
    assert len(errors) == sum(len(k.points) for k in packaged_calibration().kinds.values())
    assert max(abs(e.relative_error) for e in errors) < 0.10


# --- a foundation ----------------------------------------------------------------------------


def test_foundation_cost_reserves_the_allocation_for_every_instance():
    cost = planning.foundation_cost(10, 4096, 150, 256, 16)
    assert cost.extra_gb == pytest.approx(16 * 150 / 1024)
    assert cost.fit_without == instances_that_fit(10, 4096, 256, 0)
    assert cost.fit_with == instances_that_fit(10, 4096, 256, 16) < cost.fit_without
    assert cost.fits
    assert not planning.foundation_cost(10, 4096, cost.fit_with + 1, 256, 16).fits


@given(cells=st.integers(1, 50), cell_mb=st.integers(256, 65536),
       instances=st.integers(0, 5000), quota=st.integers(1, 4096), extra=st.integers(0, 512))
def test_cells_needed_hold_every_instance_and_no_fewer_do(cells, cell_mb, instances, quota,
                                                          extra):
    cost = planning.foundation_cost(cells, cell_mb, instances, quota, extra)
    need = cost.cells_needed()
    if need is None:
        assert quota + extra > cell_mb and instances > 0
        return
    assert instances_that_fit(need, cell_mb, quota, extra) >= instances
    assert need == 0 or instances_that_fit(need - 1, cell_mb, quota, extra) < instances
    assert cost.cells_needed(0) <= need


def test_foundation_cost_refuses_negative_input():
    with pytest.raises(ValueError, match="additional_mb"):
        planning.foundation_cost(1, 4096, 1, 256, -1)


# --- what a too-small allocation does --------------------------------------------------------

FULL_QUOTA = """
name: full
seed: 3
duration_s: 6
cells: {count: 2, memory_mb: 4096}
apps:
  - {name: web, instances: 2, memory_mb: 256, memory_used_mb: 256,
     service_time: {dist: constant, value_ms: 1000}}
routes: [{host: web.example.com, app: web}]
clients: [{host: web.example.com, rate_per_s: 400}]
"""


def test_with_allocation_changes_only_the_allocation():
    scenario, _ = load_text(FULL_QUOTA)
    changed = planning.with_allocation(scenario, 42)
    assert changed.proxy.additional_memory_allocation_mb == 42
    assert changed.model_copy(update={"proxy": scenario.proxy}) == scenario
    with pytest.raises(ValueError):
        planning.with_allocation(scenario, -1)


def test_a_sidecar_that_outgrows_its_allocation_is_oom_killed():
    """The app uses its whole quota, so Envoy has only the additional allocation: below the
    memory its peak needs the simulator kills it; from there up nothing is killed."""
    scenario, _ = load_text(FULL_QUOTA)
    [roomy] = planning.allocation_sweep(scenario, [1000])
    assert roomy.oom_kills == 0 and roomy.errors == 0 and roomy.peak_connections > 100
    needed = roomy.peak_envoy_mb
    small, enough = planning.allocation_sweep(scenario, [int(needed) - 2, int(needed) + 1])
    assert small.oom_kills > 0 and small.error_rate > 0
    # killed by the connection that took Envoy past the limit: its peak is just over it
    assert small.additional_mb < small.peak_envoy_mb < needed
    assert (enough.oom_kills, enough.errors) == (0, 0)
    assert enough.peak_connections == roomy.peak_connections  # the same traffic
    assert planning.allocation_sweep(scenario, [small.additional_mb]) == [small]
