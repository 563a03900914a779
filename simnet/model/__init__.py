"""The pure model: everything derived from a scenario, with no time and no I/O.

``derive(scenario)`` gives the ``Deployment``, the only source of derived facts downstream;
the platform objects answer what differs between Diego, Istio and BOSH; the timeline's events
are a tagged union; the rest are the domain models (ports, memory, CPU, TLS, netfilter, capture,
reachability, routing) the deployment is made of.
"""

from simnet.facade import lazy

__all__, __getattr__, __dir__ = lazy(__name__, {
    "deployment": ("Deployment", "DeriveError", "derive"),
    "placement": ("Address", "Endpoint", "Instance", "Listener", "Weights"),
    "platform": ("Bosh", "Diego", "Istio", "Platform", "platform_of"),
    "timeline": ("CertExpired", "CertRotated", "CertWithoutGuid", "Change", "Event", "LatencyChange", "RouterDown",
                 "RouterUp", "RoutesChanged", "Start", "Stop"),
    "memory": ("Calibration", "Footprint", "additional_allocation_mb", "footprint", "packaged_calibration"),
    "cpu": ("CpuCalibration", "KindCpu", "packaged_cpu_calibration"),
    "ports": ("ProxyPorts", "cf_instance_ports_json", "proxy_ports"),
    "tls": ("Verdict",),
    "reachability": ("deployment_graph", "reach_matrix", "reachability"),
})
