"""Sweeps: designs, checks before running, the result store, failures, and resuming a sweep
killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simnet.cli import app
from simnet.sweep.design import Sweep, points

runner = CliRunner()

SCENARIO = """name: sw
seed: 5
duration_s: {duration}
cells: {{count: 2, memory_mb: 4096}}
apps: [{{name: a, instances: 3}}]
routes: [{{host: a.example.com, app: a}}]
clients: [{{host: a.example.com, rate_per_s: 200}}]
sweep:
{sweep}
"""


def _write(tmp_path, sweep: str, duration: float = 2):
    f = tmp_path / "sw.yaml"
    f.write_text(SCENARIO.format(duration=duration, sweep=sweep))
    return f


def test_grid_is_the_cross_product_with_distinct_seeds():
    s = Sweep.model_validate({"replications": 3, "parameters": {
        "routers.count": {"range": [1, 5, 2]}, "routers.max_attempts": [1, 3]}})
    pts = points(s, 0)
    assert len(pts) == 3 * 2 * 3
    assert {tuple(p.params.values()) for p in pts} == {(c, m) for c in (1, 3, 5) for m in (1, 3)}
    assert len({p.seed for p in pts}) == len(pts)
    assert points(s, 0) == pts and points(s, 1) != pts


@settings(max_examples=30)
@given(n=st.integers(1, 40), seed=st.integers(0, 10**6))
def test_latin_hypercube_puts_one_point_in_each_stratum(n, seed):
    s = Sweep.model_validate({"design": "lhs", "samples": n, "parameters": {
        "x": {"uniform": [0, 10]}, "y": {"uniform": [-1, 1]}}})
    pts = points(s, seed)
    for name, (low, high) in (("x", (0, 10)), ("y", (-1, 1))):
        strata = sorted(int((p.params[name] - low) / (high - low) * n) for p in pts)
        assert strata == list(range(n))


@pytest.mark.parametrize("sweep, field, message", [
    ("  parameters:\n    routers.cuont: [1, 2]", "sweep.parameters.routers.cuont", "unknown key"),
    ("  parameters:\n    routers.count: [1, 0]", "sweep.parameters.routers.count", "must be at least 1, got 0"),
    ("  parameters:\n    apps.3.instances: [1]", "sweep.parameters.apps.3.instances", "no item 3"),
    ("  design: lhs\n  parameters:\n    routers.count: [1]", "sweep", "needs samples"),
    ("  parameters:\n    routers.count: {rnage: [1, 2]}", "sweep.parameters.routers.count",
     "expected a list of values"),
])
def test_bad_sweeps_are_reported_before_anything_runs(tmp_path, sweep, field, message):
    f = _write(tmp_path, sweep)
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{f}:" in result.stderr and field in result.stderr and message in result.stderr, \
        result.stderr
    assert not (tmp_path / "r" / "sw" / "sweep.sqlite").exists()


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    f = _write(tmp_path, "  parameters:\n    apps.0.instances: [2, 500, 3]")
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = list(sqlite3.connect(tmp_path / "r" / "sw" / "sweep.sqlite").execute(
        "SELECT idx, status, error FROM runs ORDER BY idx"))
    assert [(i, s) for i, s, _ in rows] == [(0, "done"), (1, "failed"), (2, "done")]
    assert "only" in rows[1][2] and "instances fit" in rows[1][2]
    csv = (tmp_path / "r" / "sw" / "sweep.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("point,apps.0.instances,")
    # the same sweep again without --resume would mix results: refused, nothing lost
    again = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert again.exit_code == 2 and "--resume" in again.stderr


def test_two_workers_give_the_same_results_as_one(tmp_path):
    sweep = "  replications: 2\n  parameters:\n    routers.count: [1, 2]\n    routers.max_attempts: [1, 3]"
    outs = []
    for workers in (1, 2):
        f = _write(tmp_path, sweep)
        r = tmp_path / f"r{workers}"
        assert runner.invoke(app, ["sweep", str(f), "--reports", str(r),
                                   "--workers", str(workers)]).exit_code == 0
        outs.append((r / "sw" / "sweep.csv").read_text())
    assert outs[0] == outs[1]


def test_a_killed_sweep_resumes_exactly(tmp_path):
    """SIGKILL mid-sweep, then --resume: every point stored once, none redone."""
    f = _write(tmp_path, "  design: random\n  samples: 24\n  parameters:\n"
                         "    clients.0.rate_per_s: {uniform: [50, 400]}", duration=3)
    reports = tmp_path / "r"
    db = reports / "sw" / "sweep.sqlite"
    cmd = [sys.executable, "-m", "simnet", "sweep", str(f), "--reports", str(reports)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    (n,) = sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()
                except sqlite3.OperationalError:
                    n = 0
                if n >= 3:
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    before = dict(sqlite3.connect(db).execute("SELECT key, results FROM runs"))
    assert 3 <= len(before) < 24, len(before)
    result = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} already stored, {24 - len(before)} run now" in result.stdout
    after = dict(sqlite3.connect(db).execute("SELECT key, results FROM runs"))
    assert len(after) == 24
    assert all(after[k] == v for k, v in before.items())
    assert [i for (i,) in sqlite3.connect(db).execute("SELECT idx FROM runs ORDER BY idx")] == \
        list(range(24))


def test_every_bundled_scenario_ships_a_sweep_whose_points_check():
    from simnet.scenario.load import BUNDLED
    from simnet.sweep.run import checked_points, sweep_source

    files = sorted(BUNDLED.glob("*.yaml"))
    assert len(files) == 6
    for f in files:
        s, data, source = sweep_source(f)
        assert len(checked_points(s, data, source)) >= 3, f


def test_a_bundled_sweep_runs(tmp_path):
    from simnet.scenario.load import bundled

    result = runner.invoke(app, ["sweep", str(bundled("diego-route-integrity-legacy")),
                                 "--reports", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "diego-route-integrity-legacy" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",done," in r for r in rows[1:])
