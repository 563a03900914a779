"""Samplers for the scenario's latency distributions, in seconds of simulated time.

Each sampler is a C-level callable (``functools.partial`` of a ``random.Random`` method, or
``itertools.repeat(...).__next__`` for a constant): drawing a delay costs no Python frame of
ours, which matters at millions of draws per run.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from functools import partial

from simnet.scenario.schema import Constant, Exponential, LogNormal, Uniform

Sampler = Callable[[], float]


def sampler(dist: Constant | Exponential | LogNormal | Uniform, rng: random.Random) -> Sampler:
    """A zero-argument function drawing one delay (s) from ``dist`` with ``rng``."""
    if isinstance(dist, Constant):
        return itertools.repeat(dist.value_ms / 1000).__next__
    if isinstance(dist, Exponential):
        return partial(rng.expovariate, 1000 / dist.mean_ms)
    if isinstance(dist, LogNormal):
        return partial(rng.lognormvariate, math.log(dist.median_ms / 1000), dist.sigma)
    return partial(rng.uniform, dist.low_ms / 1000, dist.high_ms / 1000)


def with_overhead(base: Sampler, overhead: Constant | Exponential | LogNormal | Uniform,
                  rng: random.Random) -> Sampler:
    """``base`` plus half a draw of a component's round-trip processing time (the scenario's
    ``latency.overhead``): the hop is crossed twice with one draw, so the component's whole
    time is charged per request. ``base`` itself when there is none."""
    if isinstance(overhead, Constant) and overhead.value_ms == 0:
        return base
    extra = sampler(overhead, rng)
    return lambda: base() + extra() / 2
