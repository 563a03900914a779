"""gorouter's TLS to a backend sidecar: the two sides of the handshake, and what gorouter makes
of its outcome.

``sidecar_listener`` is the Envoy listener the executor configures (``model.envoy``) and
``router_client`` is gorouter's backend transport, both as ``handshake`` sides. ``verdict``
classifies a handshake outcome the way current gorouter does (routing-release
``proxy/fails`` classifiers, ``proxy/round_tripper/error_handler.go``):

- a host name error -> 503 (HostnameMismatch; the route-integrity check);
- any other failure of gorouter's own verification -> 526 (UntrustedCert: Go >= 1.20 wraps
  every verification error in ``tls.CertificateVerificationError``, so an expired certificate
  or a wrong extended key usage is 526 too, not the 502 of older gorouters);
- the backend's alert ``bad certificate``, ``unknown certificate authority`` or
  ``certificate required`` -> 496 (RemoteFailedCertCheck);
- the alert ``handshake failure``, or TLS spoken to a plain port -> 525;
- any other alert -> 502, neither retried nor pruned (no classifier matches it);
- a failed dial -> 502.

All classified failures are retried on another endpoint and prune a TLS endpoint.

``backend_verdicts`` runs the handshake model for a scenario with stand-in certificates issued
by the CAs the scenario names, so the simulator's verdicts come from the same model the
conformance tests check against OpenSSL and Envoy.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum

from cryptography import x509

from simnet.model import pki
from simnet.model.certpath import PathError, Verifier
from simnet.model.envoy import ALPN_PROTOCOLS, CIPHER_SUITES
from simnet.model.handshake import Client, Outcome, Server, handshake
from simnet.model.ports import C2C_TLS_PORT
from simnet.scenario.schema import BackendTLS, Proxy, Scenario

GOROUTER_ALPN = ("h2", "http/1.1")  # Go's transport with ForceAttemptHTTP2 (route protocol http2)


class Verdict(Enum):
    """gorouter's classification of one backend connection attempt."""

    OK = "ok"
    SAN_MISMATCH = "san_mismatch"
    UNTRUSTED_CERT = "untrusted_cert"
    CLIENT_CERT_REJECTED = "client_cert_rejected"
    HANDSHAKE_FAILURE = "handshake_failure"
    REMOTE_ERROR = "remote_error"
    DIAL_FAILED = "dial_failed"
    # Envoy as the client (Istio's ingress gateway): any failed upstream handshake is a
    # "connection failure" -- 503, retried under retry_on connect-failure, never pruned
    UPSTREAM_CONNECT_FAILURE = "upstream_connect_failure"
    # no connection within gorouter's endpoint_dial_timeout (a Dial error)
    DIAL_TIMEOUT = "dial_timeout"
    # the handshake outlasted gorouter's tls_handshake_timeout (RemoteHandshakeTimeout)
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    # the backend closed the connection before answering, as Envoy's tcp_proxy does at its
    # max_connections (IdempotentRequestEOF: retried, not pruned)
    CONNECTION_RESET = "connection_reset"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def retriable(self) -> bool:
        """Another endpoint is tried. Every failure of a connection attempt is: gorouter wraps
        any error before it obtained a connection in ``IncompleteRequestError``, which its
        retriable classifiers accept, so an alert it does not classify (``certificate unknown``,
        Envoy's answer to a client certificate that fails its SAN check) is retried too
        (routing-release gorouter proxy/round_tripper/proxy_round_tripper.go ``isRetriable``:
        ``!trace.GotConn() || !trace.WroteHeaders()``)."""
        return self is not Verdict.OK

    @property
    def failable(self) -> bool:
        """In FailableClassifiers: where the endpoint is not pruned (a plain one, or a reset
        connection), round-robin skips it for a while (gorouter route/pool.go EndpointFailed)."""
        return self.prunable or self is Verdict.CONNECTION_RESET

    @property
    def prunable(self) -> bool:
        """In PrunableClassifiers: a TLS endpoint leaves the pool until re-registered (an
        unclassified alert is not among them)."""
        return self.retriable and self not in (Verdict.UPSTREAM_CONNECT_FAILURE,
                                               Verdict.CONNECTION_RESET, Verdict.REMOTE_ERROR)


