"""A TLS handshake between a router (client) and a sidecar listener (server), as a pure function.

``handshake(client, server, at)`` predicts what real stacks do, step by step in the order the
messages flow: version negotiation, the TLS 1.2 cipher suite, the client's validation of the
server's chain (OpenSSL or Go order, see ``certpath``), the server's request for and validation
of a client certificate (OpenSSL, or BoringSSL plus Envoy's SAN match), then ALPN. The first
failure ends it, with the alert the rejecting side sends: that alert is all the other side
learns, and it decides gorouter's status code (``simnet.model.tls``).

Facts reproduced (checked against OpenSSL 3 and Envoy 1.40 by the differential tests):

- A missing client certificate draws ``certificate_required`` in TLS 1.3 and
  ``handshake_failure`` in TLS 1.2, from OpenSSL and BoringSSL alike.
- Verification errors become alerts per stack: OpenSSL sends ``bad_certificate`` for a
  certificate that is not yet valid, BoringSSL ``certificate_expired``; both send
  ``unknown_ca`` for an unknown issuer and ``unsupported_certificate`` for a wrong purpose.
  Envoy's own ``verify_subject_alt_name`` mismatch sends ``certificate_unknown``.
- Envoy lists its trusted CA names in the CertificateRequest, and a Go client sends its
  certificate only when one of those CAs issued a certificate in its chain; otherwise it sends
  none (``crypto/tls`` ``getClientCertificate``). Python's OpenSSL server lists none.
- ALPN: the server picks its first protocol the client also offers; no overlap means no
  protocol, not a failure (both stacks answer SSL_TLSEXT_ERR_NOACK).
- BoringSSL refuses a TLS 1.3 peer certificate whose key usage forbids signatures with
  ``illegal_parameter`` before validating its path (TLS 1.3 needs a CertificateVerify
  signature); in TLS 1.2 the same certificate fails the purpose check. (Found by the Envoy
  differential.)
- OpenSSL completes a credential configured as a lone leaf from its own trust store before
  sending it (``ssl_add_cert_chain``'s auto-chain), root included; BoringSSL and Go send
  exactly what they were given. (Found by the differential: a root sent this way turns an
  "unable to get local issuer" into "self-signed certificate in chain".)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from cryptography import x509

from simnet.model.certpath import (PathError, Purpose, Verifier, may_sign, openssl_chain,
                                   san_values, verify_path)

TLS12 = "TLSv1.2"
TLS13 = "TLSv1.3"
VERSIONS = (TLS12, TLS13)

# TLS 1.2 suites usable with an RSA certificate, by OpenSSL name, in each stack's default
# preference order. Python 3.11's default cipher string (ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:
# DHE+AES:!SHA1...) for OpenSSL; Envoy's documented server default; Go's defaultCipherSuites.
DEFAULT_TLS12_CIPHERS: dict[Verifier, tuple[str, ...]] = {
    Verifier.OPENSSL: (
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA256",
        "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-SHA256",
        "DHE-RSA-AES128-SHA256",
    ),
    Verifier.BORINGSSL: (
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    Verifier.GO: (
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    ),
}

# Alert a verifier sends for a path error (OpenSSL ssl_x509err2alert; BoringSSL
# SSL_alert_from_verify_result; Go's client sends bad_certificate for any verification error).
_OPENSSL_ALERTS = {
    PathError.CERT_HAS_EXPIRED: "certificate_expired",
    PathError.CERT_NOT_YET_VALID: "bad_certificate",
    PathError.INVALID_PURPOSE: "unsupported_certificate",
    PathError.HOSTNAME_MISMATCH: "bad_certificate",
    PathError.IP_ADDRESS_MISMATCH: "bad_certificate",
}
_BORINGSSL_ALERTS = {
    PathError.CERT_HAS_EXPIRED: "certificate_expired",
    PathError.CERT_NOT_YET_VALID: "certificate_expired",
    PathError.INVALID_PURPOSE: "unsupported_certificate",
}


def alert_for(verifier: Verifier, error: PathError) -> str:
    """The TLS alert ``verifier``'s stack sends when a peer's path fails with ``error``."""
    if verifier is Verifier.GO:
        return "bad_certificate"
    if error.untrusted:
        return "unknown_ca"
    table = _BORINGSSL_ALERTS if verifier is Verifier.BORINGSSL else _OPENSSL_ALERTS
    return table[error]


class Reason(str, Enum):
    """Why a handshake ended: ``ok``, or the first check that failed and whose it was."""

    OK = "ok"
    NO_SHARED_VERSION = "no_shared_version"
    NO_SHARED_CIPHER = "no_shared_cipher"
    SERVER_CERT_UNTRUSTED = "server_cert_untrusted"
    SERVER_CERT_WRONG_PURPOSE = "server_cert_wrong_purpose"
    SERVER_NAME_MISMATCH = "server_name_mismatch"
    SERVER_CERT_EXPIRED = "server_cert_expired"
    SERVER_CERT_NOT_YET_VALID = "server_cert_not_yet_valid"
    CLIENT_CERT_MISSING = "client_cert_missing"
    CLIENT_CERT_UNTRUSTED = "client_cert_untrusted"
    CLIENT_CERT_WRONG_PURPOSE = "client_cert_wrong_purpose"
    CLIENT_CERT_EXPIRED = "client_cert_expired"
    CLIENT_CERT_NOT_YET_VALID = "client_cert_not_yet_valid"
    CLIENT_CERT_SAN_MISMATCH = "client_cert_san_mismatch"


def path_reason(side: str, error: PathError) -> Reason:
    """The reason for a rejected ``side`` ("server" or "client") certificate."""
    if error.untrusted:
        what = "cert_untrusted"
    elif error is PathError.INVALID_PURPOSE:
        what = "cert_wrong_purpose"
    elif error in (PathError.HOSTNAME_MISMATCH, PathError.IP_ADDRESS_MISMATCH):
        what = "name_mismatch"
    elif error is PathError.CERT_HAS_EXPIRED:
        what = "cert_expired"
    else:
        what = "cert_not_yet_valid"
    return Reason(f"{side}_{what}")


@dataclass(frozen=True)
class Client:
    """The connecting side (a router): what it trusts, whom it expects, what it presents.

    ``server_name`` is the name checked against the server's certificate (gorouter: the
    route's ``server_cert_domain_san``, the instance guid); None checks no name. ``chain``
    is the client certificate followed by its intermediates; empty presents none.
    ``ciphers`` restricts TLS 1.2 only (None: the stack's default). ``verify_server_san`` is
    an Envoy upstream's ``match_typed_subject_alt_names`` (Istio: the workload's SPIFFE id).
    """

    trusted: tuple[x509.Certificate, ...]
    server_name: str | None = None
    verify_server_san: tuple[str, ...] = ()
    chain: tuple[x509.Certificate, ...] = ()
    alpn: tuple[str, ...] = ()
    min_version: str = TLS12
    max_version: str = TLS13
    ciphers: tuple[str, ...] | None = None
    verifier: Verifier = Verifier.OPENSSL

    def __post_init__(self) -> None:
        if self.verify_server_san and self.verifier is not Verifier.BORINGSSL:
            raise ValueError("verify_server_san is Envoy's check: use the boringssl verifier")


@dataclass(frozen=True)
class Server:
    """The listening side (a sidecar listener): its chain and its client-certificate policy.

    ``verify_client_san`` is Envoy's ``match_typed_subject_alt_names``: the client
    certificate must carry one of these as a DNS, URI, email or IP SAN (BoringSSL only).
    """

    chain: tuple[x509.Certificate, ...]
    require_client_cert: bool = False
    trusted_client_cas: tuple[x509.Certificate, ...] = ()
    verify_client_san: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    min_version: str = TLS12
    max_version: str = TLS13
    ciphers: tuple[str, ...] | None = None
    verifier: Verifier = Verifier.BORINGSSL

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a TLS server needs a certificate")
        if self.verify_client_san and self.verifier is not Verifier.BORINGSSL:
            raise ValueError("verify_client_san is Envoy's check: use the boringssl verifier")
        if self.verifier is Verifier.GO:
            raise ValueError("simnet models Go as a client only (gorouter)")


@dataclass(frozen=True)
class Outcome:
    """How a handshake ended, as both ends would report it.

    ``rejected_by`` is the side that aborted and ``alert`` the alert it sent;
    ``verify_error`` is the path error behind a certificate rejection.
    """

    reason: Reason
    rejected_by: str | None = None
    alert: str | None = None
    verify_error: PathError | None = None
    version: str | None = None
    alpn: str | None = None
    cipher: str | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    def to_json(self) -> dict:
        return {
            "handshake": "ok" if self.ok else "failed",
            "reason": self.reason.value,
            "rejected_by": self.rejected_by,
            "alert": self.alert,
            "verify_error": None if self.verify_error is None else self.verify_error.to_json(),
            "tls_version": self.version,
            "alpn": self.alpn,
        }


def negotiated_version(client: Client, server: Server) -> str | None:
    """The highest version both ends allow."""
    both = [v for v in VERSIONS
            if _rank(client.min_version) <= _rank(v) <= _rank(client.max_version)
            and _rank(server.min_version) <= _rank(v) <= _rank(server.max_version)]
    return both[-1] if both else None


def _rank(version: str) -> int:
    try:
        return VERSIONS.index(version)
    except ValueError:
        raise ValueError(f"unknown TLS version {version!r}: use {' or '.join(VERSIONS)}") from None


def tls12_cipher(client: Client, server: Server) -> str | None:
    """The TLS 1.2 suite the server picks (its own preference order), or None."""
    offered = client.ciphers if client.ciphers is not None else DEFAULT_TLS12_CIPHERS[client.verifier]
    allowed = server.ciphers if server.ciphers is not None else DEFAULT_TLS12_CIPHERS[server.verifier]
    return next((c for c in allowed if c in offered and _rsa_usable(c)), None)


def _rsa_usable(cipher: str) -> bool:
    """A suite an RSA certificate can serve: RSA-authenticated (EC)DHE, or RSA key exchange."""
    return "ECDSA" not in cipher and "PSK" not in cipher and (
        "RSA" in cipher or not cipher.startswith(("ECDHE-", "DHE-")))


def selected_alpn(client: Client, server: Server) -> str | None:
    """The server's first protocol that the client offers."""
    return next((p for p in server.alpn if p in client.alpn), None)


