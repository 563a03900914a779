"""One router-to-sidecar handshake, predicted and optionally run for real (``simnet tls check``).

The files and settings on the command line become the model's ``handshake.Client`` (the router)
and ``handshake.Server`` (the sidecar listener, as the executor configures Envoy, or a plain
OpenSSL server). ``predict`` answers without opening a socket; ``run`` performs the same
handshake with OpenSSL as the router against a real Envoy (or OpenSSL) on 127.0.0.1, and says
whether the model agreed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from simnet import credentials
from simnet.errors import Problem, SimnetError
from simnet.model.certpath import PathError, Verifier
from simnet.model.envoy import CertFiles
from simnet.model.handshake import Client, Server, handshake
from simnet.model.tls import (
    Verdict,
    failure_verdict,
    router_client,
    sidecar_listener,
    verdict,
)
from simnet.scenario.schema import BackendTLS, Proxy

CLI = "<command line>"


@dataclass(frozen=True)
class Case:
    """A handshake to check: both sides as the model sees them, and the files behind them."""

    client: Client
    client_key: rsa.RSAPrivateKey | None
    server: Server
    server_key: rsa.RSAPrivateKey
    proxy: Proxy
    files: CertFiles
    server_kind: str  # "envoy" | "openssl"


def load_case(*, server_cert: Path, server_key: Path, ca: Path, expect_san: str | None,
              client_cert: Path | None, client_key: Path | None, require_client_cert: bool,
              client_ca: Path | None, verify_client_san: list[str], alpn: list[str],
              http2: bool, max_tls_version: str, router: str, server: str) -> Case:
    """Read the files and check the settings fit together; every problem is reported at once."""
    problems: list[Problem] = []
    if (client_cert is None) != (client_key is None):
        problems.append(Problem(CLI, None, "--client-cert", "--client-cert and --client-key go together"))
    if require_client_cert and client_ca is None:
        problems.append(Problem(CLI, None, "--client-ca", "--require-client-cert needs --client-ca"))
    if client_ca is not None and not require_client_cert:
        problems.append(Problem(CLI, None, "--client-ca", "only used with --require-client-cert"))
    if verify_client_san and not require_client_cert:
        problems.append(Problem(CLI, None, "--verify-client-san", "needs --require-client-cert"))
    if verify_client_san and server == "openssl":
        problems.append(Problem(CLI, None, "--verify-client-san",
                                "is Envoy's check; an OpenSSL server does not match client SANs"))
    if any(not p for p in alpn):
        problems.append(Problem(CLI, None, "--alpn", "empty protocol name"))
    if problems:
        raise SimnetError(problems)
    chain = credentials.certificates(server_cert, "--server-cert")
    key = credentials.private_key(server_key, "--server-key", chain[0], server_cert)
    trusted = credentials.certificates(ca, "--ca")
    client_chain: tuple[x509.Certificate, ...] = ()
    ckey = None
    if client_cert is not None:
        client_chain = credentials.certificates(client_cert, "--client-cert")
        ckey = credentials.private_key(client_key, "--client-key", client_chain[0], client_cert)
    client_cas = credentials.certificates(client_ca, "--client-ca") if client_ca else ()
    proxy = Proxy(require_and_verify_client_certificates=require_client_cert,
                  trusted_ca_certificates=["--client-ca"] if require_client_cert else [],
                  verify_subject_alt_name=list(verify_client_san), enable_http2=http2)
    listener = sidecar_listener(proxy, 0, chain, client_cas)
    if server == "openssl":
        listener = replace(listener, verifier=Verifier.OPENSSL, ciphers=None)
    client = replace(router_client(BackendTLS(max_tls_version=max_tls_version), trusted,
                                   expect_san, client_chain),
                     alpn=tuple(alpn), ciphers=None,
                     verifier=Verifier.GO if router == "gorouter" else Verifier.OPENSSL)
    files = CertFiles(str(server_cert), str(server_key), str(client_ca) if client_ca else None)
    return Case(client, ckey, listener, key, proxy, files, server)


def predict(case: Case, at: datetime) -> dict:
    """The model's answer, with gorouter's status for it."""
    outcome = handshake(case.client, case.server, at)
    return _with_status(outcome.to_json(), verdict(outcome))


def _with_status(report: dict, v: Verdict) -> dict:
    return report | {"router_status": v.status,
                     "router_retries": None if v is Verdict.OK else v.retriable}


def run(case: Case, at: datetime) -> tuple[dict, bool]:
    """Run the handshake for real (OpenSSL as the router); the report and whether the model,
    predicting for the same implementations, agreed. A configuration the real Envoy refuses
    is a problem with ``--server-cert``."""
    from simnet.real.envoy import EnvoyError
    from simnet.real.tls import envoy_handshake, observable, openssl_handshake

    client = replace(case.client, verifier=Verifier.OPENSSL)
    model = handshake(client, case.server, at)
    try:
        if case.server_kind == "openssl":
            view, *_ = openssl_handshake(client, case.client_key, case.server, case.server_key)
            visible = True
        else:
            view = envoy_handshake(client, case.client_key, case.proxy, case.files).view
            visible = False
    except EnvoyError as e:
        raise SimnetError(Problem(case.files.cert_chain, None, "--server-cert",
                                  f"the real Envoy refused this configuration: {e}")) from None
    agrees = view == observable(model, server_visible=visible)
    report = _observed_report(view) | {
        "model": _with_status(model.to_json(), verdict(model)), "agrees": agrees,
        "router": "openssl (the real client); router_status is what gorouter answers for this",
        "server": case.server_kind,
    }
    return report, agrees


def _observed_report(view: dict) -> dict:
    """A real run's view in ``Outcome.to_json``'s keys (what the run could not see is None)."""
    code = view.get("verify_error")
    try:
        error = None if code is None else PathError(code)
    except ValueError:  # a verify error the model does not know: shown by its number
        error = None
    v = Verdict.OK if view["ok"] else failure_verdict(view["rejected_by"], view.get("alert"), error)
    return _with_status({
        "handshake": "ok" if view["ok"] else "failed",
        "reason": view.get("reason"),
        "rejected_by": view["rejected_by"],
        "alert": view.get("alert"),
        "verify_error": error.to_json() if error else (
            None if code is None else {"code": code, "name": None, "message": None}),
        "tls_version": view.get("version"),
        "alpn": view.get("alpn"),
    }, v)