_STATUS = {
    Verdict.OK: 200, Verdict.SAN_MISMATCH: 503, Verdict.UNTRUSTED_CERT: 526,
    Verdict.CLIENT_CERT_REJECTED: 496, Verdict.HANDSHAKE_FAILURE: 525,
    Verdict.REMOTE_ERROR: 502, Verdict.DIAL_FAILED: 502, Verdict.UPSTREAM_CONNECT_FAILURE: 503,
    Verdict.DIAL_TIMEOUT: 502, Verdict.HANDSHAKE_TIMEOUT: 502, Verdict.CONNECTION_RESET: 502,
}
_REMOTE_CERT_CHECK = frozenset({"bad_certificate", "unknown_ca", "certificate_required"})


def verdict(outcome: Outcome) -> Verdict:
    """What gorouter makes of a handshake outcome."""
    if outcome.ok:
        return Verdict.OK
    return failure_verdict(outcome.rejected_by, outcome.alert, outcome.verify_error)


def failure_verdict(rejected_by: str | None, alert: str | None,
                    verify_error: PathError | int | None) -> Verdict:
    """gorouter's classification of a failed handshake from what it can see: its own
    verification error, or the backend's alert."""
    if rejected_by == "client":
        mismatch = verify_error in (PathError.HOSTNAME_MISMATCH, PathError.IP_ADDRESS_MISMATCH)
        return Verdict.SAN_MISMATCH if mismatch else Verdict.UNTRUSTED_CERT
    if alert in _REMOTE_CERT_CHECK:
        return Verdict.CLIENT_CERT_REJECTED
    if alert == "handshake_failure":
        return Verdict.HANDSHAKE_FAILURE
    return Verdict.REMOTE_ERROR


def sidecar_listener(proxy: Proxy, proxy_port: int, chain: tuple[x509.Certificate, ...],
                     trusted_client_cas: tuple[x509.Certificate, ...] = ()) -> Server:
    """The TLS side of one Envoy proxy listener, as ``envoy.downstream_tls_context`` configures
    it: the executor's ciphers, Envoy's default versions (TLS 1.2-1.3), ALPN h2 and http/1.1
    when enable_http2, mTLS with ``verify_subject_alt_name`` when required; the 61443
    container-to-container listener has neither ALPN nor client certificates."""
    c2c = proxy_port == C2C_TLS_PORT
    mtls = proxy.require_and_verify_client_certificates and not c2c
    return Server(
        chain=chain,
        require_client_cert=mtls,
        trusted_client_cas=trusted_client_cas if mtls else (),
        verify_client_san=tuple(proxy.verify_subject_alt_name) if mtls else (),
        alpn=tuple(p for entry in ALPN_PROTOCOLS for p in entry.split(","))
        if proxy.enable_http2 and not c2c else (),
        ciphers=CIPHER_SUITES,
        verifier=Verifier.BORINGSSL,
    )


def router_client(backends: BackendTLS, trusted: tuple[x509.Certificate, ...], expected_san: str,
                  chain: tuple[x509.Certificate, ...] = (), *, http2: bool = False) -> Client:
    """gorouter's backend transport (``TLSConfigWithServerName``): the route's
    ``server_cert_domain_san`` as server name, its CA pool, ``router.backends`` client
    certificate, its cipher suites (TLS 1.2 only), Go's verification."""
    return Client(
        trusted=trusted,
        server_name=expected_san,
        chain=chain,
        alpn=GOROUTER_ALPN if http2 else (),
        max_version=backends.max_tls_version,
        ciphers=tuple(backends.cipher_suites),
        verifier=Verifier.GO,
    )


# --- the scenario's verdicts ---------------------------------------------------------------

# Stand-in certificates are issued at this instant and the handshake judged half an hour later:
# only the relations between CAs, names and validity matter, never the wall clock.
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
_STAND_IN = ("instance-a", "198.18.0.1")
_OTHER_INSTANCE = "instance-b"


class _Authorities:
    """One stand-in CA per name a scenario uses, on shared keys."""

    def __init__(self) -> None:
        self._cas: dict[str, pki.Issuer] = {}

    def __getitem__(self, name: str) -> pki.Issuer:
        if name not in self._cas:
            self._cas[name] = pki.make_ca(name, now=EPOCH, key=pki.shared_key(f"ca/{name}"))
        return self._cas[name]


