"""Real pieces for checking the ingress gateway: app pods behind Istio mTLS, and requests.

``MeshApp`` plays an app pod's sidecar and app in one: an HTTPS server inside a network
namespace presenting the pod's SPIFFE certificate and requiring a client certificate from the
workload CA (Istio's inbound mTLS), answering every request with its name and the ``CF-*``
request headers it received, as JSON. ``get`` sends one HTTP/1.1 request with a given ``Host``
from inside a namespace and returns the status and body.
"""

from __future__ import annotations

import http.server
import json
import ssl
from dataclasses import dataclass

from simnet.real.netns import Namespace
from simnet.real.reach import ServedInNamespace

IO_TIMEOUT_S = 5.0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed ACK wait

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps({"app": self.server.app_name, "path": self.path,
                           "headers": {k: v for k, v in self.headers.items()
                                       if k.lower().startswith("cf-")}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MeshApp(ServedInNamespace):
    """An app pod at ``host:port`` in ``ns`` behind Istio mTLS; a context manager.

    ``cert_chain``/``private_key`` are the pod's credential files, ``client_ca`` the workload
    CA whose client certificates it accepts (the gateway's)."""

    def __init__(self, ns: Namespace, port: int, name: str, *, cert_chain: str,
                 private_key: str, client_ca: str, host: str = "127.0.0.1"):
        self.ns, self.port, self.name, self.host = ns, port, name, host
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_chain, private_key)
        self.context.load_verify_locations(client_ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.set_alpn_protocols(["istio", "http/1.1"])

    def _make(self) -> _Server:
        server = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        try:
            server.socket = self.context.wrap_socket(server.socket, server_side=True)
            server.server_bind()
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        server.app_name = self.name
        return server


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def get(ns: Namespace, address: tuple[str, int], host: str, path: str = "/",
        headers: dict[str, str] | None = None, timeout_s: float = IO_TIMEOUT_S) -> Response:
    """One plain HTTP/1.1 GET from inside ``ns`` with ``Host: host``; the connection closes."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
    sock = ns.socket()
    sock.settimeout(timeout_s)
    data = b""
    try:
        sock.connect(address)
        sock.sendall(request)
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"not an HTTP response: {data[:60]!r}")
    return Response(int(status_line[1]), body)
