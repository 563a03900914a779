"""Envoy's CPU measured: what one request, and one new connection, cost the real sidecar.

One Envoy runs the sidecar bootstrap of one listener kind (``model.envoy.kind_bootstrap``) in a
private network namespace, with ``--concurrency 1`` (one worker thread), in front of the
memory calibration's app (``HoldingApp``), with the executor's RSA-3072 instance identity.
Envoy's CPU is its process CPU clock: the kernel's ``sum_exec_runtime`` over all its threads,
user and system, in nanoseconds (``clock_gettime`` on the process's CPU clock;
``/proc/<pid>/stat``'s utime + stime is the same count in clock ticks, read beside it as a
check). It is read before and after two workloads, and what an idle Envoy spends over the same
wall time is subtracted:

- *reused*: requests one at a time, round robin over a few kept-alive connections opened
  beforehand: CPU per request;
- *new*: requests one at a time, each on a new connection (TCP accept, the TLS handshake with
  a client certificate for ``mtls``, the upstream connect for the TCP-proxy kinds, the close):
  CPU per new connection; its excess over a reused connection's request is the handshake's.

For ``tcp``/``tls``/``mtls`` (Envoy's TCP proxy) a request is one exchange of the HTTP/1.1
bytes through the proxy; for ``http1``/``http2`` Envoy's HTTP connection manager routes it to
a pooled upstream connection. One request at a time means every request wakes Envoy's event
loop on its own: the figure does not depend on how fast the client is (that changes only the
wall time), and it is the cost at light load (a saturated worker handles several events per
wakeup and spends less). Every workload is checked against the app's and Envoy's own counts
(the bootstrap keeps Envoy's connection and request totals, where the executor's rejects every
stat) and a disagreement raises ``MeasurementError`` instead of giving a figure.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from simnet.errors import Error
from simnet.model import pki
from simnet.model.envoy import LISTENER_KINDS, cluster_name, kind_bootstrap
from simnet.model.ports import proxy_ports
from simnet.real.envoy import EnvoyProcess
from simnet.real.memory import (
    APP_PORT,
    IO_TIMEOUT_S,
    HoldingApp,
    client_context,
    credentials,
    http1_response,
    http1_send,
    http2_response,
    http2_send,
    machine,
    wait_until,
)
from simnet.real.netns import Namespace

# On a VM the figures drift by some 20% from one second to the next (the host's doing; longer
# workloads do not narrow it), so many short repetitions and their median serve better than a
# few long ones.
REQUESTS = 1000  # per repetition, on the kept-alive connections
CONNECTIONS = 50  # per repetition, each a new connection with one request
KEPT_ALIVE = 4
REPETITIONS = 10  # after one warm-up repetition, which is not counted
QUIET_S = 0.05  # after an admin request, before Envoy's clock is read: its main thread is done
SETTLE_S = 0.05  # after a workload, so Envoy has handled the last close before the reading
TCP_PROXY_KINDS = ("tcp", "tls", "mtls")  # one upstream connection per downstream one
GUID = "cpu-guid"


class MeasurementError(Error, RuntimeError):
    """A workload did not go through Envoy as sent: responses, or Envoy's or the app's counts,
    disagree with the requests and connections the client made."""


# --- Envoy's CPU ------------------------------------------------------------------------------


def process_cpu_ns(pid: int) -> int:
    """CPU time (user + system) of every thread process ``pid`` has run, in ns: the kernel's
    process CPU clock (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``), threads that have
    exited included."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def stat_ticks(pid: int) -> tuple[int, int]:
    """``/proc/<pid>/stat``'s utime and stime: the same CPU time, split, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


@dataclass(frozen=True)
class Sample:
    """Envoy's CPU clocks at one moment, and when it was."""

    wall_s: float
    cpu_ns: int
    user_ticks: int
    system_ticks: int

    @classmethod
    def now(cls, pid: int) -> Sample:
        user, system = stat_ticks(pid)
        return cls(time.monotonic(), process_cpu_ns(pid), user, system)