def sent_chain(configured: tuple[x509.Certificate, ...], store: tuple[x509.Certificate, ...],
               verifier: Verifier) -> tuple[x509.Certificate, ...]:
    """The chain a stack sends for a configured credential: OpenSSL completes a lone leaf from
    its trust store as far as it can (the chain it builds, even when that chain is partial)."""
    if verifier is not Verifier.OPENSSL or len(configured) != 1:
        return configured
    return tuple(openssl_chain(configured, store)[0])


def presented_server_chain(server: Server) -> tuple[x509.Certificate, ...]:
    """What the server sends in its Certificate message."""
    return sent_chain(server.chain, server.trusted_client_cas, server.verifier)


def presented_client_chain(client: Client, server: Server) -> tuple[x509.Certificate, ...]:
    """What the client sends when asked for a certificate.

    Envoy (BoringSSL) names its trusted CAs in the request; a Go client then sends its chain
    only if one of them issued a certificate in it. OpenSSL clients send theirs regardless.
    """
    if client.verifier is Verifier.GO and server.verifier is Verifier.BORINGSSL:
        names = {ca.subject for ca in server.trusted_client_cas}
        return client.chain if any(c.issuer in names for c in client.chain) else ()
    return sent_chain(client.chain, client.trusted, client.verifier)


