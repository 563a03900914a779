"""A sweep's design: which values each swept parameter takes at each point (pure).

Parameters are named by their dotted path in the scenario (``routers.count``,
``apps.0.instances``) and take a list of values, an integer ``range`` or a distribution
(``uniform`` / ``loguniform`` / ``choice``). ``grid`` is the cross product of lists and ranges;
``random`` draws ``samples`` points; ``lhs`` draws a Latin hypercube of ``samples`` points (each
parameter's range cut into ``samples`` equal strata, one point per stratum, strata paired at
random). Every point is run ``replications`` times with its own seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntRange(_Strict):
    """Integers from ``start`` to ``stop`` inclusive, every ``step``."""

    range: list[int] = Field(min_length=2, max_length=3, description="[start, stop(, step)]")

    def values(self) -> list[int]:
        start, stop, *step = self.range
        return list(range(start, stop + 1, step[0] if step else 1))


class Uniform(_Strict):
    uniform: list[float] = Field(min_length=2, max_length=2)

    def at(self, u: float) -> float:
        low, high = self.uniform
        return low + u * (high - low)


class LogUniform(_Strict):
    loguniform: list[Annotated[float, Field(gt=0)]] = Field(min_length=2, max_length=2)

    def at(self, u: float) -> float:
        low, high = self.loguniform
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


class Choice(_Strict):
    choice: list[Any] = Field(min_length=1)

    def at(self, u: float) -> Any:
        return self.choice[min(int(u * len(self.choice)), len(self.choice) - 1)]


def _kind(v: Any) -> str | None:
    """Which form a parameter's values take: a list, or a mapping named by its one key."""
    if isinstance(v, list):
        return "list"
    for model, tag in ((IntRange, "range"), (Uniform, "uniform"), (LogUniform, "loguniform"),
                       (Choice, "choice")):
        if isinstance(v, model):  # serializing a validated sweep
            return tag
    if isinstance(v, dict):
        return next((k for k in ("range", "uniform", "loguniform", "choice") if k in v), None)
    return None


Values = Annotated[Union[Annotated[list[Any], Tag("list")], Annotated[IntRange, Tag("range")],
                         Annotated[Uniform, Tag("uniform")], Annotated[LogUniform, Tag("loguniform")],
                         Annotated[Choice, Tag("choice")]],
                   Discriminator(_kind, custom_error_type="values",
                                 custom_error_message="expected a list of values, or one of "
                                 "range, uniform, loguniform, choice")]


METRICS = ("issued", "completed", "ok", "error_rate", "p50_ms", "p99_ms", "misdelivered",
           "retries", "oom_kills", "peak_envoy_mb", "additional_memory_mb", "memory_headroom_mb",
           "peak_connections", "offered_per_s", "throughput_per_s", "instances", "refused")
"""What each run reports (``simnet.sweep.run.run_point``): what constraints and objectives name."""

Metric = Literal[METRICS]  # type: ignore[valid-type]


class Bound(_Strict):
    min: float | None = None
    max: float | None = None

    def holds(self, value: float | None) -> bool:
        return value is not None and (self.min is None or value >= self.min) \
            and (self.max is None or value <= self.max)


class Best(_Strict):
    """How the report picks the best setting: the point whose mean ``minimize`` (or
    ``maximize``) metric is best among points where every run meets every bound."""

    minimize: Metric | None = None
    maximize: Metric | None = None
    subject_to: dict[Metric, Bound] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_objective(self) -> "Best":
        if (self.minimize is None) == (self.maximize is None):
            raise ValueError("name one of minimize or maximize")
        return self


class Sweep(_Strict):
    """The ``sweep:`` section of a scenario."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                             description="reports/<name>/; default <scenario name>-sweep.")
    design: Literal["grid", "random", "lhs"] = "grid"
    samples: int | None = Field(default=None, ge=1, le=100_000,
                                description="Points for random and lhs designs.")
    replications: int = Field(default=1, ge=1, le=1000)
    parameters: dict[str, Values] = Field(min_length=1)
    best: Best = Field(default_factory=lambda: Best(minimize="error_rate"),
                       description="The setting the report recommends.")

    @model_validator(mode="after")
    def _coherent(self) -> "Sweep":
        if self.design == "grid":
            for path, v in self.parameters.items():
                if isinstance(v, (Uniform, LogUniform)):
                    raise ValueError(f"{path}: a grid needs a list or a range, not a distribution")
                if isinstance(v, list) and not v:
                    raise ValueError(f"{path}: an empty list of values")
        elif self.samples is None:
            raise ValueError(f"design {self.design} needs samples")
        return self


@dataclass(frozen=True)
class Point:
    """One run of the sweep: parameter values, replication and the scenario seed it runs with."""

    index: int
    params: dict[str, Any]
    replication: int
    seed: int

    def key(self, version: str) -> str:
        """Identity in the result store: canonical parameters, seed and simnet version."""
        canonical = json.dumps({"params": self.params, "seed": self.seed, "version": version},
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _levels(v: Values) -> list[Any]:
    if isinstance(v, list):
        return v
    if isinstance(v, IntRange):
        return v.values()
    return v.choice


def _draw(v: Values, u: float) -> Any:
    if isinstance(v, (Uniform, LogUniform, Choice)):
        return v.at(u)
    levels = _levels(v)
    return levels[min(int(u * len(levels)), len(levels) - 1)]


def _unit_points(design: str, n: int, dims: int, rng: random.Random) -> list[list[float]]:
    if design == "random":
        return [[rng.random() for _ in range(dims)] for _ in range(n)]
    # Latin hypercube: one draw in each of n strata per dimension, strata shuffled per dimension
    columns = []
    for _ in range(dims):
        strata = [(k + rng.random()) / n for k in range(n)]
        rng.shuffle(strata)
        columns.append(strata)
    return [[columns[d][i] for d in range(dims)] for i in range(n)]


def points(sweep: Sweep, base_seed: int) -> list[Point]:
    """Every run of the sweep, in a fixed order; seeds differ per point and replication."""
    names = list(sweep.parameters)
    if sweep.design == "grid":
        combos: list[dict[str, Any]] = [{}]
        for name in names:
            combos = [{**c, name: v} for c in combos for v in _levels(sweep.parameters[name])]
    else:
        rng = random.Random(f"{base_seed}:sweep:{sweep.design}")
        combos = [{name: _draw(sweep.parameters[name], u) for name, u in zip(names, unit)}
                  for unit in _unit_points(sweep.design, sweep.samples, len(names), rng)]
    out = []
    for i, params in enumerate(combos):
        for r in range(sweep.replications):
            seed = int(hashlib.sha256(f"{base_seed}/{i}/{r}".encode()).hexdigest()[:8], 16)
            out.append(Point(len(out), params, r, seed))
    return out
