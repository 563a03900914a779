"""The Envoy memory model: fitting, the high-water rule, planning, and how derive uses it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet.model.deployment import derive
from simnet.model.placement import Instance
from simnet.model.envoy import LISTENER_KINDS
from simnet.model.memory import (
    SEED,
    Footprint,
    fit_kind,
    fit_line,
    instances_that_fit,
    listener_kind,
    packaged_calibration,
    recommended_allocation_mb,
    seed_rule_mb,
)
from simnet.scenario.load import load_scenario
from simnet.scenario.schema import EnvoyMemory, Proxy
from tests.test_cli import simnet


def test_seed_rule_is_ten_plus_three_hundredths_per_connection():
    assert [seed_rule_mb(n) for n in (0, 100, 1000, 4000)] == [10, 13, 40, 130]
    # a half goes up (the seed's 'rounded to the nearest integer'), not to even
    assert [seed_rule_mb(n) for n in (50, 150, 250)] == [12, 15, 18]


def test_fit_line_recovers_a_line():
    assert fit_line([(0.0, 14.0), (1000.0, 37.0), (2000.0, 60.0)]) == pytest.approx((14.0, 0.023))


def test_fit_kind_measures_what_is_kept_after_closing():
    points = [(0, 14.0), (1000, 37.0), (2000, 60.0)]
    assert fit_kind(points, after_close_mb=60.0).retained_fraction == 1.0
    assert fit_kind(points, after_close_mb=14.0).retained_fraction == 0.0
    half = fit_kind(points, after_close_mb=37.0)
    assert half.retained_fraction == pytest.approx(0.5) and half.per_connection_kb == pytest.approx(23.0)


@given(high=st.integers(0, 10_000), base=st.floats(0, 100), per=st.floats(0, 100))
def test_memory_grows_linearly_with_the_high_water_mark(high, base, per):
    fp = Footprint(base, per)
    assert fp.memory_mb(high) == pytest.approx(base + per * high / 1000)
    n = fp.connections_until(fp.memory_mb(high))
    assert n is None or fp.memory_mb(n) >= fp.memory_mb(high) - 1e-6


def test_recommendation_holds_the_peak_with_its_margin():
    fp = Footprint(14.0, 23.0)
    assert recommended_allocation_mb(fp, 1000, margin=0.0) == 37
    assert recommended_allocation_mb(fp, 1000, margin=0.10) == 41  # ceil(37 * 1.1)
    assert recommended_allocation_mb(SEED, 100, 0.0) == 11  # ceil(7.5 + 3.0)


def container(quota_mb: int, app_quota_mb: int, base_used_mb: float) -> Instance:
    return Instance("g", "a", 0, 0, "198.19.0.1", "198.18.0.1", None, (), {}, quota_mb=quota_mb,
                    base_used_mb=base_used_mb, app_quota_mb=app_quota_mb)


def test_reported_memory_is_rescaled_into_the_requested_quota():
    # seed 002: 256 MB asked, 16 MB added; the app sees its usage within 256 MB
    assert container(272, 256, 200).reported_mb(72) == pytest.approx(256)
    assert container(272, 256, 100).reported_mb(36) == pytest.approx(128)
    assert container(256, 256, 90).reported_mb(10) == 100
    assert container(272, 256, 200).envoy_limit_mb == 72


def test_cells_never_overcommit_for_the_additional_allocation():
    assert instances_that_fit(10, 4096, 256, 0) == 160
    assert instances_that_fit(10, 4096, 256, 16) == 150  # 4096 // 272 = 15 per cell
    assert instances_that_fit(1, 100, 256, 0) == 0


def test_packaged_calibration_covers_every_listener_kind():
    cal = packaged_calibration()
    assert set(cal.kinds) == set(LISTENER_KINDS)
    for name, kind in cal.kinds.items():
        assert kind.points and max(n for n, _ in kind.points) >= 4000, name
        assert 0 <= kind.retained_fraction <= 1 and kind.per_connection_kb > 0
        for n, measured in kind.points:  # the fitted line reproduces its own readings
            assert cal.footprint(name).memory_mb(n) == pytest.approx(measured, rel=0.10)
    assert cal.per_mapping_kb > 0 and cal.machine["cores"] >= 1


def test_listener_kind_follows_the_mtls_setting():
    assert listener_kind(Proxy()) == "tls"
    assert listener_kind(Proxy(require_and_verify_client_certificates=True,
                               trusted_ca_certificates=["r"])) == "mtls"


def _scenario(tmp_path, proxy: str):
    p = tmp_path / "s.yaml"
    p.write_text(f"""
