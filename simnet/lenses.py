"""One scenario through the lenses: load -> derive -> simulate (-> report), derive -> realize,
derive -> emulate (-> report), derive -> analyze.

Every entry point goes through these functions: ``simnet run`` and ``compare``, sweeps (each
point), planning's allocation sweep, the questions and the analysis (derive), and the
conformance suite (realize). Derive problems come back located in the scenario file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simnet.errors import SimnetError
from simnet.model import deployment as model
from simnet.model.deployment import Deployment, DeriveError
from simnet.model.ports import instance_env
from simnet.scenario.load import SourceMap, load_scenario
from simnet.scenario.schema import Scenario
from simnet.sim import run as sim
from simnet.sim.metrics import Metrics

if TYPE_CHECKING:
    from simnet.real.realize import Realization

__all__ = ["RunOutput", "calibrate_hops", "compare", "derive", "deployment_facts",
           "emulate_and_report", "load", "load_and_derive", "realize", "run", "scaled", "simulate",
           "simulate_and_report", "validate", "ValidationOutput"]


@dataclass
class RunOutput:
    """A simulated run and the report it wrote."""

    scenario: Scenario
    deployment: Deployment
    metrics: Metrics
    wall_s: float
    report_files: list[Path]
    emulation: dict | None = None  # an emulated run's own facts (Observed.facts)


def load(path: str | Path) -> tuple[Scenario, SourceMap]:
    """A scenario file, checked, with the source map that locates its elements."""
    return load_scenario(path)


def derive(scenario: Scenario, source: SourceMap | None = None) -> Deployment:
    """The derived deployment. With the scenario's ``source``, derive problems become
    ``FILE:LINE`` errors against its file (``SimnetError``); without, a ``DeriveError``."""
    try:
        return model.derive(scenario)
    except DeriveError as e:
        if source is None:
            raise
        raise SimnetError([source.problem(loc, msg) for loc, msg in e.problems]) from None


def load_and_derive(path: str | Path) -> tuple[Scenario, Deployment]:
    """Load a scenario file and derive it, every problem located in the file."""
    scenario, source = load(path)
    return scenario, derive(scenario, source)


def simulate(deployment: Deployment, progress: Callable[[float], None] | None = None) -> Metrics:
    """Run the scenario's traffic through the deployment in simulated time."""
    return sim.simulate(deployment, progress)


def realize(deployment: Deployment, directory: Path | None = None, *,
            guids: list[str] | None = None) -> Realization:
    """The deployment's real components (``simnet.real.realize``): credentials and bootstraps
    written; ``validate()`` and ``start(guid)`` on the result; torn down on close."""
    from simnet.real.realize import realize as real  # subprocess, namespaces: only when asked

    return real(deployment, directory, guids=guids)


def deployment_facts(d: Deployment) -> dict:
    """Derived facts worth showing next to the results: the data plane the run used."""
    return {
        "additional_memory_allocation_mb": d.additional_mb,
        "backend_tls_verdict": d.backend_verdict.name,
        "routes": {h: [f"{e.address[0]}:{e.address[1]} ({e.app} {e.guid}{', tls' if e.tls else ''})"
                       for e in eps] for h, eps in sorted(d.routes.items())},
        "route_weights": {h: dict(w) for h, w in sorted(d.weights.items())},
        "instances": [
            {"guid": i.guid, "app": i.app, "index": i.index, "cell": i.cell,
             "container_ip": i.container_ip,
             "proxy_ports": {str(m.proxy): m.app for m in i.proxy.mappings} if i.proxy else {},
             "envoy_admin": f"127.0.0.1:{i.proxy.admin}" if i.proxy else None,
             **instance_env(list(i.cf_instance_ports), i.cell_ip)}
            for i in d.instances
        ],
    }


def run(path: str | Path, reports_dir: Path,
        progress: Callable[[float], None] | None = None) -> RunOutput:
    """Load, derive, simulate and write reports/<scenario name>/."""
    return simulate_and_report(*load_and_derive(path), reports_dir, progress)


def simulate_and_report(scenario: Scenario, deployment: Deployment, reports_dir: Path,
                        progress: Callable[[float], None] | None = None) -> RunOutput:
    """Simulate a derived deployment and write reports/<scenario name>/."""
    t0 = time.perf_counter()
    metrics = simulate(deployment, progress)
    wall = time.perf_counter() - t0
    return _report(deployment, metrics, wall, reports_dir / scenario.name)


