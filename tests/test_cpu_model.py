"""The Envoy CPU model: loading a calibration (and refusing a bad one, by field), the service time
the simulator takes from it, and the checks a real measurement must pass."""

from __future__ import annotations

import copy
import json
import statistics

import pytest

from simnet.errors import SimnetError
from simnet.model.cpu import CpuCalibration, KindCpu, load_cpu_calibration, packaged_cpu_calibration
from simnet.model.envoy import LISTENER_KINDS

GOOD = {
    "envoy_version": "1.40.0", "measured_on": "2026-12-04", "machine": {"cores": 2},
    "kinds": {"tls": {"per_request_us": 80.0, "per_handshake_us": 3500.0,
                      "points": [[70.0, 3000.0], [80.0, 3500.0], [90.0, 4000.0], [100.0, 4500.0]]},
              "tcp": {"per_request_us": 60, "per_handshake_us": 300}},
    "method": "test", "extra": {},
}


def load(data, source="cal.json") -> CpuCalibration:
    return load_cpu_calibration(json.dumps(data, indent=1), source)


def problems(data) -> list[str]:
    with pytest.raises(SimnetError) as e:
        load(data)
    return [str(p) for p in e.value.problems]


def with_(path: str, value):
    """GOOD with the field at dotted ``path`` set to ``value`` (deleted for ...)."""
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_service_time_is_the_request_plus_the_handshake_on_a_new_connection():
    cal = load(GOOD)
    assert cal.service_s("tls") == pytest.approx(80e-6)
    assert cal.service_s("tls", new_connection=True) == pytest.approx(3580e-6)
    assert cal.service_s("tcp", True) == pytest.approx(360e-6)
    with pytest.raises(ValueError, match="no 'http2' listener kind"):
        cal.service_s("http2")


def test_a_calibration_survives_its_json():
    cal = load(GOOD)
    assert CpuCalibration.from_json(json.loads(json.dumps(cal.to_json()))) == cal
    assert cal.kinds["tcp"] == KindCpu(60.0, 300.0, ())


def test_spread_is_the_interquartile_range_of_the_repetitions():
    (req_lo, req_hi), (hs_lo, hs_hi) = load(GOOD).kinds["tls"].spread()
    assert req_lo < 80.0 < req_hi and hs_lo < 3500.0 < hs_hi
    assert (req_lo, req_hi) == tuple(statistics.quantiles([70.0, 80.0, 90.0, 100.0], n=4)[::2])
    assert load(GOOD).kinds["tcp"].spread() is None  # no repetitions recorded


def test_not_json_names_the_line():
    with pytest.raises(SimnetError) as e:
        load_cpu_calibration('{\n "envoy_version": "1.40.0",\n oops\n}', "cal.json")
    assert [str(p) for p in e.value.problems] == [
        "cal.json:3: not JSON: Expecting property name enclosed in double quotes"]


@pytest.mark.parametrize("path, value, message", [
    ("envoy_version", ..., "cal.json: envoy_version: missing field"),
    ("kinds", ..., "cal.json: kinds: missing field"),
    ("kinds.tls.per_handshake_us", ..., "cal.json: kinds.tls.per_handshake_us: missing field"),
    ("kinds.tls.per_request_us", -1.5, "cal.json: kinds.tls.per_request_us: -1.5 is negative"),
    ("kinds.tcp.per_handshake_us", "fast", "cal.json: kinds.tcp.per_handshake_us: 'fast' is not a number"),
    ("kinds.tcp.per_request_us", True, "cal.json: kinds.tcp.per_request_us: True is not a number"),
    ("kinds.quic", {"per_request_us": 1, "per_handshake_us": 1},
     "cal.json: kinds.quic: unknown listener kind (one of tcp, tls, mtls, http1, http2)"),
    ("kinds.tls.points", [[1.0, -2.0]], "cal.json: kinds.tls.points[0]: -2.0 is negative"),
    ("kinds.tls.points", [[1.0]], "cal.json: kinds.tls.points[0]: must be [per_request_us, per_handshake_us]"),
    ("kinds.tls.per_connection_us", 5, "cal.json: kinds.tls.per_connection_us: unknown field"),
    ("measured_on", "yesterday", "cal.json: measured_on: 'yesterday' is not an ISO date"),
    ("kinds", {}, "cal.json: kinds: must be an object with at least one listener kind"),
    ("machine", "box", "cal.json: machine: must be a JSON object"),
])
def test_a_bad_calibration_names_the_field(path, value, message):
    found = problems(with_(path, value))
    assert len(found) == 1 and found[0].startswith(message), found