def _by_expiry(identity) -> dict[bool, tuple[x509.Certificate, ...]]:
    """The stand-in identity's chain, valid (False) and expired (True)."""
    chains = {}
    for expired in (False, True):
        pair = identity(-timedelta(hours=1) if expired else pki.DEFAULT_IDENTITY_VALIDITY)
        chains[expired] = (pair.cert, *pair.chain)
    return chains


def _router_chain(cas: _Authorities, backends: BackendTLS, name: str) -> tuple[x509.Certificate, ...]:
    """The router's client certificate, if it has one (issued by a root, never sent)."""
    if backends.client_cert is None:
        return ()
    return (pki.client_certificate(cas[backends.client_cert.ca], name, backends.client_cert.san,
                                   now=EPOCH, key=pki.shared_key("router-client")).cert,)


def backend_verdicts(s: Scenario) -> dict[tuple[bool, bool], Verdict]:
    """gorouter's verdict for a new TLS connection to a sidecar, keyed by (the instance that
    answers is the one the route names, its identity certificate has expired). On cf-for-k8s
    the ingress gateway's verdicts are ``gateway_verdicts`` (``model.platform`` picks)."""
    cas = _Authorities()
    identity_ca = cas[s.cells.instance_identity_ca]
    backends = s.routers.backends
    guid, ip = _STAND_IN
    chain = _by_expiry(lambda validity: pki.instance_identity(
        identity_ca, guid, ip, now=EPOCH, validity=validity, key=pki.shared_key("identity")))
    client_chain = _router_chain(cas, backends, "gorouter")
    trusted_clients = tuple(cas[n].cert for n in s.proxy.trusted_ca_certificates)
    at = EPOCH + timedelta(minutes=30)
    table = {}
    for right in (True, False):
        for expired in (False, True):
            server = sidecar_listener(s.proxy, 0, chain[expired], trusted_clients)
            client = router_client(backends, (cas[backends.trusted_ca].cert,),
                                   guid if right else _OTHER_INSTANCE, client_chain)
            table[right, expired] = verdict(handshake(client, server, at))
    return table



ISTIO_TRUST_DOMAIN = "cluster.local"
WORKLOADS_NAMESPACE = "cf-workloads"
APP_SERVICE_ACCOUNT = "eirini-privileged"  # seed 001: what the gateway's clusters verify


def gateway_verdicts(s: Scenario) -> dict[tuple[bool, bool], Verdict]:
    """The ingress gateway's verdict on a new Istio mTLS connection to a pod's sidecar, keyed
    as ``backend_verdicts``. Every cf-workloads pod holds the same SPIFFE identity (seed 001:
    the gateway verifies ``spiffe://cluster.local/ns/cf-workloads/sa/eirini-privileged``), so
    another app's pod at a stale address passes the check: route integrity on Istio holds per
    service account, not per instance."""
    cas = _Authorities()
    identity_ca = cas[s.cells.instance_identity_ca]
    backends = s.routers.backends
    app_id = pki.spiffe_id(ISTIO_TRUST_DOMAIN, WORKLOADS_NAMESPACE, APP_SERVICE_ACCOUNT)
    chain = _by_expiry(lambda validity: pki.spiffe_identity(
        identity_ca, ISTIO_TRUST_DOMAIN, WORKLOADS_NAMESPACE, APP_SERVICE_ACCOUNT, now=EPOCH,
        validity=validity, key=pki.shared_key("identity")))
    client_chain = _router_chain(cas, backends, "istio-ingressgateway")
    trusted_clients = tuple(cas[n].cert for n in s.proxy.trusted_ca_certificates)
    gateway = Client(trusted=(cas[backends.trusted_ca].cert,), verify_server_san=(app_id,),
                     chain=client_chain, alpn=("istio",), verifier=Verifier.BORINGSSL)
    at = EPOCH + timedelta(minutes=30)
    table = {}
    for expired in (False, True):
        server = sidecar_listener(s.proxy, 0, chain[expired], trusted_clients)
        ok = handshake(gateway, server, at).ok
        for right in (True, False):  # the same identity either way
            table[right, expired] = Verdict.OK if ok else Verdict.UPSTREAM_CONNECT_FAILURE
    return table
