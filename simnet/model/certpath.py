"""Certificate path validation as OpenSSL, BoringSSL (inside Envoy) and Go (gorouter) do it.

The three verifiers run the same checks in different orders, so a certificate with two defects
fails differently in each:

- OpenSSL 3 (``X509_verify_cert``/``verify_chain``): build the chain to a self-signed trust
  anchor (trusted store first), then the leaf's purpose (extended key usage and key usage),
  then the host name, then, from the anchor down to the leaf, validity times.
- BoringSSL as Envoy runs it: the same chain, purpose and time checks, but Envoy sets
  ``X509_V_FLAG_PARTIAL_CHAIN`` on its store (``DefaultCertValidator``), so any trusted
  certificate ends the chain, an intermediate included; no host name is checked, and Envoy
  matches the client certificate's SANs itself afterwards (``verify_subject_alt_name``).
- Go (``crypto/x509.Certificate.Verify``): the leaf's validity first, then the host name (DNS
  SANs only, no common-name fallback since Go 1.15), then the chain to any certificate in the
  roots pool, then extended key usage along the chain. Go ignores the key usage extension.

Errors carry OpenSSL's ``X509_V_ERR_*`` numbers (BoringSSL keeps them), which is what a real
OpenSSL client reports as ``verify_code``. Pure: signatures are checked with ``cryptography``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from enum import Enum, IntEnum

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class Verifier(str, Enum):
    """Whose path validation runs."""

    OPENSSL = "openssl"
    BORINGSSL = "boringssl"
    GO = "go"


class Purpose(str, Enum):
    """What the leaf must be good for: a TLS server (checked by clients) or a TLS client."""

    SERVER = "server"
    CLIENT = "client"


class PathError(IntEnum):
    """Why a path failed, numbered as OpenSSL's ``X509_V_ERR_*``; Go's errors map onto them."""

    UNABLE_TO_GET_ISSUER_CERT = 2
    CERT_NOT_YET_VALID = 9
    CERT_HAS_EXPIRED = 10
    DEPTH_ZERO_SELF_SIGNED_CERT = 18
    SELF_SIGNED_CERT_IN_CHAIN = 19
    UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
    INVALID_PURPOSE = 26
    HOSTNAME_MISMATCH = 62
    IP_ADDRESS_MISMATCH = 64

    @property
    def untrusted(self) -> bool:
        """No chain to a trust anchor (Go: ``UnknownAuthorityError``)."""
        return self in _UNTRUSTED

    @property
    def time(self) -> bool:
        """Outside the validity period (Go: ``CertificateInvalidError{Reason: Expired}``)."""
        return self in (PathError.CERT_NOT_YET_VALID, PathError.CERT_HAS_EXPIRED)

    @property
    def message(self) -> str:
        """OpenSSL's ``X509_verify_cert_error_string``."""
        return _MESSAGES[self]

    def to_json(self) -> dict:
        return {"code": int(self), "name": self.name, "message": self.message}


_UNTRUSTED = frozenset({PathError.UNABLE_TO_GET_ISSUER_CERT, PathError.DEPTH_ZERO_SELF_SIGNED_CERT,
                        PathError.SELF_SIGNED_CERT_IN_CHAIN,
                        PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY})
_MESSAGES = {
    PathError.UNABLE_TO_GET_ISSUER_CERT: "unable to get issuer certificate",
    PathError.CERT_NOT_YET_VALID: "certificate is not yet valid",
    PathError.CERT_HAS_EXPIRED: "certificate has expired",
    PathError.DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate",
    PathError.SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in certificate chain",
    PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate",
    PathError.INVALID_PURPOSE: "unsuitable certificate purpose",
    PathError.HOSTNAME_MISMATCH: "hostname mismatch",
    PathError.IP_ADDRESS_MISMATCH: "IP address mismatch",
}

_EKU = {Purpose.SERVER: ExtendedKeyUsageOID.SERVER_AUTH, Purpose.CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH}
# OpenSSL/BoringSSL check_purpose_ssl_server / _client: a key usage extension, when present,
# must allow one of these (KU_TLS for servers; signing or key agreement for clients).
_KEY_USAGE = {Purpose.SERVER: ("digital_signature", "key_encipherment", "key_agreement"),
              Purpose.CLIENT: ("digital_signature", "key_agreement")}


