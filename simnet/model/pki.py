"""A small CA and the certificates a Diego cell and its routers use.

Reproduces cloudfoundry/executor's credential manager (depot/containerstore/credmanager.go):
each instance gets an RSA key and a certificate signed by the cell's instance identity CA with
CN and DNS SAN = instance guid, IP SAN = container IP, key usage digitalSignature,
keyEncipherment and keyAgreement, extended key usage clientAuth and serverAuth, a random
(UUIDv4) serial, and the issuing CA appended to the chain. It is regenerated before it
expires (``rotation_period``). Istio workloads get SPIFFE identities instead (URI SAN
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``, empty subject).

``defective`` issues the deliberately bad certificates the conformance tests need (expired,
not yet valid, wrong SAN, untrusted CA, wrong key usage, missing intermediate, self-signed).
Pure: keys and certificates live in memory only.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# executor's RSAPrivateKeySize; Envoy's Diego ciphers are ECDHE-RSA-*, so the key must be RSA.
IDENTITY_KEY_BITS = 3072
CA_KEY_BITS = 2048
DEFAULT_IDENTITY_VALIDITY = timedelta(hours=24)  # rep: instance_identity_validity_period_in_hours


@dataclass(frozen=True)
class KeyPair:
    """A certificate, its private key and the issuer certificates sent after it."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    rotation_at: datetime | None = None

    @property
    def common_name(self) -> str:
        return self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@dataclass(frozen=True)
class Issuer(KeyPair):
    """A CA: a KeyPair whose certificate may sign others; ``chain`` holds its parents."""


def rotation_period(validity: timedelta) -> timedelta:
    """How long the executor keeps a credential before regenerating it.

    Validity minus 30 minutes when longer than 4 hours, else validity minus one eighth
    (executor ``calculateCredentialRotationPeriod``).
    """
    if validity > timedelta(hours=4):
        return validity - timedelta(minutes=30)
    return validity - validity / 8


def _rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@lru_cache(maxsize=None)
def shared_key(label: str, bits: int = CA_KEY_BITS) -> rsa.RSAPrivateKey:
    """One RSA key per label for this process: certificates differ in their fields, not in
    their keys, so tests and derivations need not pay for key generation each time."""
    return _rsa_key(bits)


def _name(common_name: str, organizational_units: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou) for ou in organizational_units]
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: datetime, until: datetime):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(uuid.uuid4().int)
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(
    common_name: str,
    *,
    now: datetime,
    days: int = 365,
    parent: Issuer | None = None,
    key_bits: int = CA_KEY_BITS,
    key: rsa.RSAPrivateKey | None = None,
) -> Issuer:
    """A self-signed root CA, or an intermediate signed by ``parent``."""
    key = key or _rsa_key(key_bits)
    subject = _name(common_name)
    builder = (
        _builder(
            subject,
            parent.cert.subject if parent else subject,
            key.public_key(),
            now,
            now + timedelta(days=days),
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if parent:
        builder = builder.add_extension(_authority_key_id(parent), critical=False)
        return Issuer(builder.sign(parent.key, hashes.SHA256()), key, (parent.cert, *parent.chain))
    return Issuer(builder.sign(key, hashes.SHA256()), key)


def _authority_key_id(ca: Issuer) -> x509.AuthorityKeyIdentifier:
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


# Key usage of the executor's identity certificates: digitalSignature, keyEncipherment,
# keyAgreement (credmanager.go). Tests swap it for a wrong one.
IDENTITY_KEY_USAGE = frozenset({"digital_signature", "key_encipherment", "key_agreement"})
BOTH_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)
_KEY_USAGE_BITS = ("digital_signature", "content_commitment", "key_encipherment",
                   "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")


def _key_usage(bits: Iterable[str]) -> x509.KeyUsage:
    on = set(bits)
    return x509.KeyUsage(**{b: b in on for b in _KEY_USAGE_BITS},
                         encipher_only=False, decipher_only=False)


def issue(
    ca: Issuer | None,
    common_name: str | None,
    *,
    now: datetime,
    validity: timedelta,
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    uris: Iterable[str] = (),
    usages: Iterable[x509.ObjectIdentifier] | None = BOTH_AUTH,
    key_usage: Iterable[str] | None = IDENTITY_KEY_USAGE,
    organizational_units: Iterable[str] = (),
    key: rsa.RSAPrivateKey | None = None,
    key_bits: int = IDENTITY_KEY_BITS,
) -> KeyPair:
    """A leaf certificate valid from ``now`` for ``validity`` (negative: already expired).

    Signed by ``ca``, or by its own key when ``ca`` is None (self-signed). ``usages`` is the
    extended key usage (None: no extension, any purpose) and ``key_usage`` the key usage bits
    (None: no extension). With no ``common_name`` the subject is empty and the SAN extension
    critical, as RFC 5280 requires (Istio's workload certificates look like that).
    """
    key = key or _rsa_key(key_bits)
    subject = _name(common_name, organizational_units) if common_name else x509.Name([])
    start, until = sorted((now, now + validity))
    builder = _builder(subject, ca.cert.subject if ca else subject, key.public_key(), start, until)
    if ca is not None:
        builder = builder.add_extension(_authority_key_id(ca), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(_key_usage(key_usage), critical=True)
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans = ([x509.DNSName(n) for n in dict.fromkeys(dns)]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ips)]
            + [x509.UniformResourceIdentifier(u) for u in dict.fromkeys(uris)])
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not common_name)
    cert = builder.sign(ca.key if ca else key, hashes.SHA256())
    return KeyPair(cert, key, (ca.cert, *ca.chain) if ca else ())


