"""The emulate lens: a derived deployment run on this machine's real components in real time
(namespaces, the kernel's NetIn rules, real Envoys, the twin's apps, routers and load generator),
observed as the ``Metrics`` a simulated run gives, so the two can be held side by side."""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "run": ("Emulation", "emulate"),
    "observed": ("Observed", "Sample", "metrics_of"),
    "plan": ("app_config", "load_config", "router_config", "routes_table"),
})
