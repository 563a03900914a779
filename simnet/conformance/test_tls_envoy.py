"""The handshake model against the real Envoy: the derived sidecar bootstrap terminating TLS.

For each case, the Diego sidecar bootstrap (``model.envoy.sidecar_bootstrap``) is built from
drawn proxy settings (mTLS, trusted CAs, ``verify_subject_alt_name``, HTTP/2) and a drawn
server certificate, a real Envoy serves it in front of a banner app on 127.0.0.1, and an
OpenSSL client acting as the router connects with or without a certificate, with right or
wrong SANs. The model's prediction for the same listener (``model.tls.sidecar_listener``)
must equal what the client saw: its own verification error, or Envoy's alert, or the
negotiated version and ALPN and the app's banner.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simnet.model import pki
from simnet.model.certpath import Verifier
from simnet.model.envoy import CertFiles
from simnet.model.handshake import handshake
from simnet.model.pki import Defect
from simnet.model.tls import sidecar_listener
from simnet.real.tls import envoy_handshake, observable, write_credential
from simnet.scenario.schema import Proxy
from simnet.strategies.tls import (CAS, CLIENT_NAME, HANDSHAKES, SERVER_NAME, Case, build, cases,
                                  server_credential)

pytestmark = pytest.mark.envoy

H = pki.hierarchy(datetime.now(timezone.utc) - timedelta(days=1), prefix="envoy-differential")


def _proxy(case: Case, http2: bool) -> Proxy:
    return Proxy(
        require_and_verify_client_certificates=case.require_client_cert,
        trusted_ca_certificates=sorted(case.server_trusts) if case.require_client_cert else [],
        verify_subject_alt_name=list(case.verify_client_san) if case.require_client_cert else [],
        enable_http2=http2,
    )


def compare(case: Case, http2: bool, *, connector=None, verifier=Verifier.OPENSSL) -> dict:
    """Run one case through a real Envoy; assert the model predicted what the client saw.
    ``connector``/``verifier``: the client that runs (OpenSSL by default, or Go)."""
    now = datetime.now(timezone.utc)
    proxy = _proxy(case, http2)
    served = server_credential(case, H, now)
    trusted = tuple(getattr(H, n).cert for n in CAS if n in case.server_trusts)
    client, client_key, _, _ = build(case, H, now, server_verifier=Verifier.BORINGSSL)
    client = replace(client, verifier=verifier)
    with tempfile.TemporaryDirectory(prefix="simnet-envoy-tls-") as d:
        ca = Path(d, "trusted.pem")
        ca.write_bytes(pki.bundle_pem(*trusted))
        files = CertFiles(*write_credential(Path(d), "sidecar", served),
                          str(ca) if proxy.trusted_ca_certificates else None)
        run = envoy_handshake(client, client_key, proxy, files, guid=SERVER_NAME,
                              connector=connector)
    listener = sidecar_listener(proxy, run.listen_port, (served.cert, *served.chain), trusted)
    predicted = handshake(client, listener, now)
    expected = observable(predicted, server_visible=False)
    HANDSHAKES[f"{'Go' if verifier is Verifier.GO else 'OpenSSL'} -> Envoy"] += 1
    assert run.view == expected, (
        f"model {expected} != Envoy {run.view}\ncase: {case} http2={http2} client={verifier.value}"
        f"\nmodel: {predicted}"
        f"\nclient saw: {run.client}\nenvoy log:\n{run.log[-2000:]}")
    return run.view


BASE = Case(
    server_defects=frozenset(), server_via_intermediate=False, client_trusts=frozenset({"root"}),
    expect_name=True, client_cert=frozenset(), client_via_intermediate=False,
    require_client_cert=True, server_trusts=frozenset({"root"}), verify_client_san=(CLIENT_NAME,),
    client_alpn=("h2", "http/1.1"), server_alpn=(), client_versions=("TLSv1.2", "TLSv1.3"),
    server_versions=("TLSv1.2", "TLSv1.3"), client_ciphers=None, server_ciphers=None,
)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("defect", [None, *Defect])
def test_router_certificate_defects(defect, version):
    """mTLS with a SAN check: each defect of the router's certificate, and none, in both
    versions. Only a good certificate gets through; Envoy's alert is the predicted one."""
    case = replace(BASE, client_cert=frozenset({defect} if defect else ()),
                   client_versions=(version, version))
    real = compare(case, True)
    assert real["ok"] is (defect is None)


@pytest.mark.parametrize("defect", [None, *Defect])
def test_sidecar_certificate_defects(defect):
    """Each defect of the sidecar's own certificate, as the router's OpenSSL sees it."""
    real = compare(replace(BASE, server_defects=frozenset({defect} if defect else ())), True)
    assert real["ok"] is (defect is None)


@pytest.mark.parametrize("san,ok", [((CLIENT_NAME,), True), (("someone-else",), False),
                                    (("someone-else", CLIENT_NAME), True), ((), True)])
def test_verify_subject_alt_name(san, ok):
    assert compare(replace(BASE, verify_client_san=san), True)["ok"] is ok


@pytest.mark.parametrize("http2,client_alpn,expected", [
    (True, ("h2", "http/1.1"), "h2"), (True, ("http/1.1",), "http/1.1"), (True, (), None),
    (False, ("h2", "http/1.1"), None)])
def test_alpn(http2, client_alpn, expected):
    assert compare(replace(BASE, client_alpn=client_alpn), http2)["alpn"] == expected


@settings(max_examples=max(10, settings().max_examples // 2))
@given(case=cases(envoy=True), http2=st.booleans())
def test_model_predicts_envoy(case, http2):
    if case.require_client_cert and not case.server_trusts:
        case = replace(case, server_trusts=frozenset({"root"}))  # Envoy needs a CA file for mTLS
    compare(case, http2)