def instance_identity(
    ca: Issuer,
    guid: str,
    container_ip: str,
    *,
    now: datetime,
    validity: timedelta = DEFAULT_IDENTITY_VALIDITY,
    organizational_units: Iterable[str] = (),
    key_bits: int = IDENTITY_KEY_BITS,
    key: rsa.RSAPrivateKey | None = None,
) -> KeyPair:
    """The instance identity credential the executor issues to one container.

    CN and DNS SAN = ``guid``, IP SAN = ``container_ip``, EKU clientAuth + serverAuth; the
    chain carries the issuing CA; ``rotation_at`` is when the executor replaces it.
    """
    pair = issue(ca, guid, now=now, validity=validity, dns=[guid], ips=[container_ip],
                 organizational_units=organizational_units, key_bits=key_bits, key=key)
    return KeyPair(pair.cert, pair.key, pair.chain, now + rotation_period(validity))


def c2c_identity(
    ca: Issuer,
    guid: str,
    internal_routes: Iterable[str] = (),
    *,
    now: datetime,
    validity: timedelta = DEFAULT_IDENTITY_VALIDITY,
    key_bits: int = IDENTITY_KEY_BITS,
    key: rsa.RSAPrivateKey | None = None,
) -> KeyPair:
    """The container-to-container credential served on 61443: DNS SANs guid + internal routes, no IP."""
    pair = issue(ca, guid, now=now, validity=validity, dns=[guid, *internal_routes],
                 key_bits=key_bits, key=key)
    return KeyPair(pair.cert, pair.key, pair.chain, now + rotation_period(validity))


def client_certificate(
    ca: Issuer,
    common_name: str,
    san_dns: str | Iterable[str] = (),
    *,
    now: datetime,
    validity: timedelta = timedelta(days=365),
    key_bits: int = CA_KEY_BITS,
    key: rsa.RSAPrivateKey | None = None,
) -> KeyPair:
    """A clientAuth certificate, e.g. gorouter's ``router.backends.cert_chain``."""
    names = [san_dns] if isinstance(san_dns, str) else list(san_dns)
    return issue(ca, common_name, now=now, validity=validity, dns=names,
                 usages=[ExtendedKeyUsageOID.CLIENT_AUTH], key_bits=key_bits, key=key)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's workload identity: ``spiffe://<trust domain>/ns/<namespace>/sa/<account>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def spiffe_identity(
    ca: Issuer,
    trust_domain: str,
    namespace: str,
    service_account: str,
    *,
    now: datetime,
    validity: timedelta = DEFAULT_IDENTITY_VALIDITY,
    key: rsa.RSAPrivateKey | None = None,
) -> KeyPair:
    """An Istio workload certificate: empty subject, one critical URI SAN (the SPIFFE id),
    clientAuth + serverAuth, as istiod signs it for a pod's sidecar."""
    return issue(ca, None, now=now, validity=validity,
                 uris=[spiffe_id(trust_domain, namespace, service_account)],
                 key_bits=CA_KEY_BITS, key=key)


# --- deliberately bad certificates -------------------------------------------------------


