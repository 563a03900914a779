"""The Diego sidecar bootstrap dict and the instance identity certificates (no Envoy needed)."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simnet.model import pki
from simnet.model.envoy import (
    ALPN_PROTOCOLS,
    UNLIMITED,
    CertFiles,
    downstream_tls_context,
    sidecar_bootstrap,
)
from simnet.model.ports import proxy_ports
from simnet.scenario.schema import Proxy

GUID = "b66d0aa2-cf1f-4b4e-6029-b6c5"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
FILES = CertFiles("/certs/id.crt", "/certs/id.key", "/certs/ca.crt")
MTLS = Proxy(
    require_and_verify_client_certificates=True,
    trusted_ca_certificates=["router-ca"],
    verify_subject_alt_name=["gorouter.service.cf.internal"],
)


def bootstrap(app_ports, proxy=Proxy(), files=FILES, **kw):
    return sidecar_bootstrap(proxy_ports(app_ports), guid=GUID, proxy=proxy, cert_files=files, **kw)


def listeners(b):
    return {l["name"]: l for l in b["static_resources"]["listeners"]}


def tls_context(listener):
    return listener["filter_chains"][0]["transport_socket"]["typed_config"]


def port_of(address):
    return address["socket_address"]["port_value"]


# --- bootstrap ---------------------------------------------------------------------------


def test_listener_per_mapping_including_c2c():
    b = bootstrap([8080, 9999, 2222])
    ls = listeners(b)
    assert list(ls) == [
        "listener-8080-61001", "listener-8080-61443", "listener-9999-61002", "listener-2222-61003",
    ]
    for name, l in ls.items():
        app, proxy = (int(x) for x in name.split("-")[1:])
        assert l["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": proxy}}
        (f,) = l["filter_chains"][0]["filters"]
        assert f["typed_config"]["cluster"] == f"service-cluster-{app}"
        assert f["typed_config"]["stat_prefix"] == f"stats-{app}-{proxy}"
        assert tls_context(l)["common_tls_context"]["tls_params"]["cipher_suites"] == [
            "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256",
        ]


def test_listen_address_is_configurable():
    b = bootstrap([8080], listen_address="127.0.0.1")
    assert {l["address"]["socket_address"]["address"] for l in listeners(b).values()} == {"127.0.0.1"}


def test_admin_on_loopback_at_allocated_port():
    pp = proxy_ports([8080, 9090])
    b = sidecar_bootstrap(pp, guid=GUID, proxy=Proxy(), cert_files=FILES)
    assert b["admin"]["address"] == {"socket_address": {"address": "127.0.0.1", "port_value": pp.admin}}
    assert pp.admin == 61003
    assert b["node"] == {"id": f"sidecar~127.0.0.1~{GUID}~x", "cluster": "proxy-cluster"}


def test_alpn_offered_only_with_http2():
    on = listeners(bootstrap([8080, 9090], Proxy(enable_http2=True)))
    off = listeners(bootstrap([8080, 9090], Proxy(enable_http2=False)))
    assert tls_context(on["listener-9090-61002"])["common_tls_context"]["alpn_protocols"] == list(
        ALPN_PROTOCOLS
    )
    assert ALPN_PROTOCOLS == ("h2,http/1.1",)
    for l in off.values():
        assert "alpn_protocols" not in tls_context(l)["common_tls_context"]


def test_c2c_listener_has_no_alpn_and_no_client_cert_requirement():
    c2c = listeners(bootstrap([8080], MTLS))["listener-8080-61443"]
    ctx = tls_context(c2c)
    assert "alpn_protocols" not in ctx["common_tls_context"]
    assert "validation_context" not in ctx["common_tls_context"]
    assert "require_client_certificate" not in ctx


def test_c2c_listener_serves_c2c_credential_when_given():
    files = CertFiles("/id.crt", "/id.key", None, "/c2c.crt", "/c2c.key")
    ls = listeners(bootstrap([8080], files=files))
    (cert,) = tls_context(ls["listener-8080-61443"])["common_tls_context"]["tls_certificates"]
    assert cert == {"certificate_chain": {"filename": "/c2c.crt"}, "private_key": {"filename": "/c2c.key"}}
    (cert,) = tls_context(ls["listener-8080-61001"])["common_tls_context"]["tls_certificates"]
    assert cert["certificate_chain"]["filename"] == "/id.crt"


def test_mtls_validation_context_with_san_match():
    ctx = tls_context(listeners(bootstrap([8080, 9090], MTLS))["listener-9090-61002"])
    assert ctx["require_client_certificate"] is True
    validation = ctx["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/certs/ca.crt"}
    matchers = validation["match_typed_subject_alt_names"]
    assert {m["matcher"]["exact"] for m in matchers} == {"gorouter.service.cf.internal"}
    assert {m["san_type"] for m in matchers} == {"DNS", "URI", "EMAIL", "IP_ADDRESS"}


def test_mtls_without_san_verification_has_no_matchers():
    proxy = Proxy(require_and_verify_client_certificates=True, trusted_ca_certificates=["ca"])
    ctx = tls_context(listeners(bootstrap([8080], proxy))["listener-8080-61001"])
    assert ctx["common_tls_context"]["validation_context"] == {"trusted_ca": {"filename": "/certs/ca.crt"}}


def test_no_client_cert_requirement_without_mtls():
    for l in listeners(bootstrap([8080, 9090])).values():
        assert "require_client_certificate" not in tls_context(l)
        assert "validation_context" not in tls_context(l)["common_tls_context"]


def test_mtls_without_trusted_ca_file_is_an_error():
    with pytest.raises(ValueError, match="trusted_ca"):
        bootstrap([8080], MTLS, files=CertFiles("/a", "/b"))


def test_one_static_cluster_per_distinct_app_port():
    b = bootstrap([8080, 9090, 8080, 2222], app_address="10.255.0.7")
    clusters = b["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == [
        "service-cluster-8080", "service-cluster-9090", "service-cluster-2222",
    ]
    for c in clusters:
        port = int(c["name"].rsplit("-", 1)[1])
        assert c["type"] == "STATIC"
        assert c["connect_timeout"] == "0.25s"
        (ep,) = c["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert ep["endpoint"]["address"] == {
            "socket_address": {"address": "10.255.0.7", "port_value": port}
        }
        limits = {k: v for t in c["circuit_breakers"]["thresholds"] for k, v in t.items()}
        assert limits == {
            "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
            "max_requests": UNLIMITED,
        }
    assert UNLIMITED == 2**32 - 1


def test_many_ports_listeners_match_mappings():
    ports = list(range(3000, 3050))
    pp = proxy_ports(ports)
    b = sidecar_bootstrap(pp, guid=GUID, proxy=Proxy(), cert_files=FILES)
    got = [(l["name"], port_of(l["address"])) for l in b["static_resources"]["listeners"]]
    assert got == [(f"listener-{m.app}-{m.proxy}", m.proxy) for m in pp.mappings]
    assert len(b["static_resources"]["clusters"]) == 50


@pytest.mark.parametrize("port", [61001, 61443])
@pytest.mark.parametrize("proxy", [
    Proxy(), Proxy(enable_http2=False),
    Proxy(require_and_verify_client_certificates=True, trusted_ca_certificates=["r"]),
    Proxy(require_and_verify_client_certificates=True, trusted_ca_certificates=["r"],
          verify_subject_alt_name=["gorouter", "other"]),
])
def test_handshake_model_listener_is_the_bootstrap_listener(proxy, port):
    """``tls.sidecar_listener`` (what the handshake model runs) and ``downstream_tls_context``
    (what Envoy gets) describe the same listener: ciphers, ALPN, client certificates, SANs."""
    from simnet.model.tls import sidecar_listener

    files = CertFiles("/certs/id.crt", "/certs/id.key", "/certs/ca.crt")
    ctx = downstream_tls_context(port, proxy=proxy, cert_files=files)
    common = ctx["common_tls_context"]
    server = sidecar_listener(proxy, port, (object(),))
    assert list(server.ciphers) == common["tls_params"]["cipher_suites"]
    assert server.alpn == tuple(p for e in common.get("alpn_protocols", []) for p in e.split(","))
    assert server.require_client_cert == ctx.get("require_client_certificate", False)
    matchers = common.get("validation_context", {}).get("match_typed_subject_alt_names", [])
    assert set(server.verify_client_san) == {m["matcher"]["exact"] for m in matchers}


# --- pki ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return pki.make_ca("instance-identity", now=NOW)


@pytest.fixture(scope="module")
def identity(ca):
    return pki.instance_identity(ca, GUID, "10.255.12.34", now=NOW, organizational_units=["app:x"])


def test_identity_names_and_sans(identity):
    cert = identity.cert
    assert identity.common_name == GUID
    assert pki.san_dns_names(cert) == [GUID]
    assert pki.san_ip_addresses(cert) == ["10.255.12.34"]
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "app:x"


def test_identity_usages(identity):
    eku = identity.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = identity.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and ku.key_agreement
    assert not ku.key_cert_sign


def test_identity_key_is_rsa_for_ecdhe_rsa_ciphers(identity):
    assert isinstance(identity.key, rsa.RSAPrivateKey)
    assert identity.key.key_size == pki.IDENTITY_KEY_BITS == 3072


def test_identity_validity_and_rotation(identity):
    cert = identity.cert
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(hours=24)
    assert identity.rotation_at == NOW + timedelta(hours=23, minutes=30)
    assert NOW < identity.rotation_at < cert.not_valid_after_utc


@pytest.mark.parametrize(
    "validity, rotate_after",
    [
        (timedelta(hours=24), timedelta(hours=23, minutes=30)),
        (timedelta(hours=5), timedelta(hours=4, minutes=30)),
        (timedelta(hours=4), timedelta(hours=3, minutes=30)),
        (timedelta(hours=1), timedelta(minutes=52, seconds=30)),
    ],
)
def test_rotation_period(validity, rotate_after):
    assert pki.rotation_period(validity) == rotate_after


def test_identity_chain_is_leaf_then_issuer(ca, identity):
    assert identity.chain == (ca.cert,)
    pem = pki.chain_pem(identity)
    assert pem.count(b"BEGIN CERTIFICATE") == 2
    assert pem.startswith(pki.cert_pem(identity))
    assert pki.key_pem(identity).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    identity.cert.verify_directly_issued_by(ca.cert)


def test_intermediate_ca_chains_to_root():
    root = pki.make_ca("root", now=NOW)
    inter = pki.make_ca("intermediate", now=NOW, parent=root)
    assert inter.chain == (root.cert,)
    inter.cert.verify_directly_issued_by(root.cert)
    leaf = pki.instance_identity(inter, GUID, "10.0.0.1", now=NOW, key_bits=2048)
    leaf.cert.verify_directly_issued_by(inter.cert)
    bc = inter.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca


def test_c2c_identity_has_internal_routes_and_no_ip(ca):
    c2c = pki.c2c_identity(ca, GUID, ["app.apps.internal"], now=NOW, key_bits=2048)
    assert pki.san_dns_names(c2c.cert) == [GUID, "app.apps.internal"]
    assert pki.san_ip_addresses(c2c.cert) == []


def test_router_client_certificate(ca):
    client = pki.client_certificate(ca, "gorouter", "gorouter.service.cf.internal", now=NOW)
    eku = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.san_dns_names(client.cert) == ["gorouter.service.cf.internal"]
    assert client.cert.not_valid_after_utc == NOW + timedelta(days=365)


def test_ipv6_container_address(ca):
    leaf = pki.instance_identity(ca, GUID, "fd00::5", now=NOW, key_bits=2048)
    assert pki.san_ip_addresses(leaf.cert) == [str(ipaddress.ip_address("fd00::5"))]