def test_every_problem_is_reported_at_once():
    data = with_("kinds.tls.per_request_us", -1)
    data["kinds"]["tcp"]["per_handshake_us"] = None
    del data["envoy_version"]
    assert [p.split(":")[1].strip() for p in problems(data)] == [
        "envoy_version", "kinds.tcp.per_handshake_us", "kinds.tls.per_request_us"]


def test_a_list_is_not_a_calibration():
    assert problems([1, 2]) == ["cal.json: not a simnet CPU calibration: expected a JSON object"]


# --- the packaged calibration ------------------------------------------------------------------


def test_the_packaged_calibration_has_every_kind_and_its_figures_are_its_points_medians():
    cal = packaged_cpu_calibration()
    assert set(cal.kinds) == set(LISTENER_KINDS)
    for name, k in cal.kinds.items():
        assert len(k.points) >= 5, name
        assert k.per_request_us == pytest.approx(statistics.median(p[0] for p in k.points), abs=0.01)
        assert k.per_handshake_us == pytest.approx(statistics.median(p[1] for p in k.points), abs=0.01)


def test_in_the_packaged_calibration_a_tls_handshake_costs_more_than_a_request_and_a_tcp_accept():
    cal = packaged_cpu_calibration()
    for name in ("tls", "mtls", "http1", "http2"):
        k = cal.kinds[name]
        assert k.per_handshake_us > 10 * k.per_request_us, name
        assert k.per_handshake_us > 3 * cal.kinds["tcp"].per_handshake_us, name
    assert cal.kinds["http1"].per_request_us > cal.kinds["tls"].per_request_us  # HTTP parsing, routing


# --- the checks of a real measurement (simnet.real.cpu), on made-up counts ----------------------


def phase(**changes):
    from simnet.real.cpu import Phase

    good = dict(requests=50, connections=50, responses=50, wall_s=0.4, cpu_ns=200_000_000,
                idle_ns=400_000, stat_ns=200_000_000, user_ticks=19, system_ticks=1,
                envoy_connections=50, envoy_requests=0, envoy_upstream=50, app_connections=50,
                app_requests=50)
    return Phase(**{**good, **changes})


def test_a_workload_that_went_through_envoy_as_sent_passes_the_checks():
    from simnet.real.cpu import check_phase

    assert check_phase("mtls", phase()) == []
    assert check_phase("http1", phase(envoy_requests=50, envoy_upstream=0, app_connections=0)) == []


@pytest.mark.parametrize("kind, changes, complaint", [
    ("mtls", {"responses": 49}, "responses 49, expected 50"),
    ("mtls", {"envoy_connections": 0}, "downstream_cx_total) 0, expected 50"),
    ("tcp", {"envoy_upstream": 1}, "upstream_cx_total) 1, expected 50"),
    ("http2", {"envoy_requests": 10, "envoy_upstream": 0}, "downstream_rq_total) 10, expected 50"),
    ("tls", {"app_requests": 0}, "requests the app answered 0, expected 50"),
    ("tls", {"stat_ns": 100_000_000}, "CPU clock 200.0 ms but /proc/<pid>/stat 100.0 ms"),
])
def test_a_workload_that_did_not_fails_the_checks(kind, changes, complaint):
    from simnet.real.cpu import check_phase

    found = check_phase(kind, phase(**changes))
    assert len(found) == 1 and complaint in found[0], found


def test_a_repetition_charges_the_handshake_what_a_new_connection_costs_beyond_a_request():
    from simnet.real.cpu import Repetition

    reused = phase(requests=1000, connections=0, responses=1000, cpu_ns=80_400_000, idle_ns=400_000)
    new = phase(cpu_ns=200_400_000, idle_ns=400_000)
    r = Repetition(reused, new)
    assert r.per_request_us == pytest.approx(80.0)
    assert r.per_connection_us == pytest.approx(4000.0)
    assert r.per_handshake_us == pytest.approx(3920.0)
