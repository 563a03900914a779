"""A small CA and the certificates a Diego cell and its routers use.

Reproduces cloudfoundry/executor's credential manager (depot/containerstore/credmanager.go):
each instance gets an RSA key and a certificate signed by the cell's instance identity CA with
CN and DNS SAN = instance guid, IP SAN = container IP, key usage digitalSignature,
keyEncipherment and keyAgreement, extended key usage clientAuth and serverAuth, a random
(UUIDv4) serial, and the issuing CA appended to the chain. It is regenerated before it
expires (``rotation_period``). Pure: keys and certificates live in memory only.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

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
) -> Issuer:
    """A self-signed root CA, or an intermediate signed by ``parent``."""
    key = _rsa_key(key_bits)
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


def _leaf(
    ca: Issuer,
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    *,
    now: datetime,
    validity: timedelta,
    key_bits: int,
    organizational_units: Iterable[str] = (),
) -> KeyPair:
    key = _rsa_key(key_bits)
    builder = (
        _builder(_name(common_name, organizational_units), ca.cert.subject, key.public_key(),
                 now, now + validity)
        .add_extension(_authority_key_id(ca), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key, (ca.cert,))


def instance_identity(
    ca: Issuer,
    guid: str,
    container_ip: str,
    *,
    now: datetime,
    validity: timedelta = DEFAULT_IDENTITY_VALIDITY,
    organizational_units: Iterable[str] = (),
    key_bits: int = IDENTITY_KEY_BITS,
) -> KeyPair:
    """The instance identity credential the executor issues to one container.

    CN and DNS SAN = ``guid``, IP SAN = ``container_ip``, EKU clientAuth + serverAuth; the
    chain carries the issuing CA; ``rotation_at`` is when the executor replaces it.
    """
    sans = [x509.DNSName(guid), x509.IPAddress(ipaddress.ip_address(container_ip))]
    pair = _leaf(
        ca, guid, sans, [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        now=now, validity=validity, key_bits=key_bits, organizational_units=organizational_units,
    )
    return KeyPair(pair.cert, pair.key, pair.chain, now + rotation_period(validity))


def c2c_identity(
    ca: Issuer,
    guid: str,
    internal_routes: Iterable[str] = (),
    *,
    now: datetime,
    validity: timedelta = DEFAULT_IDENTITY_VALIDITY,
    key_bits: int = IDENTITY_KEY_BITS,
) -> KeyPair:
    """The container-to-container credential served on 61443: DNS SANs guid + internal routes, no IP."""
    sans = [x509.DNSName(name) for name in dict.fromkeys([guid, *internal_routes])]
    pair = _leaf(
        ca, guid, sans, [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        now=now, validity=validity, key_bits=key_bits,
    )
    return KeyPair(pair.cert, pair.key, pair.chain, now + rotation_period(validity))


def client_certificate(
    ca: Issuer,
    common_name: str,
    san_dns: str | Iterable[str] = (),
    *,
    now: datetime,
    validity: timedelta = timedelta(days=365),
    key_bits: int = CA_KEY_BITS,
) -> KeyPair:
    """A clientAuth certificate, e.g. gorouter's ``router.backends.cert_chain``."""
    names = [san_dns] if isinstance(san_dns, str) else list(san_dns)
    return _leaf(
        ca, common_name, [x509.DNSName(n) for n in names], [ExtendedKeyUsageOID.CLIENT_AUTH],
        now=now, validity=validity, key_bits=key_bits,
    )


# --- PEM ---------------------------------------------------------------------------------


def cert_pem(pair: KeyPair | x509.Certificate) -> bytes:
    """The certificate alone, PEM."""
    cert = pair.cert if isinstance(pair, KeyPair) else pair
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(pair: KeyPair) -> bytes:
    """The private key as PKCS#1 ``RSA PRIVATE KEY`` PEM, unencrypted, as the executor writes it."""
    return pair.key.private_bytes(
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
