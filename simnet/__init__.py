"""simnet: model the network path of sidecar-proxy platforms and check it against real components."""

__version__ = "0.1.0"
