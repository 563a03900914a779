"""The handshake model against real OpenSSL: Python ``ssl`` client and server on 127.0.0.1.

Every case is predicted by ``simnet.model.handshake`` and then run for real with the same
certificates and settings; what both ends saw must equal the prediction, field for field
(reason, who rejected, the alert, OpenSSL's verify error, TLS version, ALPN). Hypothesis draws
certificate defects on both sides, trust stores, client-certificate policy, ALPN, version
ranges and TLS 1.2 cipher lists; a disagreement prints the shrunk case and both views.
"""

from __future__ import annotations

import ssl
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings

from simnet.model import pki
from simnet.model.certpath import Verifier
from simnet.model.handshake import DEFAULT_TLS12_CIPHERS, handshake
from simnet.model.pki import Defect
from simnet.real.tls import observable, openssl_handshake
from simnet.strategies.tls import HANDSHAKES, Case, build, cases

H = pki.hierarchy(datetime.now(timezone.utc) - timedelta(days=1), prefix="differential")


def compare(case: Case) -> dict:
    """Predict and run one case; return the agreed view (asserts they agree)."""
    now = datetime.now(timezone.utc)
    client, client_key, server, server_key = build(case, H, now, server_verifier=Verifier.OPENSSL)
    predicted = handshake(client, server, now)
    real, client_view, server_view = openssl_handshake(client, client_key, server, server_key)
    expected = observable(predicted, server_visible=True)
    HANDSHAKES["OpenSSL -> OpenSSL"] += 1
    assert real == expected, (f"model {expected} != real {real}\ncase: {case}\nmodel: {predicted}"
                              f"\nreal client: {client_view}\nreal server: {server_view}")
    return real


BASE = Case(
    server_defects=frozenset(), server_via_intermediate=False, client_trusts=frozenset({"root"}),
    expect_name=True, client_cert=frozenset(), client_via_intermediate=False,
    require_client_cert=True, server_trusts=frozenset({"root"}), verify_client_san=(),
    client_alpn=("h2", "http/1.1"), server_alpn=("h2", "http/1.1"),
    client_versions=("TLSv1.2", "TLSv1.3"), server_versions=("TLSv1.2", "TLSv1.3"),
    client_ciphers=None, server_ciphers=None,
)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("defect", [None, *Defect])
def test_every_defect_on_each_side(defect, side, version):
    """Each single defect, on the server's and on the client's certificate, in both versions:
    the model's verdict is the real one, and a defect is never accepted (except a client
    SAN, which OpenSSL's server does not check)."""
    field = "server_defects" if side == "server" else "client_cert"
    case = replace(BASE, **{field: frozenset({defect} if defect else ()),
                            "client_versions": (version, version)})
    real = compare(case)
    accepted = defect is None or (side == "client" and defect is Defect.WRONG_SAN)
    assert real["ok"] is accepted
    if real["ok"]:
        assert (real["version"], real["alpn"]) == (version, "h2")


def test_missing_client_certificate_alert_depends_on_the_version():
    for version, alert in (("TLSv1.3", "certificate_required"), ("TLSv1.2", "handshake_failure")):
        case = replace(BASE, client_cert=None, client_versions=(version, version))
        assert compare(case)["alert"] == alert


@settings(max_examples=settings().max_examples * 5)
@given(case=cases())
def test_model_predicts_openssl(case):
    compare(case)


def test_default_cipher_lists_are_this_openssls():
    """The model's OpenSSL default TLS 1.2 suites (for an RSA certificate) are what the real
    OpenSSL offers by default, in its order."""
    real = [c["name"] for c in ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).get_ciphers()
            if c["protocol"] == "TLSv1.2" and c["auth"] == "auth-rsa"]
    assert tuple(real) == DEFAULT_TLS12_CIPHERS[Verifier.OPENSSL]
