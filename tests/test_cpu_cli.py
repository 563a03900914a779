"""`simnet cpu show|calibrate` as a user runs them: the packaged figures, and bad input refused
before anything is measured (exit 2, located lines, no traceback)."""

from __future__ import annotations

import json

import pytest

from simnet.errors import SimnetError
from simnet.model.cpu import packaged_cpu_calibration
from tests.test_cli import simnet


def test_show_prints_every_kind_of_the_packaged_calibration():
    out = simnet("cpu", "show")
    assert out.returncode == 0, out.stderr
    cal = packaged_cpu_calibration()
    assert f"Envoy {cal.envoy_version} CPU" in out.stdout
    for name, k in cal.kinds.items():
        row = next(line for line in out.stdout.splitlines() if f" {name} " in line)
        assert f"{k.per_request_us:,.1f}" in row, row


def test_show_reads_another_calibration(tmp_path):
    data = packaged_cpu_calibration().to_json()
    data["envoy_version"] = "9.9.9"
    data["kinds"] = {"tcp": {"per_request_us": 12.5, "per_handshake_us": 250.0, "points": []}}
    f = tmp_path / "cpu.json"
    f.write_text(json.dumps(data))
    out = simnet("cpu", "show", "--calibration", str(f))
    assert out.returncode == 0, out.stderr
    assert "Envoy 9.9.9 CPU" in out.stdout and "12.5" in out.stdout and "80,000" in out.stdout


@pytest.mark.parametrize("content, line", [
    ('{"envoy_version": 1', "{f}:1: not JSON: Expecting ',' delimiter"),
    ('{"envoy_version": "1.40.0", "measured_on": "2026-12-04", "kinds": '
     '{"tls": {"per_request_us": -3, "per_handshake_us": 1}}}',
     "{f}: kinds.tls.per_request_us: -3 is negative: CPU time cannot be"),
])
def test_show_refuses_a_bad_calibration_by_file_and_field(tmp_path, content, line):
    f = tmp_path / "bad.json"
    f.write_text(content)
    out = simnet("cpu", "show", "--calibration", str(f))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [line.format(f=f)]


def test_show_refuses_a_missing_file(tmp_path):
    out = simnet("cpu", "show", "--calibration", str(tmp_path / "none.json"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"{tmp_path / 'none.json'}: --calibration: cannot read")


def test_calibrate_refuses_unknown_kinds_before_measuring(tmp_path):
    target = tmp_path / "cpu.json"
    out = simnet("cpu", "calibrate", "--kinds", "tcp,quic", "-o", str(target))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "<command line>: --kinds: 'quic' is not one of tcp, tls, mtls, http1, http2" in out.stderr
    assert not target.exists()


def test_calibration_without_root_is_refused_with_every_other_problem(monkeypatch):
    import os

    from simnet.cli.cpu import calibration_plan

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SimnetError) as e:
        calibration_plan("tls,tls")
    assert [str(p) for p in e.value.problems] == [
        "<command line>: calibration needs root: Envoy and its load run in a private network namespace",
        "<command line>: --kinds: a listener kind is given twice",
    ]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert calibration_plan("mtls, tcp") == ["mtls", "tcp"]
