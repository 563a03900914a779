"""What an app can serve and what it is offered, before anything runs.

An instance serves ``concurrency`` requests at once, each for its service time, so an app's
capacity is instances x concurrency / mean service time. Its offered load is the open-loop
clients' rate to each route host, split as the routers split it: round-robin over the host's
endpoints (gorouter), or by the destinations' weights (the Istio gateway). Closed-loop users
offer only what their answers let them, so they never overload on their own and are left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from simnet.model.deployment import Deployment
from simnet.scenario.schema import App

__all__ = ["Load", "app_capacity_per_s", "offered_load"]


def app_capacity_per_s(app: App, instances: int | None = None) -> float:
    """Requests per second ``instances`` (default the app's) can serve at full utilisation."""
    n = app.instances if instances is None else instances
    mean_s = app.service_time.mean / 1000
    return math.inf if mean_s == 0 else n * app.concurrency / mean_s


@dataclass(frozen=True)
class Load:
    """An app's open-loop offered load against its capacity."""

    app: str
    offered_per_s: float
    capacity_per_s: float
    instances_needed: int  # the fewest instances whose capacity is above the offered load


def offered_load(d: Deployment) -> list[Load]:
    """Per app with running instances, the open-loop load the routes at t=0 send it."""
    s = d.scenario
    offered: dict[str, float] = defaultdict(float)
    for c in s.clients:
        if c.model != "open":
            continue
        endpoints = d.routes.get(c.host, ())
        weights = dict(d.weights.get(c.host, ()))
        if weights:  # the gateway picks a destination Service by weight, then a pod
            total = sum(weights.values())
            for service, w in weights.items():
                apps = {e.app for e in endpoints if e.service == service}
                for app in apps:
                    offered[app] += c.rate_per_s * w / total / len(apps)
        elif endpoints:  # round-robin over every endpoint of the host
            for e in endpoints:
                offered[e.app] += c.rate_per_s / len(endpoints)
    out = []
    for app in s.apps:
        if app.name not in offered:
            continue
        per_instance = app_capacity_per_s(app, 1)
        out.append(Load(app.name, offered[app.name], app_capacity_per_s(app),
                        math.floor(offered[app.name] / per_instance) + 1))
    return out
