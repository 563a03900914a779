"""The simulate lens: SimPy processes for clients, the load balancer, routers, sidecars and
apps, run over a derived ``Deployment``; what they observe is a ``Metrics``."""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "run": ("Network", "simulate"),
    "metrics": ("InstanceSeries", "Metrics"),
    "router": ("Router",),
    "sidecar": ("Sidecar",),
})
