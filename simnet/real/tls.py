"""Real TLS handshakes on loopback with Python's ``ssl`` (OpenSSL), configured from the model.

The model's ``handshake.Client`` and ``handshake.Server`` are turned into real
``ssl.SSLContext`` objects; a handshake then runs over a real TCP connection on 127.0.0.1,
against a Python server (``openssl_handshake``) or a real Envoy serving the derived sidecar
bootstrap (``envoy_handshake``). What each end
saw is read back into the model's vocabulary, limited to what that end can really observe
(``observable``), so model and reality are compared field for field.

The server sends a banner once its side of the handshake succeeds, and the client only reads:
in TLS 1.3 the client finishes before the server has judged its certificate, so the server's
verdict is the first thing the client reads, the banner or an alert. A client that wrote first
could race the server's close and see a reset instead of the alert.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from simnet.model import pki
from simnet.model.certpath import PathError, Verifier
from simnet.model.envoy import CertFiles, sidecar_bootstrap
from simnet.model.handshake import TLS12, TLS13, Client, Outcome, Reason, Server, path_reason
from simnet.model.ports import proxy_ports
from simnet.real.envoy import EnvoyProcess
from simnet.scenario.schema import Proxy

IO_TIMEOUT_S = 5.0
BANNER = b"simnet-app\n"
_VERSIONS = {TLS12: ssl.TLSVersion.TLSv1_2, TLS13: ssl.TLSVersion.TLSv1_3}
_SERVER_ERRORS = {  # what OpenSSL's server-side reason strings mean in the model's terms
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": Reason.CLIENT_CERT_MISSING,
    "NO_SHARED_CIPHER": Reason.NO_SHARED_CIPHER,
    "UNSUPPORTED_PROTOCOL": Reason.NO_SHARED_VERSION,
}


def write_credential(directory: Path, name: str, pair: pki.KeyPair | tuple
                     ) -> tuple[str, str]:
    """``name.crt`` (the chain as sent: leaf first) and ``name.key`` in ``directory``, the key
    readable by its owner only; ``pair`` is a ``KeyPair`` or (chain, key)."""
    chain, key = ((pair.cert, *pair.chain), pair.key) if isinstance(pair, pki.KeyPair) else pair
    cert, keyfile = Path(directory, f"{name}.crt"), Path(directory, f"{name}.key")
    cert.write_bytes(pki.bundle_pem(*chain))
    keyfile.write_bytes(pki.key_pem(key))
    os.chmod(keyfile, 0o600)
    return str(cert), str(keyfile)


@contextmanager
def _credential_files(chain: Sequence[x509.Certificate], key: rsa.RSAPrivateKey
                      ) -> Iterator[tuple[str, str]]:
    """Chain and key in a private temp dir (``ssl`` loads credentials only from files)."""
    with tempfile.TemporaryDirectory(prefix="simnet-tls-") as d:
        yield write_credential(Path(d), "credential", (chain, key))


def _common(ctx: ssl.SSLContext, alpn, min_version, max_version, ciphers) -> None:
    ctx.minimum_version = _VERSIONS[min_version]
    ctx.maximum_version = _VERSIONS[max_version]
    if ciphers is not None:
        ctx.set_ciphers(":".join(ciphers))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))


def client_context(client: Client, key: rsa.RSAPrivateKey | None) -> ssl.SSLContext:
    """An OpenSSL client context doing what ``client`` describes."""
    if client.verifier is not Verifier.OPENSSL:
        raise ValueError("only an OpenSSL client can be run for real here")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = client.server_name is not None
    ctx.verify_mode = ssl.CERT_REQUIRED
    if client.trusted:
        ctx.load_verify_locations(cadata=pki.bundle_pem(*client.trusted).decode())
    if client.chain:
        if key is None:
            raise ValueError("a client certificate needs its key")
        with _credential_files(client.chain, key) as (cert, keyfile):
            ctx.load_cert_chain(cert, keyfile)
    _common(ctx, client.alpn, client.min_version, client.max_version, client.ciphers)
    return ctx


def server_context(server: Server, key: rsa.RSAPrivateKey) -> ssl.SSLContext:
    """An OpenSSL server context doing what ``server`` describes."""
    if server.verifier is not Verifier.OPENSSL:
        raise ValueError("OpenSSLServer runs the openssl verifier; Envoy runs BoringSSL")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _credential_files(server.chain, key) as (cert, keyfile):
        ctx.load_cert_chain(cert, keyfile)
    if server.trusted_client_cas:
        ctx.load_verify_locations(cadata=pki.bundle_pem(*server.trusted_client_cas).decode())
    if server.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    _common(ctx, server.alpn, server.min_version, server.max_version, server.ciphers)
    return ctx


@dataclass
class ServerView:
    """What the server end saw of one handshake."""

    ok: bool = False
    error: ssl.SSLError | None = None


def _alert(error: ssl.SSLError) -> str | None:
    """The alert named in an OpenSSL error reason (``TLSV1_ALERT_UNKNOWN_CA`` -> ``unknown_ca``)."""
    reason = getattr(error, "reason", None) or ""
    for prefix in ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_"):
        if reason.startswith(prefix):
            return reason[len(prefix):].lower()
    return None


@dataclass
class OpenSSLServer:
    """A Python (OpenSSL) TLS server on 127.0.0.1 for a model ``Server``; use as a context manager.

    Each accepted connection gets one handshake; on success the banner is sent. ``next_view``
    returns what the server saw of the next connection, once it is over.
    """

    server: Server
    key: rsa.RSAPrivateKey
    banner: bytes = BANNER

    def __post_init__(self) -> None:
        self._ctx = server_context(self.server, self.key)
        self._views: queue.Queue[ServerView] = queue.Queue()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._sock.getsockname()

    def __enter__(self) -> "OpenSSLServer":
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="simnet-tls-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() at once (Linux)
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=IO_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # shut down by __exit__
            view = ServerView()
            conn.settimeout(IO_TIMEOUT_S)
            try:
                with self._ctx.wrap_socket(conn, server_side=True) as tls:
                    view.ok = True
                    tls.sendall(self.banner)
                    tls.unwrap()
            except ssl.SSLError as e:
                if not view.ok:
                    view.error = e
            except OSError:
                pass  # the client went away after its part: nothing more to learn
            finally:
                conn.close()
                self._views.put(view)

    def next_view(self, timeout_s: float = IO_TIMEOUT_S) -> ServerView:
        """What the server saw of its next finished connection."""
        return self._views.get(timeout=timeout_s)


@dataclass(frozen=True)
class ClientView:
    """What the client end saw: a verification error, an alert from the server, or the banner."""

    ok: bool
    verify_code: int | None = None
    alert: str | None = None
    version: str | None = None
    alpn: str | None = None
    banner: bytes = b""
    error: str = ""


def connect(client: Client, key: rsa.RSAPrivateKey | None, address: tuple[str, int],
            *, timeout_s: float = IO_TIMEOUT_S) -> ClientView:
    """One real handshake from ``client`` to ``address``, then read the server's first bytes."""
    ctx = client_context(client, key)
    with socket.create_connection(address, timeout=timeout_s) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=client.server_name)
        except ssl.SSLCertVerificationError as e:
            return ClientView(False, verify_code=e.verify_code, error=str(e))
        except ssl.SSLError as e:
            return ClientView(False, alert=_alert(e), error=str(e))
        version, alpn = tls.version(), tls.selected_alpn_protocol()
        try:
            data = _read_banner(tls)
        except ssl.SSLError as e:
            return ClientView(False, alert=_alert(e), version=version, error=str(e))
        except OSError as e:
            return ClientView(False, version=version, error=f"{type(e).__name__}: {e}")
        finally:
            tls.close()
    return ClientView(bool(data), version=version, alpn=alpn, banner=data,
                      error="" if data else "connection closed before any data")


