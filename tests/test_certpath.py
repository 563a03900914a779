"""Certificates, path validation and the handshake model's own rules (no sockets).

The differential tests (test_tls_differential, test_tls_envoy, test_tls_go) are the evidence
that the model matches real stacks; these pin the model's parts one by one, so a regression
names the rule it broke.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from simnet.model import pki
from simnet.model.certpath import PathError, Purpose, Verifier, dns_matches, verify_path
from simnet.model.handshake import TLS12, TLS13, Client, Reason, Server, handshake
from simnet.model.pki import Defect
from simnet.model.tls import failure_verdict

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
H = pki.hierarchy(NOW - timedelta(days=1), prefix="unit")


@pytest.mark.parametrize("pattern,name,ok", [
    ("guid", "GUID", True), ("guid.", "guid", True), ("*.apps.example.com", "a.apps.example.com", True),
    ("*.apps.example.com", "apps.example.com", False), ("*.apps.example.com", "a.b.apps.example.com", False),
    ("*.com", "example.com", False), ("a*.example.com", "ab.example.com", False),
    ("*.example.com", ".example.com", False),
])
def test_dns_names_match_as_rfc_6125_says(pattern, name, ok):
    assert dns_matches(pattern, name) is ok


def test_instance_identity_is_what_the_executor_issues():
    pair = pki.instance_identity(H.root, "6b1c5e0a-guid", "198.18.0.7", now=NOW)
    cert = pair.cert
    assert pki.san_dns_names(cert) == ["6b1c5e0a-guid"] and pki.san_ip_addresses(cert) == ["198.18.0.7"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert pair.chain == (H.root.cert,)  # the issuing CA is appended, as the executor does
    assert pair.rotation_at == NOW + timedelta(hours=23, minutes=30)


def test_spiffe_identity_has_an_empty_subject_and_a_critical_uri_san():
    cert = pki.spiffe_identity(H.root, "cluster.local", "cf-workloads", "default", now=NOW).cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert len(cert.subject) == 0 and san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/cf-workloads/sa/default"]


@pytest.mark.parametrize("defect,error", [
    (None, None),
    (Defect.EXPIRED, PathError.CERT_HAS_EXPIRED),
    (Defect.NOT_YET_VALID, PathError.CERT_NOT_YET_VALID),
    (Defect.WRONG_SAN, PathError.HOSTNAME_MISMATCH),
    (Defect.UNTRUSTED_CA, PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
    (Defect.WRONG_EXTENDED_KEY_USAGE, PathError.INVALID_PURPOSE),
    (Defect.WRONG_KEY_USAGE, PathError.INVALID_PURPOSE),
    (Defect.MISSING_INTERMEDIATE, PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
    (Defect.SELF_SIGNED, PathError.DEPTH_ZERO_SELF_SIGNED_CERT),
])
def test_each_defect_fails_openssl_for_its_own_reason(defect, error):
    pair = pki.defective(H, "guid", "server", [defect] if defect else [], now=NOW)
    presented = (pair.cert, *pair.chain)
    assert verify_path(presented, (H.root.cert,), purpose=Purpose.SERVER, at=NOW,
                       verifier=Verifier.OPENSSL, name="guid") == error


@pytest.mark.parametrize("defects,openssl,go", [
    # OpenSSL: chain, purpose, name, time. Go: time, name, chain, extended key usage.
    ({Defect.EXPIRED, Defect.WRONG_SAN}, PathError.HOSTNAME_MISMATCH, PathError.CERT_HAS_EXPIRED),
    ({Defect.UNTRUSTED_CA, Defect.WRONG_SAN}, PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
     PathError.HOSTNAME_MISMATCH),
    ({Defect.EXPIRED, Defect.WRONG_EXTENDED_KEY_USAGE}, PathError.INVALID_PURPOSE,
     PathError.CERT_HAS_EXPIRED),
    ({Defect.WRONG_KEY_USAGE}, PathError.INVALID_PURPOSE, None),  # Go ignores key usage
])
def test_verifiers_report_the_first_failure_in_their_own_order(defects, openssl, go):
    pair = pki.defective(H, "guid", "server", defects, now=NOW)
    presented = (pair.cert, *pair.chain)

    def first(verifier):
        return verify_path(presented, (H.root.cert,), purpose=Purpose.SERVER, at=NOW,
                           verifier=verifier, name="guid")

    assert (first(Verifier.OPENSSL), first(Verifier.GO)) == (openssl, go)


def test_partial_chains_only_for_envoy_and_go():
    """An intermediate alone in the trust store anchors a chain for Envoy (PARTIAL_CHAIN) and
    Go (any pooled certificate), not for OpenSSL's default verification."""
    pair = pki.defective(H, "guid", "client", [], now=NOW, via_intermediate=True)
    presented = (pair.cert, *pair.chain)
    results = {v: verify_path(presented, (H.intermediate.cert,), purpose=Purpose.CLIENT, at=NOW,
                              verifier=v) for v in Verifier}
    assert results == {Verifier.OPENSSL: PathError.UNABLE_TO_GET_ISSUER_CERT,
                       Verifier.BORINGSSL: None, Verifier.GO: None}


