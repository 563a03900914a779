"""Envoy's memory measured: a real sidecar holding N concurrent connections, then none.

One Envoy runs the sidecar bootstrap of one listener kind (``model.envoy.kind_bootstrap``) in a
private network namespace, with ``--concurrency 1`` (one worker thread: the per-worker figures), in front of an
app that holds every connection until the peer closes it and answers HTTP requests. The client
opens connections in steps (TLS handshakes, client certificates, an HTTP/1.1 request or an
HTTP/2 stream on each, as the kind needs) and keeps them open; at each step Envoy's memory is
read two ways: its admin ``/memory`` (tcmalloc's ``allocated``, ``heap_size``,
``total_physical_bytes``) and the kernel's ``/proc/<pid>/smaps_rollup`` (``Private_Dirty``:
the pages only this Envoy uses, which is what a container's memory limit charges; ``Pss`` and
``Rss`` for comparison: Rss also counts the shared 100 MB binary). Then every connection is
closed and memory read again: is it given back?
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from simnet.model import pki
from simnet.model.envoy import LISTENER_KINDS, CertFiles, kind_bootstrap
from simnet.model.ports import proxy_ports
from simnet.real.envoy import EnvoyProcess
from simnet.real.netns import Namespace
from simnet.real.tls import write_credential

APP_PORT = 9000  # inside the measurement namespace: nothing else listens there
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
SETTLE_S = 0.3  # pause before a reading, so Envoy has run its event loop after the last change
IO_TIMEOUT_S = 10.0
BATCH = 100  # connections opened before their responses are read


@dataclass(frozen=True)
class Reading:
    """Envoy's memory at one moment, in MB (10^6 bytes)."""

    connections: int
    private_mb: float  # smaps_rollup Private_Dirty
    pss_mb: float
    rss_mb: float
    allocated_mb: float  # tcmalloc: bytes in use by the application
    heap_mb: float  # tcmalloc: heap reserved from the OS
    physical_mb: float  # tcmalloc: total_physical_bytes


@dataclass(frozen=True)
class Run:
    """One listener kind measured at increasing connection counts, then after closing all."""

    kind: str
    mappings: int
    readings: tuple[Reading, ...]
    after_close: Reading
    seconds: float

    def to_json(self) -> dict:
        return {"kind": self.kind, "mappings": self.mappings, "seconds": round(self.seconds, 1),
                "readings": [asdict(r) for r in self.readings],
                "after_close": asdict(self.after_close)}


def smaps_kb(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])  # kB
    return fields


def read_memory(envoy: EnvoyProcess, connections: int) -> Reading:
    """Envoy's memory now, from its admin API and from the kernel."""
    tc = json.loads(envoy.admin_get("/memory"))
    sm = smaps_kb(envoy.pid)
    return Reading(connections, sm["Private_Dirty"] / 1000, sm["Pss"] / 1000, sm["Rss"] / 1000,
                   int(tc["allocated"]) / 1e6, int(tc["heap_size"]) / 1e6,
                   int(tc["total_physical_bytes"]) / 1e6)


# --- the app behind Envoy ------------------------------------------------------------------


class HoldingApp:
    """An app that keeps every connection open until its peer closes it (then closes too, so
    Envoy's TCP proxy can finish its half-close) and answers each HTTP request it reads;
    ``accepted`` and ``answered`` count the connections and requests that reached it."""

    def __init__(self, ns: Namespace, port: int = APP_PORT):
        with ns.entered():
            self._listener = socket.create_server(("127.0.0.1", port), backlog=4096)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._buffers: dict[socket.socket, bytes] = {}
        self.open_connections = 0
        self.accepted = 0  # connections accepted since start
        self.answered = 0  # requests answered since start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="simnet-holding-app", daemon=True)

    def __enter__(self) -> "HoldingApp":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=IO_TIMEOUT_S)
        for sock in list(self._buffers):
            sock.close()
        self._listener.close()
        self._selector.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                else:
                    self._read(sock)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self._buffers[conn] = b""
            self._selector.register(conn, selectors.EVENT_READ)
            self.open_connections += 1
            self.accepted += 1

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(sock)
            del self._buffers[sock]
            sock.close()
            self.open_connections -= 1
            return
        buf = self._buffers[sock] + data
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            sock.sendall(HTTP_RESPONSE)
            self.answered += 1
        self._buffers[sock] = buf


# --- clients --------------------------------------------------------------------------------