def _read_banner(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# --- what a real run can observe, in the model's terms -------------------------------------


def observable(outcome: Outcome, *, server_visible: bool) -> dict:
    """The part of a predicted outcome a real run can check.

    The client sees its own verification error, or the server's alert; the TLS version and
    ALPN only once the handshake is through. The client's own alert and the server's reason
    are seen only when the server is ours (``server_visible``: an ``OpenSSLServer``).
    """
    view = {"ok": outcome.ok, "rejected_by": outcome.rejected_by}
    if outcome.ok:
        view |= {"version": outcome.version, "alpn": outcome.alpn}
    elif outcome.rejected_by == "client":
        view["verify_error"] = None if outcome.verify_error is None else int(outcome.verify_error)
        if server_visible:
            view["alert"] = outcome.alert
    else:
        view["alert"] = outcome.alert
    if server_visible:
        view["reason"] = outcome.reason.value
    return view


def observed(client: ClientView, server: ServerView | None = None) -> dict:
    """What a real run showed, in ``observable``'s shape (``server``: our server's view)."""
    if client.ok:
        view = {"ok": True, "rejected_by": None, "version": client.version, "alpn": client.alpn}
    elif client.verify_code is not None:
        view = {"ok": False, "rejected_by": "client", "verify_error": client.verify_code}
        if server is not None:
            view["alert"] = _alert(server.error) if server.error else None
    else:
        view = {"ok": False, "rejected_by": "server" if client.alert else None,
                "alert": client.alert}
        if not client.alert:
            view["error"] = client.error  # neither a verdict nor an alert: shows in the diff
    if server is not None:
        view["reason"] = _server_reason(client, server)
    return view


def _server_reason(client: ClientView, server: ServerView) -> str:
    """The model's reason for what both ends of a Python-served handshake saw."""
    if client.ok:
        return Reason.OK.value
    if client.verify_code is not None:
        return _reason_for("server", client.verify_code)
    error = server.error
    if isinstance(error, ssl.SSLCertVerificationError):
        return _reason_for("client", error.verify_code)
    name = getattr(error, "reason", None) or ""
    return _SERVER_ERRORS[name].value if name in _SERVER_ERRORS else f"unrecognised: {error!r}"


def _reason_for(side: str, code: int) -> str:
    try:
        return path_reason(side, PathError(code)).value
    except ValueError:
        return f"{side}: unmodelled verify error {code}"


class BannerApp:
    """A TCP app on 127.0.0.1 that greets every connection with ``banner`` and closes it: what
    a client reads through a proxy shows the handshake succeeded and which app answered."""

    def __init__(self, banner: bytes = BANNER):
        self.banner = banner
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def __enter__(self) -> "BannerApp":
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._thread = threading.Thread(target=self._serve, name="simnet-banner-app", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=IO_TIMEOUT_S)
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(self.banner)
                except OSError:
                    pass


# --- one case, run for real ----------------------------------------------------------------


def openssl_handshake(client: Client, client_key: rsa.RSAPrivateKey | None, server: Server,
                      server_key: rsa.RSAPrivateKey) -> tuple[dict, ClientView, ServerView]:
    """Run a case between a Python client and a Python server: the observed view (both ends
    visible) and each end's raw view."""
    with OpenSSLServer(server, server_key) as srv:
        client_view = connect(client, client_key, srv.address)
        server_view = srv.next_view()
    return observed(client_view, server_view), client_view, server_view


@dataclass(frozen=True)
class EnvoyRun:
    """A case run against a real Envoy sidecar: what the client saw, on which listener port,
    and what Envoy printed."""

    view: dict
    client: ClientView
    listen_port: int
    log: str


def envoy_handshake(client: Client, client_key: rsa.RSAPrivateKey | None, proxy: Proxy,
                    files: CertFiles, *, guid: str = "sidecar", connector=None) -> EnvoyRun:
    """Run a case against the real Envoy serving the Diego sidecar bootstrap derived for
    ``proxy`` and ``files``, in front of a banner app, all on 127.0.0.1. ``connector`` is the
    client that connects (default: OpenSSL's ``connect``; ``gotls.go_connect`` for Go)."""
    connector = connector or connect
    with BannerApp() as app:
        ports = proxy_ports([app.port])
        bootstrap = sidecar_bootstrap(ports, guid=guid, proxy=proxy, cert_files=files,
                                      listen_address="127.0.0.1")
        listen_port = ports.mappings[0].proxy
        with EnvoyProcess(bootstrap) as envoy:
            seen = connector(client, client_key, ("127.0.0.1", listen_port))
            log = envoy.log()
    if seen.ok and seen.banner != app.banner:
        seen = ClientView(False, version=seen.version, banner=seen.banner,
                          error=f"unexpected data from the proxy: {seen.banner!r}")
    return EnvoyRun(observed(seen), seen, listen_port, log)
