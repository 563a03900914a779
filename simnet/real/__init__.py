"""The realize lens: real components for what the model derived -- the Envoy process,
network namespaces and the kernel's netfilter, real TLS handshakes (OpenSSL, Envoy, Go) --
and ``realize(deployment)``, which brings a deployment's sidecars up and tears them down."""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "realize": ("Realization", "RealizeError", "realize"),
    "envoy": ("EnvoyError", "EnvoyProcess", "envoy_path", "envoy_version", "validate"),
    "netns": ("CellTopology", "Namespace", "NamespaceGroup", "NetnsError", "Topology"),
    "netfilter": ("kernel_outcome", "load_rules"),
    "gotls": ("GoError",),
})