@dataclass
class Credentials:
    """Where Envoy's identity (and the client CA) and the router's client certificate are."""

    files: CertFiles
    client_chain: str
    client_key: str


@contextmanager
def credentials(label: str = "memory", identity_key_bits: int = pki.CA_KEY_BITS) -> Iterator[Credentials]:
    """A sidecar identity (instance ``<label>-guid``, an RSA key of ``identity_key_bits``) and
    a router client certificate, on disk for Envoy and the client until the block ends."""
    now = datetime.now(timezone.utc) - timedelta(hours=1)
    h = pki.hierarchy(now, prefix=label)
    server = pki.instance_identity(h.root, f"{label}-guid", "127.0.0.1", now=now,
                                   key=pki.shared_key(f"{label}/identity", identity_key_bits))
    client = pki.client_certificate(h.root, "gorouter", "gorouter", now=now,
                                    key=pki.shared_key(f"{label}/router"))
    with tempfile.TemporaryDirectory(prefix=f"simnet-{label}-") as d:
        p = Path(d)
        (p / "ca.crt").write_bytes(pki.bundle_pem(h.root))
        router = write_credential(p, "router", client)
        yield Credentials(CertFiles(*write_credential(p, "id", server), str(p / "ca.crt")), *router)


def client_context(kind: str, creds: Credentials) -> ssl.SSLContext | None:
    """The router's TLS context for a listener kind (None for plain ``tcp``): no verification,
    a client certificate for ``mtls``, ALPN h2 for ``http2``."""
    if kind == "tcp":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the connection, not the verification, is measured here
    if kind == "mtls":
        ctx.load_cert_chain(creds.client_chain, creds.client_key)
    if kind == "http2":
        ctx.set_alpn_protocols(["h2"])
    return ctx


def http1_send(sock) -> None:
    """Send one HTTP/1.1 GET (keep-alive)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")


def http1_response(sock) -> None:
    """Read the app's 200 "ok" to one request; raises ConnectionError on anything else."""
    data = b""
    while not data.endswith(b"ok"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("Envoy closed the connection before the response")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected response {data[:60]!r}")


def http2_send(sock, conn=None):
    """Send one GET on a new stream of ``conn``, or on a new HTTP/2 connection (preface and
    settings first) when ``conn`` is None; returns the h2 state for the response."""
    import h2.config
    import h2.connection

    if conn is None:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
    conn.send_headers(conn.get_next_available_stream_id(), [(":method", "GET"), (":path", "/"), (":authority", "app"),
                          (":scheme", "https")], end_stream=True)
    sock.sendall(conn.data_to_send())
    return conn


def http2_response(sock, conn) -> None:
    """Read the response to the stream ``http2_send`` opened (status 200), giving the flow
    control window back, so a connection can carry any number of requests."""
    import h2.events

    status = None
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("Envoy closed the HTTP/2 connection")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
            if isinstance(event, h2.events.StreamEnded):
                sock.sendall(conn.data_to_send())
                if status != b"200":
                    raise ConnectionError(f"HTTP/2 status {status!r}")
                return
        sock.sendall(conn.data_to_send())


class _Client:
    """Opens connections of one kind in two steps, so that many requests are in flight at once
    (small HTTP writes through Envoy wait on delayed ACKs; in a batch those waits overlap)."""

    def __init__(self, kind: str, port: int, creds: Credentials):
        self.kind, self.port = kind, port
        self.ctx = client_context(kind, creds)

    def start(self):
        """Connect, handshake and send the request: the connection, and its protocol state."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT_S)
        sock = self.ctx.wrap_socket(raw) if self.ctx else raw
        state = None
        if self.kind == "http1":
            http1_send(sock)
        elif self.kind == "http2":
            state = http2_send(sock)
        return sock, state

    def finish(self, sock, state) -> None:
        """Read the response (HTTP kinds); the connection then stays open, idle."""
        if self.kind == "http1":
            http1_response(sock)
        elif self.kind == "http2":
            http2_response(sock, state)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, needed * 3 + 1024)  # client, Envoy's two sides, the app's
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _settled(envoy: EnvoyProcess, connections: int) -> Reading:
    """A reading once Envoy's allocations have stopped moving (deferred deletes done)."""
    time.sleep(SETTLE_S)
    last = read_memory(envoy, connections)
    for _ in range(50):
        time.sleep(0.1)
        now = read_memory(envoy, connections)
        if abs(now.allocated_mb - last.allocated_mb) < 0.01:
            return now
        last = now
    return last


def measure(kind: str, counts: Sequence[int], *, mappings: int = 1,
            progress: Callable[[str], None] | None = None) -> Run:
    """Measure one listener kind at each connection count in ``counts`` (increasing), then
    after closing all connections. Needs root (a private network namespace)."""
    if kind not in LISTENER_KINDS:
        raise ValueError(f"unknown listener kind {kind!r}")
    if list(counts) != sorted(counts) or min(counts, default=0) < 0:
        raise ValueError("connection counts must be increasing and non-negative")
    _raise_fd_limit(max(counts, default=0))
    started = time.monotonic()
    ports = proxy_ports([APP_PORT + i for i in range(mappings)])
    listen_port = ports.mappings[0].proxy
    with credentials() as creds, Namespace("memory") as ns:
        ns.ip("link set lo up")
        bootstrap = kind_bootstrap(kind, ports, guid="memory-guid", cert_files=creds.files,
                                   listen_address="127.0.0.1")
        with HoldingApp(ns) as app, EnvoyProcess(bootstrap, namespace=ns) as envoy:
            client = _Client(kind, listen_port, creds)
            tcp_proxy = kind in ("tcp", "tls", "mtls")  # one upstream connection per downstream
            held: list = []  # (socket, protocol state): kept so the connections stay open
            readings = []
            try:
                for target in counts:
                    with ns.entered():
                        while len(held) < target:
                            batch = [client.start() for _ in range(min(BATCH, target - len(held)))]
                            held += batch
                            for sock, state in batch:
                                client.finish(sock, state)
                            if tcp_proxy:  # keep within Envoy's accept backlog (1024)
                                n = len(held)
                                wait_until(lambda: app.open_connections >= n, "the app's connections")
                    readings.append(_settled(envoy, target))
                    if progress:
                        progress(f"{kind}: {target} connections, "
                                 f"{readings[-1].private_mb:.1f} MB private")
            finally:
                for sock, _ in held:
                    sock.close()
            if tcp_proxy:  # a TCP proxy closes upstream once downstream has closed;
                wait_until(lambda: app.open_connections == 0, "Envoy to close its upstream connections")
            after = _settled(envoy, 0)  # HTTP keeps idle upstream connections pooled (1 h)
    return Run(kind, mappings, tuple(readings), after, time.monotonic() - started)


def machine() -> dict:
    """Where a calibration ran (the memory Envoy uses does not depend on the CPU count, since
    the sidecar runs one worker thread, but the record says what it ran on)."""
    import platform

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}


