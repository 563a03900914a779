"""What gorouter sees when it opens TLS to a backend sidecar, and the status it answers.

gorouter (routing-release, proxy/fails) classifies backend errors: a SAN that is not the
instance it meant to reach -> 503 (route integrity; endpoint pruned), a certificate from an
unknown authority -> 526, a failed handshake -> 525, its client certificate rejected by the
backend -> 496, anything else -> 502. All of these are retried on another endpoint and the
failing endpoint is pruned.
"""

from __future__ import annotations

from enum import Enum

from simnet.scenario.schema import BackendTLS, Proxy

# Envoy's downstream cipher suites in the Diego sidecar (executor proxy config).
SIDECAR_CIPHERS = ("ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256")


class Verdict(Enum):
    """Outcome of a backend connection attempt, with the router status it leads to."""

    OK = "ok"
    SAN_MISMATCH = "san_mismatch"
    UNKNOWN_AUTHORITY = "unknown_authority"
    HANDSHAKE_FAILURE = "handshake_failure"
    CLIENT_CERT_REJECTED = "client_cert_rejected"
    CERT_EXPIRED = "cert_expired"
    DIAL_FAILED = "dial_failed"

    @property
    def status(self) -> int:
        return STATUS[self]


# gorouter's status per backend error (proxy/round_tripper/error_handler.go DefaultErrorSpecs):
# HostnameMismatch 503, UntrustedCert 526, AttemptedTLSWithNonTLSBackend 525,
# RemoteFailedCertCheck 496; an expired or not-yet-valid certificate
# (fails.ExpiredOrNotYetValidCertFailure) has no spec of its own and gets the default 502.
# All of them are retriable and prunable (proxy/fails/classifier_group.go).
STATUS = {
    Verdict.OK: 200, Verdict.SAN_MISMATCH: 503, Verdict.UNKNOWN_AUTHORITY: 526,
    Verdict.HANDSHAKE_FAILURE: 525, Verdict.CLIENT_CERT_REJECTED: 496, Verdict.CERT_EXPIRED: 502,
    Verdict.DIAL_FAILED: 502,
}


def backend_handshake(router: BackendTLS, proxy: Proxy, instance_ca: str) -> Verdict:
    """Handshake outcome between every router and every sidecar, before the SAN check.

    Checks run in the order TLS runs them: cipher negotiation in the ClientHello, then the
    router verifies the server chain, then the sidecar (with mTLS on) verifies the client
    certificate and its SAN. The per-instance SAN check is done per connection by the caller.
    """
    if not set(router.cipher_suites) & set(SIDECAR_CIPHERS):
        return Verdict.HANDSHAKE_FAILURE
    if router.trusted_ca != instance_ca:
        return Verdict.UNKNOWN_AUTHORITY
    if proxy.require_and_verify_client_certificates:
        cert = router.client_cert
        if cert is None or cert.ca not in proxy.trusted_ca_certificates:
            return Verdict.CLIENT_CERT_REJECTED
        if proxy.verify_subject_alt_name and cert.san not in proxy.verify_subject_alt_name:
            return Verdict.CLIENT_CERT_REJECTED
    return Verdict.OK
