"""The cf-for-k8s ingress gateway's Envoy configuration, as istiod derives it from the
RouteController's VirtualServices and Services (seed 001, "Ingress Envoy").

Kept from the seed's config dump: one virtual host per VirtualService host named
``<host>:80`` with domains ``host`` and ``host:80``; routes in the VirtualService's order,
matching the URI prefix (``/`` without one); ``request_headers_to_add`` with the CF headers,
replacing any the client sent (the seed's ``append: false``); the retry policy (2 retries on
connect-failure, refused-stream, unavailable, cancelled, resource-exhausted and retriable 503,
skipping hosts already tried, host selection up to 5 times); timeout 0s; the decorator and the
``istio`` filter metadata naming the VirtualService; one cluster
``outbound|<port>||s-<guid>.<namespace>.svc.cluster.local`` per Service with Istio mTLS to the
pod's sidecar: ALPN ``istio``, SNI ``outbound_.<port>_._.<service fqdn>``, the gateway's
certificate, the workload CA, the app pods' SPIFFE id.

Changed to run as a static bootstrap on today's Envoy: v2 type URLs become v3; xDS becomes
static resources (clusters STATIC with the endpoints the caller gives, as EDS would send);
``append: false`` becomes ``append_action: OVERWRITE_IF_EXISTS_OR_ADD``; ``max_grpc_timeout``
(removed) is left out; ``transport_socket_matches`` on ``tlsMode: istio`` becomes the cluster's
transport socket (every pod here has a sidecar); ``validate_clusters: false`` lets a route name
a cluster that does not exist (the placeholder ``no-destinations``), which Envoy answers 503,
as it does behind istiod. Several destinations become ``weighted_clusters`` with the CF headers
on each, as Istio writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
PREVIOUS_HOSTS_TYPE = ("type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                       "PreviousHostsPredicate")
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,resource-exhausted,retriable-status-codes"
GATEWAY_PORT = 8080  # the gateway pod's port behind the LoadBalancer Service's port 80
ISTIO_CONNECT_TIMEOUT = "10s"  # MeshConfig connectTimeout default
APP_SERVICE_ACCOUNT = "eirini-privileged"
MESH_GATEWAY = "mesh"


@dataclass(frozen=True)
class UpstreamTLS:
    """The gateway's Istio mTLS credentials (seed 001: /etc/certs/*) and the identity it expects."""

    cert_chain: str
    private_key: str
    trusted_ca: str
    service_account: str = APP_SERVICE_ACCOUNT
    trust_domain: str = "cluster.local"


@dataclass(frozen=True)
class Destination:
    """One destination of a gateway route: the Service, its port, weight and CF headers."""

    service: str
    port: int | None  # None: no such Service (the placeholder ``no-destinations``)
    weight: int
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GatewayRoute:
    """One route of a host on the gateway: the URI prefix it matches and where it sends."""

    prefix: str
    destinations: tuple[Destination, ...]
    virtual_service: str
    namespace: str


def service_fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def cluster_name(service: str, namespace: str, port: int) -> str:
    """Istio's outbound cluster name for a Service port."""
    return f"outbound|{port}||{service_fqdn(service, namespace)}"


def ingress_routes(virtual_services: Iterable[dict], services: Iterable[dict]
                   ) -> dict[str, tuple[GatewayRoute, ...]]:
    """Per host the gateway serves, its routes in match order: the decision the gateway makes
    for a request, so the simulator follows it without reading Envoy JSON. VirtualServices
    bound only to ``mesh`` are not the gateway's."""
    ports = {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in services}
    out: dict[str, tuple[GatewayRoute, ...]] = {}
    for vs in virtual_services:
        spec = vs["spec"]
        if spec.get("gateways") == [MESH_GATEWAY]:
            continue
        routes = []
        for http in spec.get("http", []):
            match = http.get("match") or [{}]
            prefix = match[0].get("uri", {}).get("prefix", "/")
            dests = tuple(
                Destination(d["destination"]["host"], ports.get(d["destination"]["host"]),
                            d.get("weight", 100),
                            tuple(sorted(d.get("headers", {}).get("request", {}).get("set", {}).items())))
                for d in http["route"])
            routes.append(GatewayRoute(prefix, dests, vs["metadata"]["name"],
                                       vs["metadata"]["namespace"]))
        for host in spec["hosts"]:
            out[host] = tuple(routes)
    return out


