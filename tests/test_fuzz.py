"""Fuzzing every input path: iptables text, PEM files, sweep definitions (scenario YAML, Route
YAML and BOSH manifests are fuzzed beside their loaders' tests, counted in the same
``tests.fuzzing.FUZZED``). Any input gives a result or
the project's own located error (SimnetError: exit code 2 at the CLI), never another exception,
a hang (a deadline per input) or a leaked temp file. The inputs tried are counted and printed
at the end of the run."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from simnet import credentials
from simnet.errors import SimnetError
from simnet.model import netfilter as nf
from simnet.strategies.netfilter import rulesets
from simnet.sweep.source import checked_points, sweep_source
from tests.fuzzing import FUZZED, cut_and_continue, noise

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "peers" / "istio-capture-golden"
# 8x the profile's examples per input path (dev: 200, ci: 1,600); a 5 s deadline per input
FUZZ = settings(max_examples=settings().max_examples * 8, deadline=timedelta(seconds=5),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _no_temp_files_leak():
    before = set(os.listdir(tempfile.gettempdir()))
    yield
    new = {n for n in set(os.listdir(tempfile.gettempdir())) - before if "simnet" in n}
    assert not new, f"temp files left: {new}"


# --- iptables text -----------------------------------------------------------------------

IPTABLES_NOISE = noise("*:-ACDIJNOPRTX \n[]0123456789abcdeflnoprstuvwxyz/.!#", 100)
GOLDENS = sorted(GOLDEN.glob("*.golden"))


@FUZZ
@given(st.one_of(st.text(max_size=200), IPTABLES_NOISE,
                 cut_and_continue(rulesets(), IPTABLES_NOISE),
                 cut_and_continue(st.sampled_from([g.read_text() for g in GOLDENS] or [""]),
                                   IPTABLES_NOISE)))
@example("\x1e\r0")  # found by this test: \x1e and \r were counted as line breaks (line 3 of 1)
def test_any_iptables_text_gives_a_ruleset_or_located_problems(text):
    FUZZED["iptables text"] += 1
    for family in (4, 6):
        try:
            nf.load(text, "rules.txt", family=family)
        except SimnetError as e:
            assert e.problems and all(p.file == "rules.txt" for p in e.problems)
            n_lines = text.count("\n") + 2
            assert all(p.line is None or 1 <= p.line <= n_lines for p in e.problems)


# --- PEM files ---------------------------------------------------------------------------

def _pem_samples() -> list[bytes]:
    from datetime import datetime, timezone

    from simnet.model import pki

    h = pki.hierarchy(datetime(2026, 1, 1, tzinfo=timezone.utc), prefix="fuzz")
    leaf = pki.issue(h.intermediate, "fuzz.example.com", now=datetime(2026, 1, 1, tzinfo=timezone.utc),
                     validity=timedelta(days=1), key=pki.shared_key("fuzz/leaf"))
    return [pki.chain_pem(leaf), pki.key_pem(leaf), pki.bundle_pem(h.root, h.stranger)]


PEM_NOISE = noise("-BEGIN END CERTIFICATE PRIVATE KEY\nABCDEFabcdef0123456789+/=", 120)
pem_texts = st.one_of(
    st.binary(max_size=300),
    PEM_NOISE.map(str.encode),
    st.binary(max_size=200).map(lambda b: b"-----BEGIN CERTIFICATE-----\n"
                                + base64.encodebytes(b) + b"-----END CERTIFICATE-----\n"),
    st.deferred(lambda: cut_and_continue(st.sampled_from([p.decode() for p in _pem_samples()]),
                                          PEM_NOISE).map(str.encode)),
)


@FUZZ
@given(pem_texts)
def test_any_pem_file_gives_certificates_or_a_located_problem(tmp_path, data):
    FUZZED["PEM files"] += 1
    f = tmp_path / "in.pem"
    f.write_bytes(data)
    for read in (lambda: credentials.certificates(f, "--ca"),
                 lambda: credentials.private_key(f, "--server-key")):
        try:
            read()
        except SimnetError as e:
            assert e.problems and all(p.file == str(f) for p in e.problems)


# --- sweep definitions -------------------------------------------------------------------

BASE = """name: fz
duration_s: 1
cells: {count: 2, memory_mb: 4096}
apps: [{name: a, instances: 2}]
routes: [{host: a.example.com, app: a}]
clients: [{host: a.example.com, rate_per_s: 50}]
"""
SWEEPS = (
    "scenario: base.yaml\nparameters:\n  routers.count: [1, 2]\n  apps.0.instances: {range: [1, 3]}\n",
    "scenario: base.yaml\ndesign: lhs\nsamples: 3\nreplications: 2\nparameters:\n"
    "  clients.0.rate_per_s: {uniform: [10, 90]}\nbest:\n  minimize: p99_ms\n"
    "  subject_to: {error_rate: {max: 0.1}}\n",
    BASE + "sweep:\n  design: random\n  samples: 2\n  parameters:\n    routers.count: {choice: [1, 2]}\n",
)
SWEEP_NOISE = noise("abcdefgilmnoprstuxyz_.:-0123456789 \n[]{},'\"#", 80)


@FUZZ
@given(st.one_of(SWEEP_NOISE, cut_and_continue(st.sampled_from(SWEEPS), SWEEP_NOISE)))
def test_any_sweep_definition_gives_points_or_located_problems(tmp_path, text):
    FUZZED["sweep definitions"] += 1
    (tmp_path / "base.yaml").write_text(BASE)
    f = tmp_path / "sweep.yaml"
    f.write_text(text)
    try:
        s, data, source = sweep_source(f)
        checked_points(s, data, source)
    except SimnetError as e:
        assert e.problems and all(p.file in (str(f), str(tmp_path / "base.yaml"))
                                  for p in e.problems), e.problems


# --- coverage-guided, with atheris (libFuzzer), where it installs ------------------------

ATHERIS = Path(__file__).resolve().parents[1] / "fuzz" / "atheris_parsers.py"


@pytest.mark.parametrize("target", ["iptables", "scenario", "routes", "manifest", "pem", "sweep"])
def test_atheris_finds_no_crash(tmp_path, target):
    """libFuzzer-guided inputs, 20x the profile's examples per target (dev 500, ci 4,000)."""
    pytest.importorskip("atheris", reason="atheris has no wheel for this platform")
    runs = settings().max_examples * 20
    proc = subprocess.run([sys.executable, str(ATHERIS), target, f"-runs={runs}", "-seed=1",
                           "-timeout=10"],  # an input taking over 10 s is a hang: a failure
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done and int(done.group(1)) == runs
    FUZZED[f"atheris {target}"] += runs
