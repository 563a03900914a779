"""The handshake model's Go verifier against real Go: gorouter's side of the connection.

gorouter is Go. A Go client configured as gorouter configures its backend transport
(``simnet/real/goprobe``) connects to a Python OpenSSL server and to the real Envoy serving the
derived sidecar bootstrap. The model predicts with the Go verifier: leaf validity before the
name, no common-name fallback, any pooled certificate as an anchor, no certificate sent unless
Envoy's CertificateRequest names its issuer. Against the OpenSSL server both ends are seen
(Go's alert and the server's reason too); against Envoy, what Go saw. Every client-side
failure must also be a ``tls.CertificateVerificationError``, the premise of gorouter's 526 for
expired certificates.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simnet.model import pki
from simnet.model.certpath import Verifier
from simnet.model.handshake import handshake
from simnet.model.pki import Defect
from simnet.real.gotls import go_connect, go_version
from simnet.real.tls import OpenSSLServer, observable, observed
from simnet.conformance.test_tls_envoy import BASE, compare as envoy_compare
from simnet.strategies.tls import HANDSHAKES, Case, build, cases

pytestmark = pytest.mark.envoy

H = pki.hierarchy(datetime.now(timezone.utc) - timedelta(days=1), prefix="go-differential")


def test_go_toolchain_is_installed():
    assert go_version().startswith("go1.")


def compare_openssl(case: Case) -> dict:
    """Go client, Python OpenSSL server: both ends' views must be the prediction."""
    now = datetime.now(timezone.utc)
    client, client_key, server, server_key = build(case, H, now, server_verifier=Verifier.OPENSSL)
    client = replace(client, verifier=Verifier.GO)
    predicted = handshake(client, server, now)
    with OpenSSLServer(server, server_key) as srv:
        seen = go_connect(client, client_key, srv.address)
        server_view = srv.next_view()
    real, expected = observed(seen, server_view), observable(predicted, server_visible=True)
    HANDSHAKES["Go -> OpenSSL"] += 1
    assert real == expected, (f"model {expected} != Go {real}\ncase: {case}\nmodel: {predicted}"
                              f"\nGo saw: {seen}\nserver saw: {server_view}")
    return real


@settings(max_examples=settings().max_examples * 2)
@given(case=cases())
def test_model_predicts_go_against_openssl(case):
    compare_openssl(replace(case, expect_name=True))  # gorouter always names the server


@pytest.mark.parametrize("defects,error", [
    # Go checks the leaf's validity before the name: an expired certificate from another
    # instance fails as expired (526 in gorouter), where OpenSSL reports the name first
    ({Defect.EXPIRED, Defect.WRONG_SAN}, 10),
    ({Defect.UNTRUSTED_CA, Defect.WRONG_SAN}, 62),  # and the name before the chain
    ({Defect.WRONG_KEY_USAGE}, None),  # Go ignores the key usage extension
])
def test_go_check_order(defects, error):
    real = compare_openssl(replace(BASE, server_defects=frozenset(defects), require_client_cert=False,
                                   verify_client_san=()))
    assert real.get("verify_error") == error


def test_go_sends_no_certificate_envoy_did_not_ask_for():
    """gorouter holding a certificate from a CA Envoy does not list: Envoy sees none at all."""
    case = replace(BASE, client_cert=frozenset({Defect.UNTRUSTED_CA}), verify_client_san=())
    real = envoy_compare(case, True, connector=go_connect, verifier=Verifier.GO)
    assert real["alert"] == "certificate_required"


@settings(max_examples=max(10, settings().max_examples // 2))
@given(case=cases(envoy=True), http2=st.booleans())
def test_model_predicts_go_against_envoy(case, http2):
    """The production pairing: gorouter's Go client and the sidecar's Envoy."""
    case = replace(case, expect_name=True)
    if case.require_client_cert and not case.server_trusts:
        case = replace(case, server_trusts=frozenset({"root"}))
    envoy_compare(case, http2, connector=go_connect, verifier=Verifier.GO)
