"""Where a sweep's runs execute: local worker processes, or a Dask cluster.

Both give the same interface -- ``results(data, todo)`` yields ``(point, results, error)`` as
each run ends, in completion order -- so the store and the progress bar do not know which ran
them. Each run is ``_safe(data, params, seed)``: the same function, the same bytes in and out,
so a point's results do not depend on the executor. The local executor uses processes (SimPy is
pure Python: threads would share one interpreter lock).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Protocol

from simnet.errors import Problem, SimnetError
from simnet.sweep.point import run_point
from simnet.sweep.design import Point

Outcome = tuple[Point, dict | None, str | None]  # a run, its results or its error
LOCAL_CLUSTER_CONFIG = {
    # forked workers start in a tenth of the time and inherit simnet already imported, as the
    # local executor's process pool does on Linux
    "distributed.worker.multiprocessing-method": "fork" if sys.platform == "linux" else "spawn",
    # the statistical profiler samples every worker's stack each 10 ms, and memory and system
    # monitors poll several times a second: together about 10% of a sweep's CPU on 2 cores
    # (bench/bench_sweep.py), for a dashboard nobody looks at here
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "2s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "1s",
}
CONNECT_TIMEOUT_S = 10  # how long to look for a Dask scheduler before saying it is unreachable


def _safe(data: dict, params: dict, seed: int) -> tuple[dict | None, str | None]:
    """One run's results, or its error as one line: a point that raises does not stop a sweep."""
    try:
        return run_point(data, params, seed), None
    except Exception as e:
        return None, " ".join(f"{type(e).__name__}: {e}".split())


class Executor(Protocol):
    workers: int

    def results(self, data: dict, todo: list[Point]) -> Iterator[Outcome]: ...


class LocalExecutor:
    """``workers`` processes on this machine; with 1, runs in this process (no pickling)."""

    def __init__(self, workers: int = 1):
        self.workers = workers

    def results(self, data: dict, todo: list[Point]) -> Iterator[Outcome]:
        if self.workers == 1:
            for p in todo:
                yield (p, *_safe(data, p.params, p.seed))
            return
        with ProcessPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(_safe, data, p.params, p.seed): p for p in todo}
            for f in as_completed(futures):
                yield (futures[f], *f.result())


class DaskExecutor:
    """A Dask distributed cluster: the scheduler at ``address``, or, without one, a LocalCluster
    of ``workers`` single-threaded worker processes started here and stopped afterwards.

    Each run is one task carrying the scenario (a few kB): tasks without dependencies wait at
    the scheduler and go to whichever worker frees up first, as in a local process pool (a
    scattered scenario would make them depend on it and be assigned to workers up front).
    Workers of a remote cluster need simnet installed at the same version (the store key
    includes it).
    """

    def __init__(self, address: str | None = None, workers: int = 1):
        try:
            import distributed
        except ImportError:
            raise SimnetError(Problem("--executor", None, "dask", "the Dask executor needs "
                                      "the dask extra: pip install 'simnet[dask]'")) from None
        self._distributed = distributed
        self.address, self.workers = address, workers

    def results(self, data: dict, todo: list[Point]) -> Iterator[Outcome]:
        d = self._distributed
        cluster = None
        if self.address is None:
            import dask

            with dask.config.set(LOCAL_CLUSTER_CONFIG):
                cluster = d.LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                         processes=True, dashboard_address=":0")
        try:
            client = d.Client(cluster if cluster is not None else self.address,
                              timeout=f"{CONNECT_TIMEOUT_S}s")
        except OSError as e:  # no scheduler at that address
            if cluster is not None:
                cluster.close()
            raise SimnetError(Problem("--scheduler", None, "", f"cannot reach the Dask "
                                      f"scheduler at {self.address}: {e}")) from None
        try:
            with client:
                self.workers = max(1, len(client.scheduler_info()["workers"]))
                futures = {client.submit(_safe, data, p.params, p.seed, pure=False,
                                         key=f"simnet-run-{p.index}-{p.seed}"): p for p in todo}
                for f in d.as_completed(futures):
                    yield (futures[f], *f.result())
        finally:
            if cluster is not None:
                cluster.close()


def executor(kind: str, workers: int, scheduler: str | None = None) -> Executor:
    """The executor ``simnet sweep --executor`` names."""
    if kind == "dask":
        return DaskExecutor(scheduler, workers)
    if scheduler is not None:
        raise SimnetError(Problem("--scheduler", None, "", "only the dask executor takes a "
                                  "scheduler address (add --executor dask)"))
    return LocalExecutor(workers)