name: mem
cells: {{count: 2, memory_mb: 4096}}
proxy: {proxy}
apps: [{{name: web, instances: 2, ports: [8080, 9090]}}]
""")
    return load_scenario(p)[0]


def test_derive_gives_each_instance_its_sidecar_footprint(tmp_path):
    cal = packaged_calibration()
    d = derive(_scenario(tmp_path, "{}"))
    inst = d.instances[0]
    assert inst.envoy == cal.footprint("tls", len(inst.proxy.mappings))  # 3 mappings with 61443
    mtls = derive(_scenario(tmp_path, "{require_and_verify_client_certificates: true, "
                                      "trusted_ca_certificates: [r]}"))
    assert mtls.instances[0].envoy.per_connection_kb == cal.kinds["mtls"].per_connection_kb
    assert derive(_scenario(tmp_path, "{memory: {model: seed}}")).instances[0].envoy == SEED
    manual = derive(_scenario(tmp_path, "{memory: {base_mb: 5, per_connection_kb: 50}}"))
    assert manual.instances[0].envoy == Footprint(5, 50)


def test_auto_allocation_follows_the_memory_model(tmp_path):
    cal = packaged_calibration()
    auto = derive(_scenario(tmp_path, "{additional_memory_allocation_mb: auto, "
                                      "expected_peak_connections: 1000}"))
    assert auto.additional_mb == recommended_allocation_mb(cal.footprint("tls", 3), 1000)
    seed = derive(_scenario(tmp_path, "{additional_memory_allocation_mb: auto, "
                                      "expected_peak_connections: 1000, memory: {model: seed}}"))
    assert seed.additional_mb == seed_rule_mb(1000) == 40


def test_memory_model_settings_are_checked():
    with pytest.raises(ValueError, match="needs both"):
        EnvoyMemory(model="manual", base_mb=5)
    with pytest.raises(ValueError, match="for model: manual, not seed"):
        EnvoyMemory(model="seed", base_mb=5)
    assert EnvoyMemory(base_mb=1, per_connection_kb=2).model == "manual"


# --- simnet memory estimate -------------------------------------------------------------------


def test_estimate_prints_prediction_recommendation_and_seed_rule():
    out = simnet("memory", "estimate", "--connections", "2000", "--listener", "mtls", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    fp = packaged_calibration().footprint("mtls")
    assert r["predicted_envoy_mb"] == pytest.approx(fp.memory_mb(2000), abs=1e-3)
    assert r["recommended_additional_memory_allocation_mb"] == recommended_allocation_mb(fp, 2000)
    assert r["seed_rule_mb"] == 70 and r["extrapolated"] is False


@pytest.mark.parametrize("args, message", [
    (["--connections", "-5"], "--connections: -5 is not a connection count"),
    (["--connections", "99999999"], "--connections: 99999999 is not a connection count"),
    (["--connections", "10", "--listener", "grpc"], "--listener: 'grpc' is not one of tcp, tls"),
    (["--connections", "10", "--margin", "-1"], "--margin: must be 0-10"),
])
def test_estimate_bad_input_exits_2(args, message):
    out = simnet("memory", "estimate", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_estimate_refuses_a_calibration_for_another_envoy(tmp_path):
    other = packaged_calibration().to_json() | {"envoy_version": "1.2.3"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(other))
    out = simnet("memory", "estimate", "--connections", "10", "--calibration", str(path))
    assert out.returncode == 2, out.stdout
    assert f"{path}: envoy_version: calibrated for Envoy 1.2.3, but Envoy" in out.stderr
    ok = simnet("memory", "estimate", "--connections", "10", "--calibration", str(path),
                "--any-envoy-version", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["envoy_version"] == "1.2.3"


def test_estimate_names_a_broken_calibration_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "envoy_version": "1.40.0",\n  oops\n}')
    out = simnet("memory", "estimate", "--connections", "1", "--calibration", str(broken))
    assert out.returncode == 2 and f"{broken}:3: not JSON" in out.stderr
    partial = tmp_path / "partial.json"
    partial.write_text('{"envoy_version": "1.40.0"}')
    out = simnet("memory", "estimate", "--connections", "1", "--calibration", str(partial))
    assert out.returncode == 2 and "not a simnet memory calibration: missing field" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--kinds", "tls,quic"], "--kinds: 'quic' is not one of tcp, tls"),
    (["--connections", "0,x"], "--connections[1]: 'x' is not a connection count"),
    (["--connections", "500,100"], "--connections: give at least two different counts, increasing"),
])
def test_calibrate_bad_input_exits_2_before_measuring(args, message, tmp_path):
    out = simnet("memory", "calibrate", *args, "--output", str(tmp_path / "cal.json"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "cal.json").exists()