# --- a calibration ----------------------------------------------------------------------------

CALIBRATION_COUNTS = (0, 250, 500, 1000, 2000, 4000, 6000)
MAPPING_COUNTS = (1, 16, 64)


def calibrate(kinds: Sequence[str] = LISTENER_KINDS, counts: Sequence[int] = CALIBRATION_COUNTS,
              mapping_counts: Sequence[int] = MAPPING_COUNTS,
              progress: Callable[[str], None] | None = None):
    """Measure every kind at ``counts`` connections and the started sidecar at each number of
    port mappings; fit the model's parameters (``model.memory.Calibration``)."""
    from simnet.model.memory import Calibration, fit_kind, fit_line
    from simnet.real.envoy import envoy_version

    runs = {kind: measure(kind, counts, progress=progress) for kind in kinds}
    starts = [(m, measure("tls", [0], mappings=m, progress=progress).readings[0].private_mb)
              for m in mapping_counts]
    _, per_mapping_mb = fit_line([(float(m - 1), mb) for m, mb in starts])
    return Calibration(
        envoy_version=envoy_version(),
        measured_on=datetime.now(timezone.utc).date().isoformat(),
        machine=machine(),
        kinds={k: fit_kind([(r.connections, r.private_mb) for r in run.readings],
                           run.after_close.private_mb) for k, run in runs.items()},
        per_mapping_kb=round(per_mapping_mb * 1000, 3),
        mapping_points=tuple((m, round(mb, 3)) for m, mb in starts),
        method=("Envoy --concurrency 1 with the sidecar bootstrap of each listener kind in a "
                "private network namespace; memory is smaps_rollup Private_Dirty; least-squares "
                "line over the connection counts; retained fraction from the reading after "
                "closing every connection"),
        extra={"runs": {k: run.to_json() for k, run in runs.items()}},
    )
