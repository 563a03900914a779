"""Run a sweep: apply each point to the scenario, simulate it, store its results.

Points are checked before anything runs (a bad path or value is reported at the sweep
parameter's line). The local executor runs one point per task in worker processes (SimPy is
pure Python, so processes, not threads) and streams results back as they finish.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simnet.errors import Problem, SimnetError
from simnet.scenario.load import SourceMap, _message, _plain
from simnet.scenario.schema import Scenario
from simnet.sweep.design import Point, points
from simnet.sweep.store import Store


def applied(data: dict, params: dict[str, Any]) -> dict:
    """The scenario data with each dotted path set to its value (missing mappings created)."""
    out = copy.deepcopy(data)
    for path, value in params.items():
        node: Any = out
        keys = path.split(".")
        for k, key in enumerate(keys):
            last = k == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise KeyError(f"{'.'.join(keys[:k]) or 'the scenario'} has no item {key}")
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    node = node.setdefault(key, {})
            else:
                raise KeyError(f"{'.'.join(keys[:k])} is a value, not a section")
    return out


def sweep_source(path: str | Path) -> tuple[Scenario, dict, SourceMap]:
    """The scenario with its sweep, its data without the sweep, and where things are."""
    from simnet.scenario.load import load_scenario

    scenario, source = load_scenario(path)
    if scenario.sweep is None:
        raise SimnetError(Problem(str(path), 1, "sweep", "the scenario has no sweep: section"))
    data = _plain(source.doc)
    data.pop("sweep")
    return scenario, data, source


def checked_points(scenario: Scenario, data: dict, source: SourceMap) -> list[Point]:
    """Every point, each checked as a scenario; problems at the sweep parameter's line."""
    problems: dict[tuple, Problem] = {}
    pts = points(scenario.sweep, scenario.seed)
    for p in pts:
        try:
            Scenario.model_validate(applied(data, {**p.params, "seed": p.seed}), strict=True)
        except KeyError as e:
            for name in p.params:
                try:
                    applied(data, {name: p.params[name]})
                except KeyError:
                    loc = ("sweep", "parameters", name)
                    problems.setdefault(loc, source.problem(loc, str(e).strip("'\"")))
        except ValidationError as err:
            for e in err.errors(include_url=False):
                where = ".".join(map(str, e["loc"]))
                name = next((n for n in p.params if where == n or where.startswith(n + ".")
                             or n.startswith(where + ".")), None)
                loc = ("sweep", "parameters", name) if name else tuple(e["loc"])
                problems.setdefault(loc, source.problem(loc, (
                    f"{_message(e, tuple(e['loc']))} (value {p.params.get(name)!r})"
                    if name else _message(e, tuple(e["loc"])))))
    if problems:
        raise SimnetError(list(problems.values()))
    return pts


def run_point(data: dict, params: dict, seed: int) -> dict:
    """Simulate one point; the numbers a sweep compares."""
    from simnet.model.deployment import derive
    from simnet.sim.run import simulate

    s = Scenario.model_validate(applied(data, {**params, "seed": seed}), strict=True)
    m = simulate(derive(s))
    summary = m.summary()
    completed = m.completed
    return {
        "issued": m.issued, "completed": completed, "ok": m.outcomes.get(200, 0),
        "error_rate": round(1 - m.outcomes.get(200, 0) / completed, 6) if completed else None,
        "p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
        "misdelivered": m.misdelivered, "retries": m.retries,
        "oom_kills": sum(i.oom_kills for i in m.instances),
        "peak_envoy_mb": round(max((i.peak_memory_mb for i in m.instances), default=0.0), 6),
    }


def _safe(data: dict, params: dict, seed: int) -> tuple[dict | None, str | None]:
    try:
        return run_point(data, params, seed), None
    except Exception as e:  # a point that raises is recorded as failed, the sweep goes on
        return None, " ".join(f"{type(e).__name__}: {e}".split())  # one CSV-friendly line


def run_local(data: dict, todo: list[Point], store: Store, workers: int = 1,
              progress: Callable[[int, int], None] | None = None) -> Iterator[Point]:
    """Run ``todo`` in ``workers`` processes (1: in this process), storing each as it ends."""
    failed = 0
    if workers == 1:
        for p in todo:
            results, error = _safe(data, p.params, p.seed)
            store.record(p, results, error)
            failed += error is not None
            if progress:
                progress(1, failed)
            yield p
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_safe, data, p.params, p.seed): p for p in todo}
        for f in as_completed(futures):
            p = futures[f]
            results, error = f.result()
            store.record(p, results, error)
            failed += error is not None
            if progress:
                progress(1, failed)
            yield p
