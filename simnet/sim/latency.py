"""Samplers for the scenario's latency distributions, in seconds of simulated time."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from simnet.scenario.schema import Constant, Exponential, LogNormal, Uniform

Sampler = Callable[[], float]


def sampler(dist: Constant | Exponential | LogNormal | Uniform, rng: random.Random) -> Sampler:
    """A zero-argument function drawing one delay (s) from ``dist`` with ``rng``."""
    if isinstance(dist, Constant):
        value = dist.value_ms / 1000
        return lambda: value
    if isinstance(dist, Exponential):
        rate = 1000 / dist.mean_ms
        return lambda: rng.expovariate(rate)
    if isinstance(dist, LogNormal):
        mu, sigma, lognormvariate = math.log(dist.median_ms / 1000), dist.sigma, rng.lognormvariate
        return lambda: lognormvariate(mu, sigma)
    low, high, uniform = dist.low_ms / 1000, dist.high_ms / 1000, rng.uniform
    return lambda: uniform(low, high)
