"""The per-container Envoy bootstrap a Diego cell writes (cloudfoundry/executor, envoyconfig).

The executor writes ``envoy.yaml`` into ``/etc/cf-assets/envoy_config`` of each container:
one TLS-terminating TCP-proxy listener per proxy port mapping, one STATIC cluster per distinct
app port, the admin API on 127.0.0.1, stats rejected, and node id
``sidecar~<container ip>~<guid>~x`` in cluster ``proxy-cluster``. This module returns the same
structure as a plain dict (Envoy's v3 JSON), with a few deliberate differences that keep the
behaviour and run cleanly on today's Envoy:

- certificates are read from files named in ``CertFiles``; the executor instead points each
  listener at file-based SDS secrets (``sds-id-cert-and-key.yaml``, ``sds-c2c-cert-and-key.yaml``,
  ``sds-id-validation-context.yaml``) so it can rotate them without restarting Envoy. With
  ``CertFiles.sds_file`` the identity is read that way too (``sds_secret`` is the file's
  content), so a rotation or an expired certificate reaches a running Envoy as it does on a cell;
- the admin ``access_log_path: /dev/null`` (deprecated) is left out: no admin access log either way;
- the runtime layer setting the removed guard ``envoy.reloadable_features.new_tcp_connection_pool``
  to false is left out: Envoy >= 1.2x ignores it and reports an envoy_bug;
- ``match_subject_alt_names`` (deprecated) becomes ``match_typed_subject_alt_names`` with one
  exact matcher per SAN type (DNS, URI, email, IP), which accepts the same certificates.
"""

from __future__ import annotations

from dataclasses import dataclass

from simnet.model.ports import C2C_TLS_PORT, ProxyPorts
from simnet.scenario.schema import Proxy

CIPHER_SUITES = ("ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256")
ALPN_PROTOCOLS = ("h2,http/1.1",)  # one comma-joined entry, exactly as the executor writes it
CONNECT_TIMEOUT = "0.25s"
UNLIMITED = 4294967295  # math.MaxUint32
SAN_TYPES = ("DNS", "URI", "EMAIL", "IP_ADDRESS")

TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)


@dataclass(frozen=True)
class CertFiles:
    """Where the sidecar finds its credentials: identity chain and key, client-CA bundle.

    ``c2c_*`` is the credential served on 61443 (DNS SANs = guid + internal routes); it
    defaults to the instance identity.
    """

    cert_chain: str
    private_key: str
    trusted_ca: str | None = None
    c2c_cert_chain: str | None = None
    c2c_private_key: str | None = None
    sds_file: str | None = None  # the identity as a file-based SDS secret, watched by Envoy


SDS_SECRET = "id-cert-and-key"  # the executor's secret name (sds-id-cert-and-key.yaml)
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_secret(chain_pem: str, key_pem: str) -> dict:
    """The content of the identity's SDS file: one Secret with the chain and key inline, as
    the executor's credential manager writes ``sds-id-cert-and-key.yaml``."""
    return {"resources": [{"@type": SECRET_TYPE, "name": SDS_SECRET, "tls_certificate": {
        "certificate_chain": {"inline_string": chain_pem},
        "private_key": {"inline_string": key_pem}}}]}


def _sds_config(path: str) -> dict:
    directory = path.rsplit("/", 1)[0] or "/"
    return {"name": SDS_SECRET, "sds_config": {
        "path_config_source": {"path": path, "watched_directory": {"path": directory}},
        "resource_api_version": "V3"}}


def cluster_name(app_port: int) -> str:
    """The executor's cluster name for an app port."""
    return f"service-cluster-{app_port}"


def listener_name(app_port: int, proxy_port: int) -> str:
    """The executor's listener (and transport socket) name for one mapping."""
    return f"listener-{app_port}-{proxy_port}"


def socket_address(address: str, port: int) -> dict:
    """An Envoy ``Address`` for a TCP socket."""
    return {"socket_address": {"address": address, "port_value": port}}