def handshake(client: Client, server: Server, at: datetime) -> Outcome:
    """Predict the handshake between ``client`` and ``server`` at time ``at``."""
    version = negotiated_version(client, server)
    if version is None:
        return Outcome(Reason.NO_SHARED_VERSION, "server", "protocol_version")
    cipher = None
    if version == TLS12:
        cipher = tls12_cipher(client, server)
        if cipher is None:
            return Outcome(Reason.NO_SHARED_CIPHER, "server", "handshake_failure", version=version)
    error = verify_path(presented_server_chain(server), client.trusted, purpose=Purpose.SERVER, at=at,
                        verifier=client.verifier, name=client.server_name)
    if error is not None:
        return Outcome(path_reason("server", error), "client", alert_for(client.verifier, error),
                       error, version)
    if client.verify_server_san and not set(san_values(server.chain[0])) & set(client.verify_server_san):
        return Outcome(Reason.SERVER_NAME_MISMATCH, "client", "certificate_unknown", version=version)
    if server.require_client_cert:
        sent = presented_client_chain(client, server)
        if not sent:
            return Outcome(Reason.CLIENT_CERT_MISSING, "server",
                           "certificate_required" if version == TLS13 else "handshake_failure",
                           version=version)
        if server.verifier is Verifier.BORINGSSL and version == TLS13 and not may_sign(sent[0]):
            return Outcome(Reason.CLIENT_CERT_WRONG_PURPOSE, "server", "illegal_parameter",
                           version=version)
        error = verify_path(sent, server.trusted_client_cas, purpose=Purpose.CLIENT, at=at,
                            verifier=server.verifier)
        if error is not None:
            return Outcome(path_reason("client", error), "server",
                           alert_for(server.verifier, error), error, version)
        if server.verify_client_san and not set(san_values(sent[0])) & set(server.verify_client_san):
            return Outcome(Reason.CLIENT_CERT_SAN_MISMATCH, "server", "certificate_unknown",
                           version=version)
    return Outcome(Reason.OK, version=version, alpn=selected_alpn(client, server), cipher=cipher)

