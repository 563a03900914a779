"""Run a sweep: an executor (``simnet.sweep.executors``) runs the points
``simnet.sweep.source`` checked (each as ``simnet.sweep.point.run_point``); each result is
stored as it comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from simnet.sweep.design import Point
from simnet.sweep.executors import Executor
from simnet.sweep.store import Store


def run(data: dict, todo: list[Point], store: Store, executor: Executor,
        progress: Callable[[int, int], None] | None = None) -> Iterator[Point]:
    """Run ``todo`` on ``executor``, storing each run as it ends (whatever order they end in)."""
    failed = 0
    for p, results, error in executor.results(data, todo):
        store.record(p, results, error)
        failed += error is not None
        if progress:
            progress(1, failed)
        yield p
