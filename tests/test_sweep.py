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
from simnet.sweep.design import METRICS, Sweep, points

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
    assert not (tmp_path / "r" / "sw-sweep" / "sweep.sqlite").exists()


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    f = _write(tmp_path, "  parameters:\n    apps.0.instances: [2, 500, 3]")
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = list(sqlite3.connect(tmp_path / "r" / "sw-sweep" / "sweep.sqlite").execute(
        "SELECT idx, status, error FROM runs ORDER BY idx"))
    assert [(i, s) for i, s, _ in rows] == [(0, "done"), (1, "failed"), (2, "done")]
    assert "only" in rows[1][2] and "instances fit" in rows[1][2]
    csv = (tmp_path / "r" / "sw-sweep" / "sweep.csv").read_text().splitlines()
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
        outs.append((r / "sw-sweep" / "sweep.csv").read_text())
    assert outs[0] == outs[1]


def test_a_killed_sweep_resumes_exactly(tmp_path):
    """SIGKILL mid-sweep, then --resume: every point stored once, none redone."""
    f = _write(tmp_path, "  design: random\n  samples: 24\n  parameters:\n"
                         "    clients.0.rate_per_s: {uniform: [50, 400]}", duration=3)
    reports = tmp_path / "r"
    db = reports / "sw-sweep" / "sweep.sqlite"
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


def _bundled():
    from simnet.scenario.load import BUNDLED

    files = sorted(BUNDLED.glob("*.yaml"))
    assert len(files) == 7
    return files


@pytest.mark.parametrize("path", _bundled(), ids=lambda p: p.stem)
def test_every_bundled_scenario_ships_a_sweep_whose_points_check_and_run(path):
    """Every point checks; the first one runs (bosh-istio's apps come from its manifest)."""
    from simnet.sweep.executors import LocalExecutor
    from simnet.sweep.source import checked_points, sweep_source

    s, data, source = sweep_source(path)
    pts = checked_points(s, data, source)
    assert len(pts) >= 3
    [(_, results, error)] = LocalExecutor(workers=1).results(data, pts[:1])
    assert error is None and results["completed"] > 0 and set(results) == set(METRICS)


def test_a_bundled_sweep_runs(tmp_path):
    from simnet.scenario.load import bundled

    result = runner.invoke(app, ["sweep", str(bundled("diego-route-integrity-legacy")),
                                 "--reports", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "diego-route-integrity-legacy-sweep" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",done," in r for r in rows[1:])


GRID = "  replications: 2\n  parameters:\n    routers.count: [1, 2]\n    routers.max_attempts: [1, 3]"


def _runs(db) -> dict:
    return dict(sqlite3.connect(db).execute("SELECT key, results FROM runs"))


def test_a_dask_cluster_gives_the_same_runs_as_local_processes(tmp_path):
    """The Dask executor against a LocalCluster this test starts: same keys, same results."""
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    f = _write(tmp_path, GRID)
    local = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "dask"),
                                     "--executor", "dask", "--scheduler", cluster.scheduler_address])
        assert result.exit_code == 0, result.output
        assert "8 run now, 0 failed) on 2 dask workers" in result.stdout
    expected = _runs(tmp_path / "local" / "sw-sweep" / "sweep.sqlite")
    assert len(expected) == 8
    assert _runs(tmp_path / "dask" / "sw-sweep" / "sweep.sqlite") == expected
    assert (tmp_path / "dask" / "sw-sweep" / "sweep.csv").read_text() == \
        (tmp_path / "local" / "sw-sweep" / "sweep.csv").read_text()


def test_executor_arguments_are_checked(tmp_path):
    f = _write(tmp_path, GRID)
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path), "--scheduler",
                                 "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "--executor dask" in result.stderr
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path), "--executor", "spark"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    monkeypatch.setattr("simnet.sweep.executors.CONNECT_TIMEOUT_S", 1)
    f = _write(tmp_path, GRID)
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path), "--executor", "dask",
                                 "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr


def test_parquet_holds_the_same_rows_as_csv(tmp_path, monkeypatch):
    import csv

    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed")
    from simnet.sweep.store import Store

    f = _write(tmp_path, "  parameters:\n    apps.0.instances: [2, 500, 3]")
    assert runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path)]).exit_code == 0
    out = tmp_path / "sw-sweep"
    table = pq.read_table(out / "sweep.parquet").to_pylist()
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(table) == len(rows) == 3
    for t, r in zip(table, rows):
        assert {k: "" if v is None else str(v) for k, v in t.items()} == r
    assert [t["status"] for t in table] == ["done", "failed", "done"]
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # without pyarrow: no Parquet, no error
    with Store(out / "sweep.sqlite", "x") as store:
        assert store.export_parquet(tmp_path / "none.parquet") is None
    assert not (tmp_path / "none.parquet").exists()


def test_a_sweep_file_names_its_scenario_and_gives_the_same_runs(tmp_path):
    """A sweep in a file of its own (scenario: a relative path) runs exactly as the same sweep
    inside the scenario; a bundled name works too."""
    from simnet.sweep.source import checked_points, sweep_source

    inline = _write(tmp_path, GRID)
    base = tmp_path / "base"
    base.mkdir()
    (base / "sw.yaml").write_text(inline.read_text().split("sweep:")[0])
    (tmp_path / "grid.yaml").write_text("scenario: base/sw.yaml\nname: sw-sweep\n"
                                        + GRID.replace("\n  ", "\n").removeprefix("  "))
    outs = []
    for f in (inline, tmp_path / "grid.yaml"):
        r = tmp_path / f"r-{f.stem}"
        result = runner.invoke(app, ["sweep", str(f), "--reports", str(r)])
        assert result.exit_code == 0, result.output
        outs.append(_runs(r / "sw-sweep" / "sweep.sqlite"))
    assert len(outs[0]) == 8 and outs[0] == outs[1]
    (tmp_path / "b.yaml").write_text("scenario: bosh-istio\nparameters:\n  routers.count: [1, 2]\n")
    s, data, source = sweep_source(tmp_path / "b.yaml")
    assert s.name == "bosh-istio" and len(checked_points(s, data, source)) == 2
    assert "example-httpbin-banana" in [a["name"] for a in data["apps"]]  # from the manifest


@pytest.mark.parametrize("text, line, field, message", [
    ("scenario: base.yaml\nparameters:\n  routers.cuont: [1, 2]\n", 3,
     "parameters.routers.cuont", "unknown key"),
    ("scenario: base.yaml\ndesign: lhs\nparameters:\n  routers.count: [1]\n", 1, "",
     "needs samples"),
    ("scenario: base.yaml\nparameters:\n  routers.count: [1]\nreplications: 0\n", 4,
     "replications", "at least 1"),
    ("scenario: nowhere.yaml\nparameters:\n  routers.count: [1]\n", 1, "scenario",
     "no scenario 'nowhere.yaml'"),
    ("scenario: [1]\nparameters:\n  routers.count: [1]\n", 1, "scenario", "expected a scenario"),
])
def test_sweep_file_errors_name_the_sweep_file_and_line(tmp_path, text, line, field, message):
    (tmp_path / "base.yaml").write_text(SCENARIO.format(duration=1, sweep="").split("sweep:")[0])
    f = tmp_path / "s.yaml"
    f.write_text(text)
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    where = f"{f}:{line}: {field}: " if field else f"{f}:{line}: "
    assert where in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()