class Defect(str, Enum):
    """One way a presented certificate can be wrong."""

    EXPIRED = "expired"  # not_after is in the past
    NOT_YET_VALID = "not_yet_valid"  # not_before is in the future
    WRONG_SAN = "wrong_san"  # names another identity
    UNTRUSTED_CA = "untrusted_ca"  # signed by a CA the peer does not trust
    WRONG_EXTENDED_KEY_USAGE = "wrong_extended_key_usage"  # EKU lacks this role's purpose
    WRONG_KEY_USAGE = "wrong_key_usage"  # key usage allows only certificate signing
    MISSING_INTERMEDIATE = "missing_intermediate"  # signed by an intermediate it does not send
    SELF_SIGNED = "self_signed"  # signed by its own key


@dataclass(frozen=True)
class Hierarchy:
    """The CAs a test issues from: a root, an intermediate under it, and a stranger root."""

    root: Issuer
    intermediate: Issuer
    stranger: Issuer


def hierarchy(now: datetime, prefix: str = "simnet") -> Hierarchy:
    """Root, intermediate and stranger CAs on shared keys (cheap to make many times)."""
    root = make_ca(f"{prefix} root CA", now=now, key=shared_key(f"{prefix}/root"))
    return Hierarchy(
        root=root,
        intermediate=make_ca(f"{prefix} intermediate CA", now=now, parent=root,
                             key=shared_key(f"{prefix}/intermediate")),
        stranger=make_ca(f"{prefix} stranger CA", now=now, key=shared_key(f"{prefix}/stranger")),
    )


def defective(
    h: Hierarchy,
    name: str,
    role: str,
    defects: Iterable[Defect] = (),
    *,
    now: datetime,
    via_intermediate: bool = False,
    key: rsa.RSAPrivateKey | None = None,
) -> KeyPair:
    """A ``role`` ("server" or "client") certificate for ``name`` (CN and DNS SAN) with the given
    defects; ``chain`` is what its holder sends after it.

    Issued by the root, or the intermediate when ``via_intermediate`` or a missing intermediate
    is asked for; validity is one day around ``now`` unless a defect moves it (not yet valid
    wins over expired: a certificate cannot be both).
    """
    d = set(defects)
    usages = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
    if role not in usages:
        raise ValueError(f"role must be server or client, not {role!r}")
    if Defect.SELF_SIGNED in d:
        ca = None
    elif Defect.UNTRUSTED_CA in d:
        ca = h.stranger
    elif via_intermediate or Defect.MISSING_INTERMEDIATE in d:
        ca = h.intermediate
    else:
        ca = h.root
    start, validity = now - timedelta(hours=1), timedelta(days=1)
    if Defect.EXPIRED in d:
        start, validity = now - timedelta(days=2), timedelta(days=1)
    if Defect.NOT_YET_VALID in d:
        start, validity = now + timedelta(hours=1), timedelta(days=1)
    subject = f"wrong-{name}" if Defect.WRONG_SAN in d else name
    other = ({"server": "client", "client": "server"}[role] if Defect.WRONG_EXTENDED_KEY_USAGE in d
             else role)
    pair = issue(ca, subject, now=start, validity=validity, dns=[subject], usages=[usages[other]],
                 key_usage={"key_cert_sign"} if Defect.WRONG_KEY_USAGE in d else IDENTITY_KEY_USAGE,
                 key=key or shared_key(f"leaf/{role}"))
    # A root is never sent (the peer has it or not); the intermediate is, unless it is missing.
    sent = ca is h.intermediate and Defect.MISSING_INTERMEDIATE not in d
    return KeyPair(pair.cert, pair.key, (h.intermediate.cert,) if sent else ())


# --- PEM ---------------------------------------------------------------------------------


def cert_pem(pair: KeyPair | x509.Certificate) -> bytes:
    """The certificate alone, PEM."""
    cert = pair.cert if isinstance(pair, KeyPair) else pair
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(pair: KeyPair | rsa.RSAPrivateKey) -> bytes:
    """The private key as PKCS#1 ``RSA PRIVATE KEY`` PEM, unencrypted, as the executor writes it."""
    key = pair.key if isinstance(pair, KeyPair) else pair
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def chain_pem(pair: KeyPair) -> bytes:
    """Leaf followed by its issuers: what a server (or client) sends in the handshake."""
    return b"".join(cert_pem(c) for c in (pair.cert, *pair.chain))


def bundle_pem(*cas: KeyPair | x509.Certificate) -> bytes:
    """A trust bundle: the given certificates concatenated, PEM."""
    return b"".join(cert_pem(ca) for ca in cas)


def san_dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names in a certificate's SAN extension."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ext.get_values_for_type(x509.DNSName)


def san_ip_addresses(cert: x509.Certificate) -> list[str]:
    """The IP addresses in a certificate's SAN extension, as strings."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
