"""A side-by-side report of several runs: the same deployment under different settings.

Designers compare variants (backend TLS on or off, more routers, another propagation delay):
``simnet compare A.yaml B.yaml`` runs each, writes each one's own report, and writes
``reports/<A>-vs-<B>/`` with the variants in columns -- headline numbers, statuses,
misdelivered requests, and figures drawn on shared axes. Written like a run report: staged
beside the target and swapped in only when complete.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

from simnet import __version__
from simnet.report import figures
from simnet.files import staged
from simnet.report.format import ENV, ms, rate
from simnet.report.render import STATUS_MEANINGS, jsonable
from simnet.scenario.schema import Scenario
from simnet.sim.metrics import Metrics

COMPARE_FIGURES = (
    ("latency_cdf.png", figures.compare_latency, "Latency",
     "Share of requests answered within a given time, one line per variant."),
    ("errors.png", figures.compare_errors, "Errors over time",
     "Non-200 responses per second in each time bin, one line per variant."),
)
COMPARE_FILES = ("compare.html", "comparison.json") + tuple(f[0] for f in COMPARE_FIGURES)


def comparison_name(scenarios: Sequence[Scenario]) -> str:
    return "-vs-".join(s.name for s in scenarios)


def comparison(runs: Sequence[tuple[Scenario, Metrics]]) -> dict:
    """comparison.json: each variant's summary numbers, in the order given."""
    return {"variants": [{"scenario": s.name, "platform": s.platform, "seed": s.seed,
                          **m.summary()} for s, m in runs]}


def _rows(runs: Sequence[tuple[Scenario, Metrics]], numbers: list[dict]) -> list[tuple]:
    """(label, [cell per variant], highlight) for the side-by-side table."""
    req = [n["requests"] for n in numbers]
    lat = [n["latency_ms"] for n in numbers]
    statuses = sorted({code for _, m in runs for code in m.outcomes})
    rows = [
        ("requests completed", [f"{r['completed']:,}" for r in req], False),
        ("success rate", [rate(m.outcomes.get(200, 0), r["completed"])
                          for (_, m), r in zip(runs, req)], False),
        ("misdelivered (wrong app answered)", [f"{r['misdelivered']:,}" for r in req],
         any(r["misdelivered"] for r in req)),
        ("retries", [f"{r['retries']:,}" for r in req], False),
        ("endpoints pruned", [f"{n['endpoints_pruned']:,}" for n in numbers], False),
        ("p50", [ms(x["p50"]) for x in lat], False),
        ("p99", [ms(x["p99"]) for x in lat], False),
        ("TLS handshakes", [f"{n['tls_handshakes']:,}" for n in numbers], False),
    ]
    for code in statuses:
        name = STATUS_MEANINGS.get(code, ("", ""))[0]
        rows.append((f"status {code}" + (f" ({name})" if name else ""),
                     [f"{m.outcomes.get(code, 0):,}" for _, m in runs], False))
    return rows


def write_comparison(runs: Sequence[tuple[Scenario, Metrics]], outdir: Path) -> list[Path]:
    """Write compare.html, comparison.json and the shared-axes figures into ``outdir``."""
    labelled = [(s.name, m) for s, m in runs]
    numbers = [m.summary() for _, m in runs]
    with staged(outdir) as staging:
        pngs = {}
        for file, fn, _h, _c in COMPARE_FIGURES:
            pngs[file] = figures.png_bytes(fn(labelled))
            (staging / file).write_bytes(pngs[file])
        (staging / "comparison.json").write_text(
            json.dumps(jsonable(comparison(runs)), sort_keys=True, indent=2) + "\n", encoding="utf-8")
        html = ENV.get_template("compare.html.j2").render(
            title=f"simnet comparison: {', '.join(s.name for s, _ in runs)}", version=__version__,
            variants=[{"name": s.name, "description": s.description, "platform": s.platform,
                       "seed": s.seed, "duration": f"{s.duration_s:g} s",
                       "report": f"../{s.name}/report.html"} for s, _ in runs],
            rows=_rows(runs, numbers),
            figures=[{"file": file, "heading": h, "caption": c,
                      "src": "data:image/png;base64," + base64.b64encode(pngs[file]).decode("ascii")}
                     for file, _fn, h, c in COMPARE_FIGURES])
        (staging / "compare.html").write_text(html, encoding="utf-8")
    return [Path(outdir) / f for f in COMPARE_FILES]