def machine_busy_s() -> float:
    """CPU seconds every CPU of the machine has been busy (``/proc/stat``: all but idle and
    iowait), to tell how much other processes ran beside a measurement."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _tasks(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@contextmanager
def pinned(envoy_pid: int) -> Iterator[int | None]:
    """Every Envoy thread on one CPU and this process's threads (the client and the app) on the
    others, as a sidecar and its peers run on different cores of a cell; the same placement for
    every run, since waking a peer on another CPU costs Envoy an interprocessor interrupt.
    Yields Envoy's CPU (None, and nothing pinned, with a single CPU); ours are restored after."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield None
        return
    ours = {tid: os.sched_getaffinity(tid) for tid in _tasks(os.getpid())}
    try:
        for tid in _tasks(envoy_pid):
            os.sched_setaffinity(tid, {cpus[-1]})
        for tid in ours:
            os.sched_setaffinity(tid, set(cpus[:-1]))
        yield cpus[-1]
    finally:
        for tid, mask in ours.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:  # the thread has ended
                pass


# --- the bootstrap and the client ---------------------------------------------------------------

COUNTED = ("downstream_cx_total", "downstream_rq_total", "upstream_cx_total")


def measurement_bootstrap(kind: str, cert_files) -> tuple[dict, int]:
    """The sidecar bootstrap of ``kind`` as the executor writes it, and its listener's port,
    except that Envoy keeps the counters the checks read (listener and HTTP totals, the
    cluster's upstream connections) where the executor rejects every stat: one atomic
    increment per connection or request."""
    ports = proxy_ports([APP_PORT])
    bootstrap = kind_bootstrap(kind, ports, guid=GUID, cert_files=cert_files,
                               listen_address="127.0.0.1")
    bootstrap["stats_config"] = {"stats_matcher": {"inclusion_list": {"patterns": [
        {"suffix": f".{name}"} for name in COUNTED]}}}
    return bootstrap, ports.mappings[0].proxy


def envoy_counts(envoy: EnvoyProcess, listen_port: int) -> dict[str, int]:
    """Envoy's counts for the sidecar listener: connections accepted, HTTP requests (HTTP kinds)
    and connections to the app."""
    values = {}
    for line in envoy.admin_get("/stats").splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            values[name] = int(value)
    return {
        "connections": values.get(f"listener.127.0.0.1_{listen_port}.downstream_cx_total", 0),
        "requests": sum(v for n, v in values.items()
                        if n.startswith("http.") and not n.startswith("http.admin.")
                        and n.endswith(".downstream_rq_total")),
        "upstream": values.get(f"cluster.{cluster_name(APP_PORT)}.upstream_cx_total", 0),
    }


class Connection:
    """One router connection to the sidecar: opened with its handshake, then requests one at a
    time, each waiting for its response."""

    def __init__(self, kind: str, port: int, ctx):
        self.kind = kind
        raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw) if ctx else raw
        self._h2 = None

    def request(self) -> None:
        """One GET and its 200 response (raises ConnectionError otherwise)."""
        if self.kind == "http2":
            self._h2 = http2_send(self.sock, self._h2)
            http2_response(self.sock, self._h2)
        else:
            http1_send(self.sock)
            http1_response(self.sock)

    def tls(self) -> tuple[str, str] | None:
        """The TLS version and cipher negotiated (None for plain TCP)."""
        if not hasattr(self.sock, "version"):
            return None
        return self.sock.version(), self.sock.cipher()[0]

    def close(self) -> None:
        self.sock.close()