def _report(deployment: Deployment, metrics: Metrics, wall: float, directory: Path,
            extra: dict | None = None) -> RunOutput:
    from simnet.report.render import write_report  # matplotlib is slow to import: only now
    from simnet import __version__
    from simnet.model.reachability import reach_matrix  # networkx, only when reporting

    reach = reach_matrix(deployment)
    facts = {"simnet_version": __version__, **deployment_facts(deployment),
             "reachability": {"limits": list(reach.limits), "ports": reach.facts()},
             # each push or route mapping: when routers had it, and the 404/503s meanwhile
             "control_plane_changes": metrics.windows(deployment.changes),
             **(extra or {}),
             "wall_s": round(wall, 3)}  # wall time: shown in the HTML, kept out of summary.json
    files = write_report(deployment, metrics, directory, facts=facts, reach=reach)
    return RunOutput(deployment.scenario, deployment, metrics, wall, files)


def scaled(scenario: Scenario, *, duration_s: float | None = None,
           rate_scale: float = 1.0) -> Scenario:
    """The scenario cut to ``duration_s`` and with every client's load times ``rate_scale``
    (open-loop rates, closed-loop users rounded up): what ``emulate`` and ``validate`` run."""
    import math

    clients = [c.model_copy(update={
        "rate_per_s": None if c.rate_per_s is None else c.rate_per_s * rate_scale,
        "users": None if c.users is None else max(1, math.ceil(c.users * rate_scale))})
        for c in scenario.clients]
    return scenario.model_copy(update={"clients": clients,
                                       "duration_s": duration_s or scenario.duration_s})


def emulate_and_report(scenario: Scenario, deployment: Deployment, reports_dir: Path,
                       progress: Callable[[float], None] | None = None) -> RunOutput:
    """Run the derived deployment on real components and write
    reports/<scenario name>-emulated/ in the schema a simulated run writes."""
    from simnet.emulate import emulate, metrics_of  # namespaces, processes: only when asked

    observed = emulate(deployment, progress=progress)
    facts = observed.facts()
    out = _report(deployment, metrics_of(deployment, observed), observed.wall_s,
                  reports_dir / f"{scenario.name}-emulated", {"emulation": facts})
    out.emulation = facts
    return out


def calibrate_hops(scenario: Scenario, duration_s: float = 6.0):
    """What this machine's real components add to each request of the scenario
    (``emulate.hops``): a ``HopCalibration`` whose ``overhead()`` is a ``latency.overhead``."""
    from simnet.emulate import emulate  # namespaces, processes: only when asked
    from simnet.emulate.hops import HopCalibration, calibration_scenario, machine, parts_of

    d = derive(calibration_scenario(scenario, duration_s))
    observed = emulate(d)
    return HopCalibration(scenario.name, duration_s, parts_of(d, observed.load["requests"]),
                          machine())


def compare(paths: list[str | Path], reports_dir: Path,
            progress: Callable[[float], None] | None = None) -> tuple[list[RunOutput], list[Path]]:
    """Run each scenario (each writes its own report), then write the side-by-side report
    ``reports/<a>-vs-<b>/``. Every scenario is loaded and derived before anything runs, so bad
    input in any of them stops the comparison before it starts."""
    from simnet.report.compare import comparison_name, write_comparison

    derived = [load_and_derive(p) for p in paths]
    outputs = []
    for k, (scenario, deployment) in enumerate(derived):
        step = (lambda f, k=k: progress((k + f) / len(derived))) if progress else None
        outputs.append(simulate_and_report(scenario, deployment, reports_dir, step))
    files = write_comparison([(o.scenario, o.metrics) for o in outputs],
                             reports_dir / comparison_name([o.scenario for o in outputs]))
    return outputs, files


@dataclass
class ValidationOutput:
    """A simulation held to its emulated twin: the runs, the checks and the page written."""

    simulated: list[Metrics]
    emulated: RunOutput
    checks: list
    distribution: dict
    files: list[Path]
    notes: list[str]

    @property
    def agrees(self) -> bool:
        from simnet.emulate.validate import verdict

        return verdict(self.checks)


def validate(scenario: Scenario, deployment: Deployment, reports_dir: Path, *,
             replications: int = 3,
             progress: Callable[[float], None] | None = None) -> ValidationOutput:
    """Simulate the scenario with ``replications`` seeds (seed, seed+1, ...), emulate it once, and
    write reports/<name>-validation/ (validation.json, validation.html) beside the emulated
    run's own report."""
    from simnet.emulate.validate import checks, distribution, held_to_twin, to_json
    from simnet.report.validation import write_validation

    scenario, notes = held_to_twin(scenario)
    if notes:  # what the emulation runs does not change; what the simulation predicts does
        deployment = derive(scenario)
    simulated = [simulate(deployment if k == 0 else derive(
        scenario.model_copy(update={"seed": scenario.seed + k}))) for k in range(replications)]
    emulated = emulate_and_report(scenario, deployment, reports_dir, progress)
    results = checks(simulated, emulated.metrics, emulated.emulation)
    dist = distribution(simulated, emulated.metrics, scenario.seed)
    files = write_validation(scenario, simulated, emulated.metrics, to_json(results), dist,
                             reports_dir / f"{scenario.name}-validation", notes)
    return ValidationOutput(simulated, emulated, results, dist, files, notes)
