"""Capacity planning for the Envoy sidecar's memory: the numbers a planner takes to a review.

What ``containers.proxy.additional_memory_allocation_mb`` should be for a peak connection
count, where seed 002's ``10 + 0.03*N`` rule falls short of today's Envoy, what an allocation
costs a foundation, and what a too-small allocation does to traffic (by simulating it). Built
on :mod:`simnet.model.memory`; the notebooks call these functions and hold no model of their
own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from simnet.model.envoy import LISTENER_KINDS
from simnet.model.memory import (
    DEFAULT_MARGIN,
    KB_PER_MB,
    Calibration,
    SEED_RULE,
    Footprint,
    instances_that_fit,
    packaged_calibration,
    recommended_allocation_mb,
    seed_rule_mb,
)
from simnet.scenario.schema import Scenario

MB_PER_GB = 1024  # Diego counts cell and container memory in MiB; a GB here is 1024 of them


# --- the seed's rule against the calibrated model ------------------------------------------


@dataclass(frozen=True)
class RuleComparison:
    """One listener kind at one peak connection count: today's Envoy against the seed's rule."""

    kind: str
    peak_connections: int
    predicted_mb: float  # the calibrated Envoy's private memory at the high-water mark
    recommended_mb: int  # recommended_allocation_mb: the prediction plus the margin, rounded up
    seed_rule_mb: int  # 10 + 0.03*N, rounded

    @property
    def seed_short_mb(self) -> float:
        """How far the seed's rule falls below the predicted memory (negative: it is enough)."""
        return self.predicted_mb - self.seed_rule_mb

    @property
    def seed_too_small(self) -> bool:
        return self.seed_rule_mb < self.predicted_mb


def compare_rules(peak_connections: int, kinds: Iterable[str] = LISTENER_KINDS,
                  calibration: Calibration | None = None, mappings: int = 1,
                  margin: float = DEFAULT_MARGIN) -> list[RuleComparison]:
    """Per listener kind: predicted memory, recommended allocation and the seed's rule at N."""
    if peak_connections < 0:
        raise ValueError(f"peak connections must be >= 0, not {peak_connections}")
    cal = calibration or packaged_calibration()
    rows = []
    for kind in kinds:
        fp = cal.footprint(kind, mappings)
        rows.append(RuleComparison(kind, peak_connections, fp.memory_mb(peak_connections),
                                   recommended_allocation_mb(fp, peak_connections, margin),
                                   seed_rule_mb(peak_connections)))
    return rows


def seed_rule_suffices_from(fp: Footprint) -> int | None:
    """The smallest peak N from which the seed's 10 + 0.03*N (before rounding) holds the
    footprint's memory at N and at every larger N; None when no N does (an Envoy that takes
    more than 30 KB per connection outgrows the rule however many connections it holds)."""
    slower = SEED_RULE.per_connection_kb - fp.per_connection_kb  # KB per connection the rule gains
    gap = fp.base_mb - SEED_RULE.base_mb  # MB the rule lacks at N = 0
    if gap <= 0 and slower >= 0:
        return 0
    if slower <= 0:
        return None
    n = math.ceil(gap * KB_PER_MB / slower)
    while n > 0 and SEED_RULE.memory_mb(n - 1) >= fp.memory_mb(n - 1):
        n -= 1  # float rounding in the division: step back to the first N that holds
    while SEED_RULE.memory_mb(n) < fp.memory_mb(n):
        n += 1
    return n


# --- the calibration against its own readings ----------------------------------------------


@dataclass(frozen=True)
class FitError:
    """One reading of the calibration next to what the fitted line predicts for it."""

    kind: str
    connections: int
    measured_mb: float
    predicted_mb: float

    @property
    def relative_error(self) -> float:
        """(predicted - measured) / measured: positive when the model over-predicts."""
        return (self.predicted_mb - self.measured_mb) / self.measured_mb