# --- one measurement -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One workload: what the client sent, what came back, what Envoy and the app counted, and
    Envoy's CPU over it and over an idle stretch as long."""

    requests: int
    connections: int  # new connections the client opened
    responses: int
    wall_s: float
    cpu_ns: int  # Envoy's process CPU clock over the workload
    idle_ns: int  # the same clock over an idle stretch of the same wall time
    stat_ns: int  # utime + stime over the workload, in ns at clock-tick resolution
    user_ticks: int
    system_ticks: int
    envoy_connections: int  # Envoy's listener downstream_cx_total, over the workload
    envoy_requests: int  # Envoy's HTTP downstream_rq_total (0 for the TCP proxy)
    envoy_upstream: int  # Envoy's connections to the app (cluster upstream_cx_total)
    app_connections: int  # connections the app accepted
    app_requests: int  # requests the app answered

    @property
    def net_ns(self) -> int:
        """Envoy's CPU for the workload alone: the idle stretch's subtracted."""
        return self.cpu_ns - self.idle_ns


def check_phase(kind: str, p: Phase) -> list[str]:
    """How a workload's counts disagree with what the client sent (empty: they agree): every
    request answered by the app through Envoy, each new connection accepted by Envoy (and, for
    the TCP proxy, one upstream connection per downstream one), and the two CPU readings
    within a few clock ticks of each other."""
    wrong = []

    def expect(what: str, got: int, want: int) -> None:
        if got != want:
            wrong.append(f"{kind}: {what} {got}, expected {want}")

    expect("responses", p.responses, p.requests)
    expect("requests the app answered", p.app_requests, p.requests)
    expect("connections Envoy accepted (downstream_cx_total)", p.envoy_connections, p.connections)
    if kind in TCP_PROXY_KINDS:
        expect("connections Envoy opened to the app (upstream_cx_total)", p.envoy_upstream,
               p.connections)
        expect("connections the app accepted", p.app_connections, p.connections)
    else:
        expect("HTTP requests Envoy routed (downstream_rq_total)", p.envoy_requests, p.requests)
    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
    if abs(p.stat_ns - p.cpu_ns) > 3 * tick_ns + 0.02 * p.cpu_ns:
        wrong.append(f"{kind}: CPU clock {p.cpu_ns / 1e6:.1f} ms but /proc/<pid>/stat "
                     f"{p.stat_ns / 1e6:.1f} ms")
    return wrong


@dataclass(frozen=True)
class Repetition:
    """A reused-connection workload and a new-connection workload, one after the other."""

    reused: Phase
    new: Phase

    @property
    def per_request_us(self) -> float:
        return self.reused.net_ns / self.reused.requests / 1000

    @property
    def per_connection_us(self) -> float:
        """Envoy's CPU for a request on a new connection, handshake and close included."""
        return self.new.net_ns / self.new.connections / 1000

    @property
    def per_handshake_us(self) -> float:
        return self.per_connection_us - self.per_request_us


def _spread(values: list[float]) -> dict:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return {"median": round(statistics.median(values), 2), "q1": round(q1, 2), "q3": round(q3, 2),
            "min": round(min(values), 2), "max": round(max(values), 2)}


@dataclass(frozen=True)
class CpuRun:
    """One listener kind measured: the counted repetitions (the warm-up is left out) and the
    TLS the client negotiated."""

    kind: str
    repetitions: tuple[Repetition, ...]
    tls: tuple[str, str] | None
    seconds: float
    envoy_cpu: int | None = None  # the CPU Envoy was pinned to
    others_cpu_s: float = 0.0  # CPU seconds other processes of the machine used meanwhile

    @property
    def per_request_us(self) -> float:
        return statistics.median(r.per_request_us for r in self.repetitions)

    @property
    def per_handshake_us(self) -> float:
        return statistics.median(r.per_handshake_us for r in self.repetitions)

    def to_json(self) -> dict:
        reps = self.repetitions
        return {"kind": self.kind, "seconds": round(self.seconds, 1),
                "tls": list(self.tls) if self.tls else None, "envoy_cpu": self.envoy_cpu,
                "others_cpu_s": round(self.others_cpu_s, 2),
                "per_request_us": _spread([r.per_request_us for r in reps]),
                "per_connection_us": _spread([r.per_connection_us for r in reps]),
                "per_handshake_us": _spread([r.per_handshake_us for r in reps]),
                "envoy_busy": _spread([r.reused.net_ns / 1e9 / r.reused.wall_s for r in reps]
                                      + [r.new.net_ns / 1e9 / r.new.wall_s for r in reps]),
                "repetitions": [{"reused": _phase_json(r.reused), "new": _phase_json(r.new)}
                                for r in reps]}