def san_matchers(names: list[str]) -> list[dict]:
    """Exact SAN matchers for each name and SAN type: the typed form of ``match_subject_alt_names``."""
    return [
        {"san_type": san_type, "matcher": {"exact": name}}
        for name in names
        for san_type in SAN_TYPES
    ]


def downstream_tls_context(
    proxy_port: int, *, proxy: Proxy, cert_files: CertFiles
) -> dict:
    """The listener's DownstreamTlsContext.

    As in the executor, the 61443 (container-to-container) listener serves the C2C
    credential and gets neither ALPN nor client-certificate verification; every other
    listener serves the instance identity, offers ``h2,http/1.1`` when ``enable_http2``, and
    with ``require_and_verify_client_certificates`` requires a client certificate chaining to
    the trusted CAs and, if ``verify_subject_alt_name`` is set, carrying one of those SANs.
    Cipher suites restrict TLS 1.2 only; TLS 1.3 suites are BoringSSL's defaults.
    """
    c2c = proxy_port == C2C_TLS_PORT
    chain, key = cert_files.cert_chain, cert_files.private_key
    if c2c:
        chain = cert_files.c2c_cert_chain or chain
        key = cert_files.c2c_private_key or key
    common: dict = {
        "tls_certificates": [
            {"certificate_chain": {"filename": chain}, "private_key": {"filename": key}}
        ],
        "tls_params": {"cipher_suites": list(CIPHER_SUITES)},
    }
    if cert_files.sds_file and not (c2c and cert_files.c2c_cert_chain):
        del common["tls_certificates"]
        common["tls_certificate_sds_secret_configs"] = [_sds_config(cert_files.sds_file)]
    if proxy.enable_http2 and not c2c:
        common["alpn_protocols"] = list(ALPN_PROTOCOLS)
    context: dict = {"@type": DOWNSTREAM_TLS_TYPE, "common_tls_context": common}
    if proxy.require_and_verify_client_certificates and not c2c:
        if cert_files.trusted_ca is None:
            raise ValueError("require_and_verify_client_certificates needs CertFiles.trusted_ca")
        validation: dict = {"trusted_ca": {"filename": cert_files.trusted_ca}}
        if proxy.verify_subject_alt_name:
            validation["match_typed_subject_alt_names"] = san_matchers(
                list(proxy.verify_subject_alt_name)
            )
        common["validation_context"] = validation
        context["require_client_certificate"] = True
    return context


def listener(
    app_port: int, proxy_port: int, *, proxy: Proxy, cert_files: CertFiles, listen_address: str
) -> dict:
    """One proxy listener: TLS on ``listen_address:proxy_port``, tcp_proxy to the app's cluster."""
    name = listener_name(app_port, proxy_port)
    return {
        "name": name,
        "address": socket_address(listen_address, proxy_port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.tcp_proxy",
                        "typed_config": {
                            "@type": TCP_PROXY_TYPE,
                            "stat_prefix": f"stats-{app_port}-{proxy_port}",
                            "cluster": cluster_name(app_port),
                        },
                    }
                ],
                "transport_socket": {
                    "name": name,
                    "typed_config": downstream_tls_context(
                        proxy_port, proxy=proxy, cert_files=cert_files
                    ),
                },
            }
        ],
    }


def cluster(app_port: int, *, app_address: str) -> dict:
    """One STATIC cluster for an app port: 0.25 s connect timeout, circuit breakers at MaxUint32.

    The executor writes three separate DEFAULT-priority thresholds (one per limit). Envoy
    uses the first threshold of a priority, so only ``max_connections`` is lifted; pending
    requests and requests stay at Envoy's default of 1024.
    """
    name = cluster_name(app_port)
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(app_address, app_port)}}]}
            ],
        },
        "circuit_breakers": {
            "thresholds": [
                {"max_connections": UNLIMITED},
                {"max_pending_requests": UNLIMITED},
                {"max_requests": UNLIMITED},
            ]
        },
    }


