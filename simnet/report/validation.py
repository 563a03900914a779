"""The validation page: a simulation and its emulated twin, metric by metric, with the latency
CDFs overlaid and the error timelines side by side (the comparison report's figures)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from simnet import __version__
from simnet.files import staged
from simnet.report import figures
from simnet.report.format import ENV
from simnet.report.render import jsonable
from simnet.scenario.schema import Scenario
from simnet.sim.metrics import Metrics

VALIDATION_FILES = ("validation.html", "validation.json", "latency-cdf.png", "errors.png")


def write_validation(scenario: Scenario, simulated: list[Metrics], emulated: Metrics,
                     checks: list[dict], distribution: dict, outdir: Path,
                     notes: list[str] = ()) -> list[Path]:
    """Write validation.html, validation.json and the two figures into ``outdir``; ``checks``
    are ``emulate.validate.Check`` rows as dicts, ``notes`` what the simulation was changed in
    to be held to the twin (``emulate.validate.held_to_twin``)."""
    runs = [(f"simulated (seed {scenario.seed + k})", m) for k, m in enumerate(simulated)]
    runs.append(("emulated", emulated))
    document = {"scenario": scenario.name, "seed": scenario.seed, "replications": len(simulated),
                "agrees": all(c["agrees"] for c in checks), "checks": checks,
                "latency_distribution": distribution, "notes": list(notes),
                "simulated": [m.summary() for m in simulated], "emulated": emulated.summary()}
    with staged(outdir) as staging:
        pngs = {"latency-cdf.png": figures.png_bytes(figures.compare_latency(runs)),
                "errors.png": figures.png_bytes(figures.compare_errors(runs))}
        for file, data in pngs.items():
            (staging / file).write_bytes(data)
        (staging / "validation.json").write_text(
            json.dumps(jsonable(document), sort_keys=True, indent=2) + "\n", encoding="utf-8")
        html = ENV.get_template("validation.html.j2").render(
            title=f"simnet validation: {scenario.name}", version=__version__, scenario=scenario,
            agrees=document["agrees"], checks=checks, distribution=distribution, notes=notes,
            replications=len(simulated), emulated_report=f"../{scenario.name}-emulated/report.html",
            figures=[{"file": f, "src": "data:image/png;base64," + base64.b64encode(d).decode()}
                     for f, d in pngs.items()])
        (staging / "validation.html").write_text(html, encoding="utf-8")
    return [Path(outdir) / f for f in VALIDATION_FILES]
