"""Real connections for the reachability check: an echo app in a namespace, and one round trip.

``EchoServer`` plays the app (or a sidecar process): a TCP server bound inside a network namespace
that sends back whatever it reads, after its name, so a client knows who answered.
``round_trip`` opens one connection from a namespace -- plain, or TLS with a given
``ssl.SSLContext`` (acting as gorouter, or as a client without a certificate) -- writes a
request and reports who answered: an echo server by name, ``http`` for an HTTP server (Envoy's
admin API), and whether TLS was negotiated on the way. Anything else (no route, refused, a
handshake alert, a reset, end of stream, a timeout) means nobody answered; ``detail`` says which.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass

from simnet.real.netns import Namespace

REQUEST = b"GET /ready HTTP/1.0\r\nHost: simnet\r\n\r\n"
IO_TIMEOUT_S = 3.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        prefix = self.server.name + b" "
        try:
            while data := self.request.recv(65536):
                self.request.sendall(prefix + data)
                prefix = b""
        except OSError:
            pass  # the client went away mid-stream: nothing to answer


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class ServedInNamespace:
    """A ``socketserver`` whose listening socket lives in a namespace, served on a daemon
    thread; a context manager. Subclasses say how to make the server (``_make``, called
    inside the namespace)."""

    ns: Namespace
    port: int

    def _make(self) -> socketserver.BaseServer:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        with self.ns.entered():  # the listening socket is made, and stays, in ns
            self._server = self._make()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"{type(self).__name__}-{self.port}")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        server, self._server = getattr(self, "_server", None), None
        if server is not None:
            server.shutdown()
            server.server_close()
        if getattr(self, "_thread", None) is not None:
            self._thread.join(IO_TIMEOUT_S)


class EchoServer(ServedInNamespace):
    """An echo app called ``name`` listening on ``host:port`` inside ``ns``; a context manager."""

    def __init__(self, ns: Namespace, port: int, name: str, host: str = "0.0.0.0"):
        if not name or " " in name:
            raise ValueError(f"an echo server's name is one word, got {name!r}")
        self.ns, self.port, self.name, self.host = ns, port, name, host

    def _make(self) -> _Server:
        server = _Server((self.host, self.port), _Echo)
        server.name = self.name.encode()
        return server


@dataclass(frozen=True)
class RoundTrip:
    """Who answered a request (an echo server's name, ``http``, or None), whether TLS was
    negotiated first, and what happened otherwise."""

    answered_by: str | None
    tls: bool
    detail: str


def round_trip(ns: Namespace, address: tuple[str, int], context: ssl.SSLContext | None = None,
               server_hostname: str | None = None, timeout_s: float = IO_TIMEOUT_S) -> RoundTrip:
    """One connection from ``ns`` to ``address``: TLS when ``context`` is given (verifying the
    server as ``server_hostname``), then ``REQUEST`` and the first answer."""
    sock = ns.socket()
    sock.settimeout(timeout_s)
    conn: socket.socket = sock
    data = b""
    try:
        sock.connect(address)
        if context is not None:
            conn = context.wrap_socket(sock, server_hostname=server_hostname)
        conn.sendall(REQUEST)
        while not (data.endswith(REQUEST) or (data.startswith(b"HTTP/1.") and b"\r\n\r\n" in data)):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError) as e:
        return RoundTrip(None, False, f"{type(e).__name__}: {e}")
    finally:
        conn.close()
        if conn is not sock:
            sock.close()
    tls = context is not None
    if data.startswith(b"HTTP/1."):
        return RoundTrip("http", tls, data.split(b"\r\n", 1)[0].decode(errors="replace"))
    name, sep, rest = data.partition(b" ")
    if sep and rest == REQUEST:
        return RoundTrip(name.decode(errors="replace"), tls, "echoed")
    return RoundTrip(None, tls, f"answer {data[:40]!r}" if data else "closed without an answer")