def fit_errors(calibration: Calibration | None = None) -> list[FitError]:
    """Every (connections, private MB) reading of every kind against the fitted model."""
    cal = calibration or packaged_calibration()
    return [FitError(kind, n, mb, cal.footprint(kind).memory_mb(n))
            for kind, k in cal.kinds.items() for n, mb in k.points]


# --- a foundation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundationCost:
    """What an additional allocation costs a foundation of identical cells running instances
    of one size: the memory it reserves, and the instances the cells still hold."""

    cells: int
    cell_memory_mb: int
    instances: int
    quota_mb: int
    additional_mb: int

    @property
    def extra_gb(self) -> float:
        """Memory reserved for sidecars across the instances (Diego never overcommits for it)."""
        return self.additional_mb * self.instances / MB_PER_GB

    @property
    def fit_without(self) -> int:
        """Instances the cells hold with no additional allocation."""
        return instances_that_fit(self.cells, self.cell_memory_mb, self.quota_mb, 0)

    @property
    def fit_with(self) -> int:
        """Instances the cells hold with the additional allocation."""
        return instances_that_fit(self.cells, self.cell_memory_mb, self.quota_mb,
                                  self.additional_mb)

    @property
    def fits(self) -> bool:
        return self.instances <= self.fit_with

    def cells_needed(self, additional_mb: int | None = None) -> int | None:
        """Cells of this size that hold every instance (None: one instance fits no cell)."""
        extra = self.additional_mb if additional_mb is None else additional_mb
        per_cell = instances_that_fit(1, self.cell_memory_mb, self.quota_mb, extra)
        if per_cell == 0:
            return None if self.instances else 0
        return math.ceil(self.instances / per_cell)


def foundation_cost(cells: int, cell_memory_mb: int, instances: int, quota_mb: int,
                    additional_mb: int) -> FoundationCost:
    """The cost of ``additional_mb`` for ``instances`` of ``quota_mb`` on ``cells`` cells."""
    for name, value in (("cells", cells), ("cell_memory_mb", cell_memory_mb),
                        ("instances", instances), ("quota_mb", quota_mb),
                        ("additional_mb", additional_mb)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, not {value}")
    return FoundationCost(cells, cell_memory_mb, instances, quota_mb, additional_mb)


# --- what a too-small allocation does --------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """One simulated run of a scenario with one additional allocation."""

    additional_mb: int
    completed: int
    errors: int  # non-200 responses
    oom_kills: int
    peak_connections: int  # the most any sidecar held
    peak_envoy_mb: float  # the most memory any sidecar reached

    @property
    def error_rate(self) -> float:
        return self.errors / self.completed if self.completed else 0.0


def with_allocation(scenario: Scenario, additional_mb: int) -> Scenario:
    """The scenario with ``containers.proxy.additional_memory_allocation_mb`` set."""
    if additional_mb < 0:
        raise ValueError(f"an additional allocation must be >= 0, not {additional_mb}")
    proxy = scenario.proxy.model_copy(update={"additional_memory_allocation_mb": additional_mb})
    return scenario.model_copy(update={"proxy": proxy})


def allocation_sweep(scenario: Scenario, allocations: Sequence[int]) -> list[SweepPoint]:
    """The sweep over ``proxy.additional_memory_allocation_mb``, each point run as a sweep
    runs it (``simnet.sweep.run.run_point``) with the scenario's own seed, so every point sees
    the same traffic: OOM kills and error responses against the allocation."""
    from simnet.sweep.point import run_point  # the simulator: only when sweeping

    data = scenario.model_dump(mode="json")
    points = []
    for extra in allocations:
        with_allocation(scenario, extra)  # refuses a negative allocation
        r = run_point(data, {"proxy.additional_memory_allocation_mb": extra}, scenario.seed)
        points.append(SweepPoint(extra, r["completed"], r["completed"] - r["ok"], r["oom_kills"],
                                 r["peak_connections"], r["peak_envoy_mb"]))
    return points