def _ext(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_id(cert: x509.Certificate, kind) -> bytes | None:
    value = _ext(cert, kind)
    return None if value is None else (
        value.digest if kind is x509.SubjectKeyIdentifier else value.key_identifier)


def self_issued(cert: x509.Certificate) -> bool:
    """Subject equals issuer and the key identifiers agree (OpenSSL ``X509_self_signed`` without
    the signature check, as chain building uses it)."""
    if cert.subject != cert.issuer:
        return False
    aki = _key_id(cert, x509.AuthorityKeyIdentifier)
    return aki is None or aki == _key_id(cert, x509.SubjectKeyIdentifier)


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """``parent`` issued ``child``: names chain, key identifiers agree, the signature verifies."""
    if child.issuer != parent.subject:
        return False
    aki, ski = _key_id(child, x509.AuthorityKeyIdentifier), _key_id(parent, x509.SubjectKeyIdentifier)
    if aki is not None and ski is not None and aki != ski:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except Exception:  # InvalidSignature, ValueError, TypeError: not this parent
        return False
    return True


# --- the individual checks ---------------------------------------------------------------


def openssl_chain(presented: Sequence[x509.Certificate], trusted: Sequence[x509.Certificate],
                  *, partial: bool = False) -> tuple[list[x509.Certificate], PathError | None]:
    """OpenSSL's ``build_chain`` (trusted first), returning the chain built, even when it fails.

    From the leaf, each issuer is looked up in the trust store first, then among the certificates
    the peer sent; once a trusted certificate is in the chain only the store is searched. The
    chain must end in a self-signed certificate that is trusted, or with ``partial``
    (``X509_V_FLAG_PARTIAL_CHAIN``) in any trusted certificate.
    """
    chain = [presented[0]]
    untrusted = list(presented[1:])
    in_store = False
    while True:
        cur = chain[-1]
        if partial and (in_store or any(cur == t for t in trusted)):
            return chain, None
        if self_issued(cur):
            if in_store or any(cur == t for t in trusted):
                return chain, None
            return chain, (PathError.DEPTH_ZERO_SELF_SIGNED_CERT if len(chain) == 1
                           else PathError.SELF_SIGNED_CERT_IN_CHAIN)
        parent = next((t for t in trusted if t not in chain and issued_by(cur, t)), None)
        if parent is not None:
            in_store = True
        elif not in_store:
            parent = next((u for u in untrusted if u not in chain and issued_by(cur, u)), None)
        if parent is None:
            return chain, (PathError.UNABLE_TO_GET_ISSUER_CERT if in_store
                           else PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY)
        chain.append(parent)


def go_chain(presented: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: datetime
             ) -> list[x509.Certificate] | None:
    """Go's ``buildChains``: any certificate in the roots pool is an anchor (self-signed or not);
    intermediates that are not valid at ``at`` are skipped as candidates. None: unknown authority."""
    leaf = presented[0]
    if any(leaf == r for r in roots):
        return [leaf]

    def extend(chain: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cur = chain[-1]
        for r in roots:
            if r not in chain and issued_by(cur, r) and valid_at(r, at):
                return chain + [r]
        for i in presented[1:]:
            if i not in chain and issued_by(cur, i) and valid_at(i, at):
                found = extend(chain + [i])
                if found:
                    return found
        return None

    return extend([leaf])


def valid_at(cert: x509.Certificate, at: datetime) -> bool:
    """Within notBefore..notAfter (both inclusive)."""
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def time_error(cert: x509.Certificate, at: datetime) -> PathError | None:
    """OpenSSL ``check_cert_time``: not yet valid is checked before expired."""
    if at < cert.not_valid_before_utc:
        return PathError.CERT_NOT_YET_VALID
    if at > cert.not_valid_after_utc:
        return PathError.CERT_HAS_EXPIRED
    return None


def eku_allows(cert: x509.Certificate, purpose: Purpose) -> bool:
    """No extended key usage extension means any purpose."""
    eku = _ext(cert, x509.ExtendedKeyUsage)
    return eku is None or _EKU[purpose] in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku


def key_usage_allows(cert: x509.Certificate, purpose: Purpose) -> bool:
    """No key usage extension means any use."""
    ku = _ext(cert, x509.KeyUsage)
    return ku is None or any(getattr(ku, bit) for bit in _KEY_USAGE[purpose])


def may_sign(cert: x509.Certificate) -> bool:
    """The key may make signatures (no key usage extension, or digitalSignature set)."""
    ku = _ext(cert, x509.KeyUsage)
    return ku is None or ku.digital_signature


def _dns_names(cert: x509.Certificate) -> list[str]:
    san = _ext(cert, x509.SubjectAlternativeName)
    return [] if san is None else san.get_values_for_type(x509.DNSName)


def _ips(cert: x509.Certificate) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    san = _ext(cert, x509.SubjectAlternativeName)
    return [] if san is None else san.get_values_for_type(x509.IPAddress)


def dns_matches(pattern: str, name: str) -> bool:
    """Case-insensitive match; ``*`` only as the whole leftmost label, matching exactly one
    label, and only with at least two labels after it (RFC 6125, OpenSSL's no-partial rule)."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        rest = pattern[2:]
        head, _, tail = name.partition(".")
        return "." in rest and "*" not in rest and bool(head) and tail == rest
    return "*" not in pattern and pattern == name


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def name_error(cert: x509.Certificate, name: str, verifier: Verifier) -> PathError | None:
    """Host name check: an IP literal against IP SANs; otherwise DNS SANs, and (OpenSSL only)
    the subject common names when there is no DNS SAN at all."""
    ip = _ip(name)
    if ip is not None:
        return None if ip in _ips(cert) else PathError.IP_ADDRESS_MISMATCH
    candidates = _dns_names(cert)
    if not candidates and verifier is Verifier.OPENSSL:
        candidates = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return None if any(dns_matches(p, name) for p in candidates) else PathError.HOSTNAME_MISMATCH


# --- the three orders --------------------------------------------------------------------


def verify_path(
    presented: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    *,
    purpose: Purpose,
    at: datetime,
    verifier: Verifier,
    name: str | None = None,
) -> PathError | None:
    """The first error ``verifier`` reports for a peer that sent ``presented`` (leaf first),
    or None when the path is good. ``name`` is the expected host name (OpenSSL, Go)."""
    if not presented:
        raise ValueError("no certificate presented")
    if verifier is Verifier.GO:
        return _go(presented, trusted, purpose, at, name)
    chain, err = openssl_chain(presented, trusted, partial=verifier is Verifier.BORINGSSL)
    if err is not None:
        return err
    leaf = chain[0]
    if not (eku_allows(leaf, purpose) and key_usage_allows(leaf, purpose)):
        return PathError.INVALID_PURPOSE
    if name is not None and verifier is Verifier.OPENSSL:
        err = name_error(leaf, name, verifier)
        if err is not None:
            return err
    for cert in reversed(chain):  # internal_verify: from the anchor down to the leaf
        err = time_error(cert, at)
        if err is not None:
            return err
    return None


def _go(presented, roots, purpose, at, name) -> PathError | None:
    leaf = presented[0]
    err = time_error(leaf, at)
    if err is not None:
        return err
    if name is not None:
        err = name_error(leaf, name, Verifier.GO)
        if err is not None:
            return err
    chain = go_chain(presented, roots, at)
    if chain is None:
        return PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    if not all(eku_allows(c, purpose) for c in chain):
        return PathError.INVALID_PURPOSE
    return None


def san_values(cert: x509.Certificate) -> list[str]:
    """Every DNS, URI, email and IP SAN as text: what Envoy's typed SAN matchers compare."""
    san = _ext(cert, x509.SubjectAlternativeName)
    if san is None:
        return []
    return (san.get_values_for_type(x509.DNSName)
            + san.get_values_for_type(x509.UniformResourceIdentifier)
            + san.get_values_for_type(x509.RFC822Name)
            + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)])