def _sides(**server):
    s = pki.defective(H, "guid", "server", [], now=NOW)
    c = pki.defective(H, "gorouter", "client", [], now=NOW)
    client = Client(trusted=(H.root.cert,), server_name="guid", chain=(c.cert,), alpn=("h2", "http/1.1"))
    return client, Server(chain=(s.cert,), **server)


@pytest.mark.parametrize("version,alert", [(TLS13, "certificate_required"), (TLS12, "handshake_failure")])
def test_missing_client_certificate_alert_depends_on_the_version(version, alert):
    client, server = _sides(require_client_cert=True, trusted_client_cas=(H.root.cert,))
    out = handshake(replace(client, chain=(), max_version=version), server, NOW)
    assert (out.reason, out.rejected_by, out.alert) == (Reason.CLIENT_CERT_MISSING, "server", alert)


def test_alpn_is_the_servers_first_protocol_the_client_offers():
    client, server = _sides(alpn=("http/1.1", "h2"))
    assert handshake(client, server, NOW).alpn == "http/1.1"
    client, server = _sides(alpn=("h3",))
    out = handshake(client, server, NOW)
    assert out.ok and out.alpn is None  # no overlap: no protocol, not a failure


def test_tls12_ciphers_matter_only_in_tls12():
    client, server = _sides(ciphers=("ECDHE-RSA-AES128-GCM-SHA256",))
    client = replace(client, ciphers=("ECDHE-ECDSA-AES128-GCM-SHA256",))
    assert handshake(client, server, NOW).ok  # TLS 1.3 negotiated
    out = handshake(replace(client, max_version=TLS12), server, NOW)
    assert (out.reason, out.alert) == (Reason.NO_SHARED_CIPHER, "handshake_failure")


def test_verify_client_san_is_envoys_check_only():
    s = pki.defective(H, "guid", "server", [], now=NOW)
    with pytest.raises(ValueError, match="Envoy"):
        Server(chain=(s.cert,), verify_client_san=("x",), verifier=Verifier.OPENSSL)


@pytest.mark.parametrize("rejected_by,alert,error,status,pruned", [
    ("client", "bad_certificate", PathError.HOSTNAME_MISMATCH, 503, True),  # route integrity
    ("client", "bad_certificate", PathError.CERT_HAS_EXPIRED, 526, True),  # Go wraps it: 526
    ("client", "bad_certificate", PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY, 526, True),
    ("client", "bad_certificate", PathError.INVALID_PURPOSE, 526, True),
    ("server", "bad_certificate", None, 496, True),
    ("server", "unknown_ca", None, 496, True),
    ("server", "certificate_required", None, 496, True),
    ("server", "handshake_failure", None, 525, True),
    # no classifier names these alerts: 502, never pruned, but retried all the same, since the
    # handshake failed before gorouter obtained a connection (IncompleteRequestError;
    # routing-release gorouter proxy/round_tripper/proxy_round_tripper.go isRetriable)
    ("server", "certificate_unknown", None, 502, False),
    ("server", "certificate_expired", None, 502, False),
    ("server", "protocol_version", None, 502, False),
])
def test_gorouter_classifies_failures_as_its_classifiers_do(rejected_by, alert, error, status, pruned):
    v = failure_verdict(rejected_by, alert, error)
    assert (v.status, v.retriable, v.prunable) == (status, True, pruned)
