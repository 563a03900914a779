"""`simnet tls check`, run as a user runs it: the model's answer, the real run, and bad input."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from simnet.model import pki
from simnet.real.tls import write_credential
from tests.test_cli import simnet

GUID = "6b1c5e0a-4f2d-4c1e-8a7b-0d9e3f2a1b4c"
ROUTER_SAN = "gorouter.service.cf.internal"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Credentials of a Diego deployment on disk, plus a few broken ones."""
    d = tmp_path_factory.mktemp("tls-cli")
    now = datetime.now(timezone.utc) - timedelta(hours=1)
    identity_ca = pki.make_ca("instance-identity", now=now, key=pki.shared_key("cli/identity-ca"))
    router_ca = pki.make_ca("router-backends", now=now, key=pki.shared_key("cli/router-ca"))
    stranger = pki.make_ca("stranger", now=now, key=pki.shared_key("cli/stranger"))
    out = {}

    def pair(name, kp):
        out[f"{name}.crt"], out[f"{name}.key"] = write_credential(d, name, kp)

    def bundle(name, *cas):
        out[name] = str(d / name)
        Path(out[name]).write_bytes(pki.bundle_pem(*cas))

    pair("identity", pki.instance_identity(identity_ca, GUID, "127.0.0.1", now=now,
                                           key=pki.shared_key("cli/identity", 2048)))
    pair("router", pki.client_certificate(router_ca, "gorouter", ROUTER_SAN, now=now,
                                          key=pki.shared_key("cli/router")))
    pair("stranger", pki.client_certificate(stranger, "gorouter", ROUTER_SAN, now=now,
                                            key=pki.shared_key("cli/router")))
    bundle("identity-ca.crt", identity_ca)
    bundle("router-ca.crt", router_ca)
    bundle("stranger-ca.crt", stranger)
    for name, text in (("garbage.crt", "hello\n-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                                       "-----END CERTIFICATE-----\n"),
                       ("empty-bundle.crt", "# no certificates here\n")):
        out[name] = str(d / name)
        Path(out[name]).write_text(text)
    return out


def check(files, *args):
    base = ["tls", "check", "--server-cert", files["identity.crt"], "--server-key",
            files["identity.key"], "--json"]
    return simnet(*base, *args)


def mtls(files, client: str | None = "router"):
    """A sidecar requiring router certificates; ``client``: whose certificate the router holds."""
    args = ["--ca", files["identity-ca.crt"], "--expect-san", GUID, "--require-client-cert",
            "--client-ca", files["router-ca.crt"]]
    if client:
        args += ["--client-cert", files[f"{client}.crt"], "--client-key", files[f"{client}.key"]]
    return args


def test_model_answers_the_diego_route_integrity_questions(files):
    ok = check(files, *mtls(files), "--alpn", "h2,http/1.1")
    assert ok.returncode == 0, ok.stderr
    assert {k: json.loads(ok.stdout)[k] for k in ("handshake", "alpn", "router_status")} == {
        "handshake": "ok", "alpn": "h2", "router_status": 200}

    stale = json.loads(check(files, "--ca", files["identity-ca.crt"], "--expect-san",
                             "another-instance").stdout)
    assert (stale["reason"], stale["router_status"], stale["router_retries"]) == (
        "server_name_mismatch", 503, True)

    untrusted = json.loads(check(files, "--ca", files["stranger-ca.crt"], "--expect-san", GUID).stdout)
    assert (untrusted["reason"], untrusted["router_status"]) == ("server_cert_untrusted", 526)

    later = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    expired = json.loads(check(files, "--ca", files["identity-ca.crt"], "--expect-san", GUID,
                               "--at", later).stdout)
    assert (expired["reason"], expired["router_status"]) == ("server_cert_expired", 526)


def test_model_gives_gorouter_statuses_for_client_certificates(files):
    none = json.loads(check(files, *mtls(files, None)).stdout)
    assert (none["alert"], none["router_status"]) == ("certificate_required", 496)
    tls12 = json.loads(check(files, *mtls(files, None), "--max-tls-version", "TLSv1.2").stdout)
    assert (tls12["alert"], tls12["router_status"]) == ("handshake_failure", 525)
    san = json.loads(check(files, *mtls(files), "--verify-client-san", "someone-else").stdout)
    assert (san["alert"], san["router_status"], san["router_retries"]) == (
        "certificate_unknown", 502, True)  # retried: no connection was obtained
    # gorouter (Go) sends no certificate that no CA in Envoy's request issued; OpenSSL sends it
    go = json.loads(check(files, *mtls(files, "stranger")).stdout)
    ossl = json.loads(check(files, *mtls(files, "stranger"), "--router", "openssl").stdout)
    assert (go["reason"], ossl["reason"]) == ("client_cert_missing", "client_cert_untrusted")
    assert go["router_status"] == ossl["router_status"] == 496


@pytest.mark.envoy
@pytest.mark.parametrize("client,extra", [
    ("router", ()), ("stranger", ()), ("router", ("--verify-client-san", "someone-else")),
    ("router", ("--expect-san", "another-instance")), ("router", ("--max-tls-version", "TLSv1.2")),
])
def test_real_envoy_run_agrees_with_the_model(files, client, extra):
    out = check(files, *mtls(files, client), "--alpn", "h2,http/1.1", *extra, "--real")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["agrees"] is True and report["server"] == "envoy"
    assert report["router_status"] == report["model"]["router_status"]


def test_real_openssl_run_agrees_with_the_model(files):
    out = check(files, *mtls(files, "stranger"), "--server", "openssl", "--real")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["agrees"] is True and report["reason"] == "client_cert_untrusted"


@pytest.mark.parametrize("overrides, extra, message", [
    ({"--server-cert": "/nonexistent/identity.crt"}, [],
     "/nonexistent/identity.crt: --server-cert: cannot read"),
    ({"--ca": "garbage.crt"}, [], "garbage.crt:2: --ca: not a valid certificate"),
    ({"--ca": "empty-bundle.crt"}, [], "empty-bundle.crt: --ca: no PEM certificate in this file"),
    ({"--server-key": "router.key"}, [],
     "router.key:1: --server-key: this key does not match the certificate"),
    ({"--server-key": "identity.crt"}, [], "identity.crt: --server-key: no PEM private key"),
    ({}, ["--client-cert", "router.crt"], "--client-cert: --client-cert and --client-key go together"),
    ({}, ["--require-client-cert"], "--client-ca: --require-client-cert needs --client-ca"),
    ({}, ["--verify-client-san", "x"], "--verify-client-san: needs --require-client-cert"),
    ({}, ["--at", "yesterday"], "--at: 'yesterday' is not an ISO 8601 time"),
    ({}, ["--server", "nginx"], "--server: must be envoy or openssl"),
])
def test_bad_input_exits_2_naming_the_file_and_field(files, overrides, extra, message):
    options = {"--server-cert": files["identity.crt"], "--server-key": files["identity.key"],
               "--ca": files["identity-ca.crt"]}
    options |= {flag: files.get(value, value) for flag, value in overrides.items()}
    out = simnet("tls", "check", *[x for kv in options.items() for x in kv],
                 *[files.get(a, a) for a in extra])
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