def _phase_json(p: Phase) -> dict:
    return {**asdict(p), "wall_s": round(p.wall_s, 4)}


class _Bench:
    """Envoy, the app, the kept-alive connections: the fixed parts of one kind's measurement."""

    def __init__(self, kind: str, envoy: EnvoyProcess, app: HoldingApp, ns: Namespace, port: int,
                 ctx):
        self.kind, self.envoy, self.app, self.ns, self.port, self.ctx = kind, envoy, app, ns, port, ctx
        self.kept: list[Connection] = []

    def connect(self) -> Connection:
        with self.ns.entered():
            return Connection(self.kind, self.port, self.ctx)

    def phase(self, requests: int, new_connections: bool) -> Phase:
        """Run one workload between two readings of Envoy's clock, then an idle stretch."""
        before = envoy_counts(self.envoy, self.port)
        app_conns, app_reqs = self.app.accepted, self.app.answered
        time.sleep(QUIET_S)
        start = Sample.now(self.envoy.pid)
        responses = 0
        for i in range(requests):
            if new_connections:
                conn = self.connect()
                try:
                    conn.request()
                finally:
                    conn.close()
            else:
                self.kept[i % len(self.kept)].request()
            responses += 1
        if new_connections and self.kind in TCP_PROXY_KINDS:  # Envoy closes upstream after downstream
            wait_until(lambda: self.app.open_connections == len(self.kept),
                       "Envoy to close its upstream connections")
        time.sleep(SETTLE_S)
        end = Sample.now(self.envoy.pid)
        idle_start = Sample.now(self.envoy.pid)
        time.sleep(end.wall_s - start.wall_s)
        idle_end = Sample.now(self.envoy.pid)
        after = envoy_counts(self.envoy, self.port)
        tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
        user = end.user_ticks - start.user_ticks
        system = end.system_ticks - start.system_ticks
        return Phase(
            requests=requests, connections=requests if new_connections else 0, responses=responses,
            wall_s=end.wall_s - start.wall_s, cpu_ns=end.cpu_ns - start.cpu_ns,
            idle_ns=idle_end.cpu_ns - idle_start.cpu_ns, stat_ns=round((user + system) * tick_ns),
            user_ticks=user, system_ticks=system,
            envoy_connections=after["connections"] - before["connections"],
            envoy_requests=after["requests"] - before["requests"],
            envoy_upstream=after["upstream"] - before["upstream"],
            app_connections=self.app.accepted - app_conns, app_requests=self.app.answered - app_reqs)


