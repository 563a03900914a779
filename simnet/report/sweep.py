"""A sweep's comparison report: reports/<sweep-name>/sweep.html with its figures.

Runs are grouped into points (the same parameter values, every replication); a point's number
is the mean over its finished runs, with the lowest and highest beside it. The best setting is
the point with the best mean objective among points where *every* run meets every bound: a
setting that fails its constraint in one replication out of three is not recommended.
Each file is written beside its target and renamed into place, so a report that fails half
way leaves the previous one (and the sweep's store, in the same folder) as it was.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from simnet import __version__
from simnet.report import sweep_figures
from simnet.report.figures import png_bytes
from simnet.files import write_atomically
from simnet.report.format import ENV
from simnet.sweep.design import METRICS, Sweep

SHOWN = ("error_rate", "p50_ms", "p99_ms", "throughput_per_s", "refused", "misdelivered",
         "retries", "oom_kills", "memory_headroom_mb")  # columns of the points table


@dataclass
class PointResult:
    """Every run of one parameter setting."""

    params: dict
    runs: list[dict] = field(default_factory=list)  # finished runs' results
    errors: list[str] = field(default_factory=list)  # failed runs' errors

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.runs if r.get(metric) is not None]

    def mean(self, metric: str) -> float | None:
        v = self.values(metric)
        return fmean(v) if v else None

    def span(self, metric: str) -> tuple[float, float] | None:
        v = self.values(metric)
        return (min(v), max(v)) if v else None


def point_results(rows: Sequence[dict], names: Sequence[str]) -> list[PointResult]:
    """Stored runs (``Store.rows``) grouped by parameter values, in first-seen order."""
    out: dict[tuple, PointResult] = {}
    for r in rows:
        params = {n: r.get(n) for n in names}
        p = out.setdefault(tuple(repr(params[n]) for n in names), PointResult(params))
        if r["status"] == "done":
            p.runs.append({m: r.get(m) for m in METRICS})
        else:
            p.errors.append(r["error"])
    return list(out.values())


def feasible(p: PointResult, sweep: Sweep) -> bool:
    """Every run finished and met every bound of ``best.subject_to``."""
    return bool(p.runs) and not p.errors and all(
        bound.holds(r.get(metric)) for r in p.runs for metric, bound in sweep.best.subject_to.items())


def best_point(points: Sequence[PointResult], sweep: Sweep) -> PointResult | None:
    """The feasible point with the best mean objective (ties: the earlier point)."""
    metric = sweep.best.minimize or sweep.best.maximize
    sign = 1 if sweep.best.minimize else -1
    scored = [(sign * m, k) for k, p in enumerate(points)
              if feasible(p, sweep) and (m := p.mean(metric)) is not None]
    return points[min(scored)[1]] if scored else None


def _constraint_text(sweep: Sweep) -> str:
    parts = []
    for metric, b in sweep.best.subject_to.items():
        if b.min is not None:
            parts.append(f"{metric} ≥ {b.min:g}")
        if b.max is not None:
            parts.append(f"{metric} ≤ {b.max:g}")
    return ", ".join(parts)


def _cell(p: PointResult, metric: str) -> str:
    mean, span = p.mean(metric), p.span(metric)
    if mean is None:
        return "–"
    text, low, high = f"{mean:.4g}", f"{span[0]:.4g}", f"{span[1]:.4g}"
    return text if low == high else f"{text} ({low}–{high})"


def figures(points: Sequence[PointResult], names: Sequence[str]) -> list[tuple[str, str, str, bytes]]:
    """(file, heading, caption, PNG) for every figure of the report."""
    out = []
    for n in names:
        out.append((f"vs-{n}.png", f"Error rate and p99 latency vs {n}",
                    "Every run as a dot, the mean per value as a line; other parameters vary "
                    "as the design has them.", png_bytes(sweep_figures.metrics_vs(points, n))))
        out.append((f"throughput-{n}.png", f"Offered vs achieved throughput vs {n}",
                    "Per run, the requests/s the clients sent and the requests/s answered 200; "
                    "where they part, the deployment is saturated (see docs/capacity.md).",
                    png_bytes(sweep_figures.throughput_vs(points, n))))
    out.append(("memory-headroom.png", "Memory headroom vs additional allocation",
                "Per run: the least memory any Envoy had left at its peak, against the "
                "additional memory each instance got. At or below 0 an Envoy was OOM-killed.",
                png_bytes(sweep_figures.headroom(points))))
    for a, b in sweep_figures.pairs(points, names):
        out.append((f"heat-{a}-{b}.png", f"Error rate over {a} and {b}",
                    "Mean error rate of the runs in each cell; a blank cell had no run.",
                    png_bytes(sweep_figures.heatmap(points, a, b, "error_rate"))))
    return out


def write_sweep_report(sweep: Sweep, scenario_name: str, rows: Sequence[dict],
                       outdir: Path, total: int) -> Path:
    """sweep.html and its PNGs in ``outdir``, from the runs stored so far."""
    names = list(sweep.parameters)
    points = point_results(rows, names)
    best = best_point(points, sweep)
    objective = sweep.best.minimize or sweep.best.maximize
    figs = figures(points, names)
    for file, _h, _c, png in figs:
        write_atomically(outdir / file, png)
    html = ENV.get_template("sweep.html.j2").render(
        title=f"simnet sweep: {sweep.name or scenario_name + '-sweep'}", version=__version__,
        scenario=scenario_name, design=sweep.design, replications=sweep.replications,
        parameters=names, total=total, stored=len(rows),
        failed=sum(len(p.errors) for p in points),
        objective=f"{'minimize' if sweep.best.minimize else 'maximize'} {objective}",
        constraints=_constraint_text(sweep),
        feasible=sum(feasible(p, sweep) for p in points),
        best=best and {"params": best.params, "cells": {m: _cell(best, m) for m in SHOWN}},
        columns=SHOWN,
        points=[{"params": p.params, "runs": len(p.runs), "failed": len(p.errors),
                 "error": p.errors[0] if p.errors else "", "feasible": feasible(p, sweep),
                 "best": p is best, "cells": [_cell(p, m) for m in SHOWN]} for p in points],
        figures=[{"file": f, "heading": h, "caption": c,
                  "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
                 for f, h, c, png in figs])
    target = outdir / "sweep.html"
    write_atomically(target, html.encode("utf-8"))
    return target
