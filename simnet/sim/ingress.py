"""The load balancer in front of the routers: which router takes the next request, and its
optional capacity (requests carried at once, requests admitted per second), beyond which it
answers 503 itself, as a cloud load balancer out of capacity does."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from simnet.sim.router import Router


class LoadBalancer:
    """Picks a router per request (round-robin or random) and admits requests within its
    connection and rate limits (a token bucket holding one second's worth of requests)."""

    __slots__ = ("pick", "max_connections", "rate", "tokens", "refilled", "active")

    def __init__(self, s, routers: list[Router], rng: random.Random):
        self.pick = _picker(s, routers, rng)
        self.max_connections = s.ingress.max_connections
        self.rate = s.ingress.max_rate_per_s
        self.tokens = self.rate or 0.0
        self.refilled = 0.0
        self.active = 0

    @property
    def limited(self) -> bool:
        return self.max_connections is not None or self.rate is not None

    def admit(self, now: float) -> str | None:
        """Take one request in, or the reason it is turned away."""
        if self.max_connections is not None and self.active >= self.max_connections:
            return "load balancer connection limit"
        if self.rate is not None:
            self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens < 1:
                return "load balancer rate limit"
            self.tokens -= 1
        self.active += 1
        return None


def _picker(s, routers: list[Router], rng: random.Random) -> Callable[[], Router]:
    if len(routers) == 1:
        return itertools.repeat(routers[0]).__next__
    if s.ingress.balancing == "random":
        choice = rng.choice
        return lambda: choice(routers)
    return itertools.cycle(routers).__next__
