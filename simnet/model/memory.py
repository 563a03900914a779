"""Envoy sidecar memory and the container quota that must hold it.

Seed 002 (diego-release, Envoy 0e1d663): Envoy starts at 5-10 MB and uses ~30 KB per
concurrent connection, and that memory is not returned when connections drop, so the figure
that matters is the high-water mark. Operators add ``10 + 0.03 * N`` MB to every container
(``containers.proxy.additional_memory_allocation_mb``) for N peak router connections.
"""

from __future__ import annotations

from simnet.scenario.schema import EnvoyMemory, Proxy

KB_PER_MB = 1000  # the seed's rule treats 30 KB as 0.03 MB


def seed_rule_mb(peak_connections: int) -> int:
    """The seed's suggested additional allocation: 10 + 0.03*N, rounded to the nearest MB."""
    return round(10 + 0.03 * peak_connections)


def additional_allocation_mb(proxy: Proxy) -> int:
    """The MB the cell adds to every container's limit (0 without a proxy)."""
    if not proxy.enabled:
        return 0
    if proxy.additional_memory_allocation_mb == "auto":
        return seed_rule_mb(proxy.expected_peak_connections)
    return proxy.additional_memory_allocation_mb


def sidecar_memory_mb(params: EnvoyMemory, highwater_connections: int) -> float:
    """Envoy's resident memory after ``highwater_connections`` concurrent connections."""
    return params.base_mb + params.per_connection_kb * highwater_connections / KB_PER_MB


def connections_until_oom(params: EnvoyMemory, headroom_mb: float) -> int | None:
    """Concurrent connections the sidecar can reach before the container passes its quota."""
    if params.per_connection_kb == 0:
        return None
    spare = headroom_mb - params.base_mb
    return max(0, int(spare * KB_PER_MB / params.per_connection_kb) + 1)
