"""Scenario sweeps: a design of points over dotted scenario parameters, run by an executor,
stored point by point so a killed sweep resumes exactly."""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "design": ("Point", "Sweep", "points"),
    "point": ("applied", "run_point"),
    "run": ("run",),
    "store": ("Store",),
    "executors": ("DaskExecutor", "LocalExecutor", "executor"),
    "source": ("checked_points", "sweep_source"),
})