def measure_cpu(kind: str, requests: int = REQUESTS, connections: int = CONNECTIONS, *,
                repetitions: int = REPETITIONS, kept_alive: int = KEPT_ALIVE, check: bool = True,
                progress: Callable[[str], None] | None = None) -> CpuRun:
    """Measure one listener kind: a warm-up, then ``repetitions`` times ``requests`` requests
    over ``kept_alive`` connections and ``connections`` requests each on a new connection.
    Raises MeasurementError when a workload's counts disagree (``check=False``: returns them,
    for a test to judge). Needs root."""
    if kind not in LISTENER_KINDS:
        raise ValueError(f"unknown listener kind {kind!r}")
    if min(requests, connections, repetitions, kept_alive) < 1:
        raise ValueError("requests, connections, repetitions and kept_alive must be positive")
    started = time.monotonic()
    with credentials("cpu", identity_key_bits=pki.IDENTITY_KEY_BITS) as creds, Namespace("cpu") as ns:
        ns.ip("link set lo up")
        bootstrap, port = measurement_bootstrap(kind, creds.files)
        with (HoldingApp(ns) as app, EnvoyProcess(bootstrap, namespace=ns) as envoy,
              pinned(envoy.pid) as envoy_cpu):
            bench = _Bench(kind, envoy, app, ns, port, client_context(kind, creds))
            busy, ours, envoys = machine_busy_s(), _own_cpu_s(), process_cpu_ns(envoy.pid)
            try:
                for _ in range(kept_alive):
                    bench.kept.append(bench.connect())
                    bench.kept[-1].request()
                tls = bench.kept[0].tls()
                counted = []
                for rep in range(repetitions + 1):  # the first is the warm-up
                    r = Repetition(bench.phase(requests, False), bench.phase(connections, True))
                    wrong = check_phase(kind, r.reused) + check_phase(kind, r.new)
                    if wrong and check:
                        raise MeasurementError("; ".join(wrong))
                    if rep:
                        counted.append(r)
                    if progress:
                        progress(f"{kind}: {'warm-up' if not rep else f'repetition {rep}'}: "
                                 f"{r.per_request_us:.1f} µs per request, "
                                 f"{r.per_handshake_us:.1f} µs per new connection's handshake")
            finally:
                for conn in bench.kept:
                    conn.close()
            others = (machine_busy_s() - busy - (_own_cpu_s() - ours)
                      - (process_cpu_ns(envoy.pid) - envoys) / 1e9)
    if progress and others > 0.1 * (time.monotonic() - started):
        progress(f"{kind}: other processes used {others:.1f} CPU seconds meanwhile: "
                 "the figures may be noisy")
    return CpuRun(kind, tuple(counted), tls, time.monotonic() - started, envoy_cpu, max(0.0, others))


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# --- a calibration ------------------------------------------------------------------------------


def calibrate_cpu(kinds: Sequence[str] = LISTENER_KINDS,
                  progress: Callable[[str], None] | None = None, **options):
    """Measure every kind (``options`` as ``measure_cpu`` takes them) and keep the medians as
    the model's figures (``model.cpu.CpuCalibration``)."""
    from simnet.model.cpu import CpuCalibration, KindCpu
    from simnet.real.envoy import envoy_version

    runs = {kind: measure_cpu(kind, progress=progress, **options) for kind in kinds}
    first = next(iter(runs.values())).repetitions[0]
    return CpuCalibration(
        envoy_version=envoy_version(),
        measured_on=datetime.now(timezone.utc).date().isoformat(),
        machine=machine(),
        kinds={k: KindCpu(round(run.per_request_us, 2), round(run.per_handshake_us, 2),
                          tuple((round(r.per_request_us, 2), round(r.per_handshake_us, 2))
                                for r in run.repetitions))
               for k, run in runs.items()},
        method=("Envoy --concurrency 1 with the sidecar bootstrap of each listener kind (RSA-3072 "
                "identity; the connection and request totals kept for the checks) in a private "
                "network namespace, its threads pinned to one CPU and the client's to the others; "
                "Envoy's process CPU clock (user+system, all threads) minus an idle stretch of "
                "the same wall time; per request: requests one at a time round robin over "
                f"{options.get('kept_alive', KEPT_ALIVE)} kept-alive connections; per handshake: "
                "a request on a new connection (accept, TLS handshake, upstream connect for the "
                "TCP proxy, close) minus a request on a kept-alive one; median of "
                f"{len(next(iter(runs.values())).repetitions)} repetitions after a warm-up"),
        extra={"requests": first.reused.requests, "connections": first.new.connections,
               "runs": {k: run.to_json() for k, run in runs.items()}},
    )