def route_for(routes: Sequence[GatewayRoute], path: str) -> GatewayRoute | None:
    """The first route whose prefix the path starts with: Envoy's first-match order."""
    return next((r for r in routes if path.startswith(r.prefix)), None)


def _headers(pairs: Iterable[tuple[str, str]]) -> list[dict]:
    return [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in pairs]


def _cluster_of(d: Destination, namespace: str) -> str:
    return cluster_name(d.service, namespace, d.port) if d.port is not None \
        else f"outbound|80||{d.service}"


def _route(host: str, r: GatewayRoute) -> dict:
    first = r.destinations[0]
    action: dict = {"timeout": "0s", "retry_policy": {
        "retry_on": RETRY_ON, "num_retries": 2,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": {"@type": PREVIOUS_HOSTS_TYPE}}],
        "host_selection_retry_max_attempts": "5", "retriable_status_codes": [503]}}
    entry: dict = {
        "match": {"prefix": r.prefix},
        "decorator": {"operation": f"{service_fqdn(first.service, r.namespace)}:"
                                   f"{first.port or 80}{r.prefix.rstrip('/')}/*"},
        "metadata": {"filter_metadata": {"istio": {"config": (
            f"/apis/networking.istio.io/v1alpha3/namespaces/{r.namespace}/virtual-service/"
            f"{r.virtual_service}")}}},
    }
    if len(r.destinations) == 1:
        entry["request_headers_to_add"] = _headers(first.headers)
        action["cluster"] = _cluster_of(first, r.namespace)
    else:
        action["weighted_clusters"] = {"clusters": [
            {"name": _cluster_of(d, r.namespace), "weight": d.weight,
             "request_headers_to_add": _headers(d.headers)} for d in r.destinations]}
    entry["route"] = action
    return entry


def _cluster(name: str, namespace: str, port: int, endpoints: Sequence[tuple[str, int]],
             tls: UpstreamTLS | None) -> dict:
    cluster = {
        "name": cluster_name(name, namespace, port),
        "type": "STATIC", "lb_policy": "ROUND_ROBIN", "connect_timeout": ISTIO_CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": cluster_name(name, namespace, port), "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": ip, "port_value": p}}}} for ip, p in endpoints]}]},
    }
    if tls is not None:
        spiffe = f"spiffe://{tls.trust_domain}/ns/{namespace}/sa/{tls.service_account}"
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "sni": f"outbound_.{port}_._.{service_fqdn(name, namespace)}",
            "common_tls_context": {
                "alpn_protocols": ["istio"],
                "tls_certificates": [{"certificate_chain": {"filename": tls.cert_chain},
                                      "private_key": {"filename": tls.private_key}}],
                "validation_context": {
                    "trusted_ca": {"filename": tls.trusted_ca},
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": spiffe}}]},
            },
        }}
    return cluster


def ingress_bootstrap(virtual_services: Iterable[dict], services: Iterable[dict],
                      endpoints: Mapping[str, Sequence[tuple[str, int]]], *,
                      tls: UpstreamTLS | None, admin_port: int = 0,
                      listen: tuple[str, int] = ("0.0.0.0", GATEWAY_PORT)) -> dict:
    """The gateway Envoy's bootstrap: its HTTP listener, a virtual host per VirtualService
    host and a cluster per Service, whose pods are ``endpoints[service name]``."""
    virtual_services, services = list(virtual_services), list(services)
    routes = ingress_routes(virtual_services, services)
    virtual_hosts = [{"name": f"{host}:80", "domains": [host, f"{host}:80"],
                      "routes": [_route(host, r) for r in routes[host]]}
                     for host in sorted(routes)]
    clusters = [_cluster(s["metadata"]["name"], s["metadata"]["namespace"],
                         s["spec"]["ports"][0]["port"], endpoints.get(s["metadata"]["name"], ()),
                         tls)
                for s in sorted(services, key=lambda s: s["metadata"]["name"])]
    hcm = {"@type": HCM_TYPE, "stat_prefix": f"outbound_0.0.0.0_{listen[1]}",
           "route_config": {"name": f"http.{listen[1]}", "validate_clusters": False,
                            "virtual_hosts": virtual_hosts},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER_TYPE}}]}
    return {
        "node": {"id": "router~198.19.255.254~istio-ingressgateway.cf-system~cf-system.svc.cluster.local",
                 "cluster": "istio-ingressgateway"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": f"0.0.0.0_{listen[1]}",
                "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
    }
