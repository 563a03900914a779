"""The sweep comparison report: points, the best setting under constraints, figures, and a
report that fails leaving the previous one and the store intact."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simnet.cli import app
from simnet.report import sweep as report
from simnet.sweep.design import METRICS, Sweep

runner = CliRunner()


def _row(point, status="done", error="", **metrics):
    base = {m: 0 for m in METRICS}
    return {"point": point, "routers.count": metrics.pop("count", 1),
            "routers.max_attempts": metrics.pop("attempts", 1), "replication": 0, "seed": 1,
            "status": status, "error": error, **(base | metrics if status == "done" else {})}


def _sweep(**best) -> Sweep:
    return Sweep.model_validate({"parameters": {"routers.count": [1, 2],
                                                "routers.max_attempts": [1, 3]},
                                 "best": best or {"minimize": "error_rate"}})


ROWS = [
    _row(0, count=1, attempts=1, error_rate=0.02, p99_ms=10.0),
    _row(1, count=1, attempts=1, error_rate=0.04, p99_ms=12.0),
    _row(2, count=1, attempts=3, error_rate=0.001, p99_ms=30.0),
    _row(3, count=1, attempts=3, error_rate=0.003, p99_ms=50.0),
    _row(4, count=2, attempts=1, error_rate=0.0, p99_ms=9.0),
    _row(5, count=2, attempts=1, status="failed", error="ValueError: boom"),
    _row(6, count=2, attempts=3, error_rate=0.0, p99_ms=20.0),
    _row(7, count=2, attempts=3, error_rate=0.009, p99_ms=21.0),
]


def test_runs_group_into_points_with_means_and_spans():
    points = report.point_results(ROWS, ["routers.count", "routers.max_attempts"])
    assert [p.params for p in points] == [
        {"routers.count": c, "routers.max_attempts": a} for c in (1, 2) for a in (1, 3)]
    assert points[0].mean("error_rate") == pytest.approx(0.03)
    assert points[0].span("p99_ms") == (10.0, 12.0)
    assert len(points[2].runs) == 1 and points[2].errors == ["ValueError: boom"]
    assert report._cell(points[0], "p99_ms") == "11 (10–12)"


def test_the_best_point_meets_every_bound_in_every_run():
    points = report.point_results(ROWS, ["routers.count", "routers.max_attempts"])
    # lowest mean p99 with error_rate <= 0.005 in every run: not (2, 1) (a failed run), not
    # (2, 3) (one run at 0.009), not (1, 1): so (1, 3), although its p99 is the worst
    sw = _sweep(minimize="p99_ms", subject_to={"error_rate": {"max": 0.005}})
    assert [report.feasible(p, sw) for p in points] == [False, True, False, False]
    assert report.best_point(points, sw).params == {"routers.count": 1, "routers.max_attempts": 3}
    # without the bound: the best mean among points whose runs all finished, never (2, 1)
    assert report.best_point(points, _sweep(minimize="p99_ms")).params == {
        "routers.count": 1, "routers.max_attempts": 1}
    assert report.best_point(points, _sweep()).params == {"routers.count": 1,
                                                          "routers.max_attempts": 3}
    assert report.best_point(points, _sweep(maximize="p99_ms")).params["routers.max_attempts"] == 3
    assert report.best_point(points, _sweep(minimize="p99_ms",
                                            subject_to={"error_rate": {"max": -1}})) is None


def test_the_report_names_the_best_setting_and_draws_every_figure(tmp_path):
    sw = _sweep(minimize="p99_ms", subject_to={"error_rate": {"max": 0.005}})
    target = report.write_sweep_report(sw, "demo", ROWS, tmp_path, total=8)
    html = " ".join(target.read_text().split())
    assert "routers.count = 1, routers.max_attempts = 3" in html
    assert "error_rate ≤ 0.005" in html and "1 of 4 points meet the constraints" in html
    assert "8 of 8 runs stored, 1 failed" in html and 'title="ValueError: boom"' in html
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["heat-routers.count-routers.max_attempts.png", "memory-headroom.png",
                    "throughput-routers.count.png", "throughput-routers.max_attempts.png",
                    "vs-routers.count.png", "vs-routers.max_attempts.png"]
    assert all((tmp_path / p).read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert html.count("data:image/png;base64,") == 6
    # same runs, same bytes: the report is deterministic
    before = {p: (tmp_path / p).read_bytes() for p in pngs}
    report.write_sweep_report(sw, "demo", ROWS, tmp_path, total=8)
    assert {p: (tmp_path / p).read_bytes() for p in pngs} == before
    assert " ".join(target.read_text().split()) == html


def test_no_feasible_point_is_said_plainly(tmp_path):
    sw = _sweep(minimize="p99_ms", subject_to={"p99_ms": {"max": 1}})
    html = " ".join(report.write_sweep_report(sw, "demo", ROWS, tmp_path, total=8).read_text().split())
    assert "No point meets the constraints" in html
    html = " ".join(report.write_sweep_report(_sweep(), "demo", ROWS, tmp_path,
                                              total=8).read_text().split())
    assert "among the 3 of 4 points whose runs all finished" in html


def test_a_report_that_fails_leaves_the_previous_one(tmp_path, monkeypatch):
    sw = _sweep()
    report.write_sweep_report(sw, "demo", ROWS, tmp_path, total=8)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(*_a):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report.sweep_figures, "heatmap", broken)
    with pytest.raises(RuntimeError):
        report.write_sweep_report(sw, "demo", ROWS[1:], tmp_path, total=8)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


SCENARIO = """name: rp
seed: 2
duration_s: 2
cells: {count: 2, memory_mb: 4096}
apps: [{name: a, instances: 2}]
routes: [{host: a.example.com, app: a}]
clients: [{host: a.example.com, rate_per_s: 100}]
sweep:
  name: rp-routers
  parameters:
    routers.count: [1, 2]
  best:
%s
"""


def test_sweep_runs_end_with_the_report_in_the_sweeps_own_folder(tmp_path):
    f = tmp_path / "rp.yaml"
    f.write_text(SCENARIO % "    minimize: p99_ms\n    subject_to: {oom_kills: {max: 0}}")
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "r" / "rp-routers"
    assert {"sweep.sqlite", "sweep.csv", "sweep.html", "vs-routers.count.png"} <= \
        {p.name for p in out.iterdir()}
    assert "minimize p99_ms" in (out / "sweep.html").read_text()


@pytest.mark.parametrize("best, line, field, message", [
    ("    minimize: p99", 13, "sweep.best.minimize", "p99_ms"),
    ("    minimize: p99_ms\n    subject_to: {errors: {max: 0}}", 14,
     "sweep.best.subject_to.errors", "error_rate"),
    ("    minimize: p99_ms\n    maximize: ok", 12, "sweep.best", "one of minimize or maximize"),
])
def test_a_bad_objective_is_reported_at_its_line(tmp_path, best, line, field, message):
    f = tmp_path / "rp.yaml"
    f.write_text(SCENARIO % best)
    result = runner.invoke(app, ["sweep", str(f), "--reports", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{f}:{line}: {field}" in result.stderr and message in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()
