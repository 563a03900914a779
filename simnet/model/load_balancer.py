"""The load balancer in front of the routers as an Envoy bootstrap (the emulated twin's).

An HTTP load balancer that spreads requests over the routers (``ingress.balancing``:
round-robin or random) and passes their answers through. The scenario's limits become Envoy's
own: ``ingress.max_connections`` is the routers' cluster circuit breaker on requests (one beyond
it is answered 503 by Envoy, as the simulated load balancer answers 503), ``max_rate_per_s`` a
local rate limit (a token bucket of one second's worth, refilled every second, answering 503).
A router that is down (connection refused: Envoy's UF) or that dies with the request in flight
(UC) is answered 502 with the simulator's cause, as a cloud load balancer without health checks
answers for a dead backend (Envoy's own would be 503).
"""

from __future__ import annotations

from simnet.model.envoy import HCM_TYPE, ROUTER_TYPE, UNLIMITED, socket_address
from simnet.scenario.schema import Ingress

CLUSTER = "routers"
RATE_LIMIT_TYPE = ("type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
                   "LocalRateLimit")


def _mapper(flags: list[str], cause: str) -> dict:
    return {"filter": {"response_flag_filter": {"flags": flags}}, "status_code": 502,
            "headers_to_add": [{"header": {"key": "x-simnet-cause", "value": cause},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


def load_balancer_bootstrap(ingress: Ingress, *, listen: tuple[str, int],
                            routers: list[tuple[str, int]], admin_port: int) -> dict:
    """The load balancer's bootstrap: a listener at ``listen`` routing every host to the routers."""
    http_filters: list[dict] = []
    if ingress.max_rate_per_s:
        tokens = max(1, round(ingress.max_rate_per_s))
        http_filters.append({"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": RATE_LIMIT_TYPE, "stat_prefix": "lb_rate",
            "status": {"code": "ServiceUnavailable"},
            "response_headers_to_add": [{"header": {"key": "x-simnet-cause",
                                                    "value": "load balancer rate limit"}}],
            "token_bucket": {"max_tokens": tokens, "tokens_per_fill": tokens,
                             "fill_interval": "1s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                               "runtime_key": "lb_rate_enabled"},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
                                "runtime_key": "lb_rate_enforced"}}})
    http_filters.append({"name": "envoy.filters.http.router",
                         "typed_config": {"@type": ROUTER_TYPE}})
    manager = {
        "@type": HCM_TYPE, "stat_prefix": "lb", "codec_type": "AUTO",
        "route_config": {"name": "all", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"},
                        "route": {"cluster": CLUSTER, "timeout": "0s"}}]}]},
        "http_filters": http_filters,
        "local_reply_config": {"mappers": [
            _mapper(["UF", "URX", "UH"], "router down"),
            _mapper(["UC", "UR"], "router restarted mid-request")]},
    }
    limit = ingress.max_connections or UNLIMITED
    return {
        "admin": {"address": socket_address("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [{"name": "lb", "address": socket_address(*listen),
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": manager}]}]}],
            "clusters": [{
                "name": CLUSTER, "type": "STATIC", "connect_timeout": "1s",
                "lb_policy": "RANDOM" if ingress.balancing == "random" else "ROUND_ROBIN",
                "load_assignment": {"cluster_name": CLUSTER, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": socket_address(*r)}} for r in routers]}]},
                "circuit_breakers": {"thresholds": [{
                    "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
                    "max_requests": limit, "max_retries": UNLIMITED}]},
            }],
        },
    }