def sidecar_bootstrap(
    ports: ProxyPorts,
    *,
    guid: str,
    proxy: Proxy,
    cert_files: CertFiles,
    listen_address: str = "0.0.0.0",
    app_address: str = "127.0.0.1",
) -> dict:
    """The Envoy bootstrap the executor writes for one container instance.

    The executor binds listeners to 0.0.0.0 and points clusters (and the node id) at the
    container's internal IP, so an app listening on 127.0.0.1 only is unreachable through
    the real sidecar; pass ``app_address=<container ip>`` to model that exactly.
    """
    mappings = ports.mappings
    app_ports = list(dict.fromkeys(m.app for m in mappings))
    return {
        "admin": {"address": socket_address("127.0.0.1", ports.admin)},
        "stats_config": {"stats_matcher": {"reject_all": True}},
        "node": {"id": f"sidecar~{app_address}~{guid}~x", "cluster": "proxy-cluster"},
        "static_resources": {
            "listeners": [
                listener(
                    m.app, m.proxy, proxy=proxy, cert_files=cert_files,
                    listen_address=listen_address,
                )
                for m in mappings
            ],
            "clusters": [cluster(port, app_address=app_address) for port in app_ports],
        },
    }


# --- listener kinds (memory calibration) ---------------------------------------------------

# What a sidecar listener does with a connection, from least to most per-connection state:
# a plain TCP proxy, the executor's TLS-terminating TCP proxy, the same with client
# certificates, and TLS into Envoy's HTTP connection manager speaking HTTP/1.1 or HTTP/2.
LISTENER_KINDS = ("tcp", "tls", "mtls", "http1", "http2")
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def http_connection_manager(app_port: int, proxy_port: int) -> dict:
    """An HTTP connection manager routing every request to the app port's cluster (codec chosen
    by ALPN: HTTP/2 when negotiated, else HTTP/1.1)."""
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": f"http-{app_port}-{proxy_port}",
            "codec_type": "AUTO",
            "route_config": {"virtual_hosts": [{
                "name": "app", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster_name(app_port)}}],
            }]},
            "http_filters": [{"name": "envoy.filters.http.router",
                              "typed_config": {"@type": ROUTER_TYPE}}],
        },
    }


def kind_proxy(kind: str, trusted_ca_name: str = "clients") -> Proxy:
    """The proxy settings a listener kind runs with: mTLS for ``mtls``, ALPN h2 only for
    ``http2`` (``http1`` negotiates no ALPN and falls back to HTTP/1.1)."""
    if kind not in LISTENER_KINDS:
        raise ValueError(f"unknown listener kind {kind!r}: one of {', '.join(LISTENER_KINDS)}")
    if kind == "mtls":
        return Proxy(require_and_verify_client_certificates=True,
                     trusted_ca_certificates=[trusted_ca_name], enable_http2=False)
    return Proxy(enable_http2=kind == "http2")


def kind_bootstrap(kind: str, ports: ProxyPorts, *, guid: str, cert_files: CertFiles,
                   listen_address: str = "0.0.0.0", app_address: str = "127.0.0.1") -> dict:
    """The sidecar bootstrap with every listener of one kind: the executor's config for
    ``tls``/``mtls``, without the TLS transport for ``tcp``, with the HTTP connection manager
    in place of the TCP proxy for ``http1``/``http2``."""
    bootstrap = sidecar_bootstrap(ports, guid=guid, proxy=kind_proxy(kind), cert_files=cert_files,
                                  listen_address=listen_address, app_address=app_address)
    for mapping, lst in zip(ports.mappings, bootstrap["static_resources"]["listeners"]):
        chain = lst["filter_chains"][0]
        if kind == "tcp":
            del chain["transport_socket"]
        elif kind in ("http1", "http2"):
            chain["filters"] = [http_connection_manager(mapping.app, mapping.proxy)]
    return bootstrap
