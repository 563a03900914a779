"""Run a derived Diego deployment on real components, in real time, and collect what happened.

The foundation is built in namespaces (``real.foundation``): cells with Garden's NetIn rules
loaded, one container per running instance holding the real Envoy with its derived bootstrap
and identity certificate (``realize``) and the twin's app process; the twin's routers (a
stand-in for gorouter, see docs/emulate.md); a real Envoy as the load balancer; the twin's load
generator. The timeline's events are applied at their times: an instance stopped is killed and
its container destroyed, one started gets a new container, a route change reaches every router
as a reload of its route table, an expired or rotated certificate is written into the SDS file
the instance's Envoy watches, a router restart stops and starts its process, a latency spike
reaches every twin process as a re-read of its extra delays. Every process and namespace is
gone when ``emulate`` returns, also after an error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from simnet.emulate import plan
from simnet.emulate.observed import Observed, Sample
from simnet.model.deployment import Deployment
from simnet.model.load_balancer import load_balancer_bootstrap
from simnet.model.placement import Instance
from simnet.model.timeline import (
    CertExpired,
    CertRotated,
    CertWithoutGuid,
    LatencyChange,
    RouterDown,
    RouterUp,
    RoutesChanged,
    Start,
    Stop,
)
from simnet.real.envoy import EnvoyProcess
from simnet.real.foundation import EDGE_IP, Foundation, router_ip
from simnet.real.memory import smaps_kb
from simnet.real.processes import TwinProcess
from simnet.real.realize import Realization, realize
from simnet.real.twin import twin_path

LB_ADMIN_PORT = 9901
START_DELAY_S = 1.0  # between starting the generator and its first request
# The clients' load before time 0, not recorded, ramped from nothing to the whole: the
# routers' pools and the sidecars' connections grow as the load does, as in a foundation already
# serving. Every process starting at full load at once is not the platform's behaviour (the
# first second's p90 was over 100 ms here, 17 ms afterwards), nor are pools emptied at time 0
# (the run's first second was then one burst of TLS handshakes that two cores serialize:
# capacity-planning x0.25's p99 172 ms vs 67 simulated, that second's 240 ms, the others'
# 61-76 ms; and the stall held more connections than the load did).
WARMUP_S = 2.0
DRAIN_S = 30.0  # how long the generator may outlive the run, answering what is in flight
PREPARE_S = 3.0  # how far ahead a starting instance's container and processes are prepared
LATE_S = 0.05  # a start later than this is reported (Observed.late)
CONNECTIONS_EVERY_S = 0.02
EXTRA_HOPS = ("client_to_ingress", "router_to_sidecar", "sidecar_to_app")  # latency_spike's
MEMORY_EVERY_S = 0.25


@dataclass
class _Running:
    container: object
    app: TwinProcess
    envoy: EnvoyProcess
    since: float


class Emulation:
    """One emulated run of ``deployment``; ``run()`` returns the ``Observed``."""

    def __init__(self, deployment: Deployment, directory: Path,
                 progress: Callable[[float], None] | None = None):
        self.d = deployment
        self.s = deployment.scenario
        self.directory = directory
        self.progress = progress
        self.binary = twin_path()
        self.running: dict[str, _Running] = {}
        self.apps: dict[str, dict] = {}
        self.alive_s: dict[str, float] = {}
        self.samples: dict[str, list[Sample]] = {i.guid: [] for i in deployment.instances}
        self.table = dict(deployment.routes)
        self.routes_file = directory / "routes.json"
        self.routers: list[TwinProcess | None] = []
        self.router_stats: list[list[dict]] = []  # of each router's processes that stopped
        self.extras = {hop: 0.0 for hop in EXTRA_HOPS}
        self.extras_file = directory / "extras.json"
        self._load: TwinProcess | None = None
        self._net: Foundation | None = None  # while running
        self._ca = ""  # the routers' trusted CA file, once realized
        self._client_cert: tuple[str, str] | None = None  # and their client certificate's files
        self.not_applied: list[str] = []
        self.late: list[str] = []
        self._lock = threading.Lock()
        self._net_lock = threading.Lock()
        self._stopping: list[threading.Thread] = []
        self._t0 = 0.0

    # -- instances --------------------------------------------------------------------------

    def start_instance(self, real: Realization, net: Foundation, inst: Instance, *,
                       attach: bool = True) -> _Running:
        """The instance's container with its app and Envoy running; routed to only once
        attached (``attach_instance``)."""
        with self._net_lock:
            container = net.add_container(inst, attach=False)
        sc = real.sidecars[inst.guid]
        app = TwinProcess(self.binary, "app", plan.app_config(self.d, inst), self.directory,
                          f"app-{inst.guid}", namespace=container.namespace,
                          extra=self._extras_flag())
        envoy = EnvoyProcess(sc.bootstrap, namespace=container.namespace,
                             concurrency=self.d.envoy.workers)
        try:
            envoy.__enter__()
        except BaseException:
            app.kill()
            raise
        started = _Running(container, app, envoy, 0.0)
        if attach:
            self.attach_instance(net, started)
        return started

    def attach_instance(self, net: Foundation, r: _Running) -> None:
        with self._net_lock:
            net.attach(r.container.instance.guid)
        r.since = time.monotonic()
        with self._lock:
            self.running[r.container.instance.guid] = r

    def stop_instance(self, net: Foundation, guid: str, *, successor: bool = False) -> None:
        """The instance is gone from the network at once. It crashes (its Envoy killed: the
        kernel ends the routers' connections to it, as when a container's processes die) and
        its container is detached from the cell, which then refuses its host ports. Where a
        ``successor`` takes its address in the same instant (a move's newcomer), it is
        detached first instead: the routers' connections then meet the successor, which
        resets them, and no dial in between finds nothing listening. The rest of the stop
        (the app's stats, the namespace) goes on in the background."""
        with self._lock:
            r = self.running.pop(guid, None)
        if r is None:
            return
        if not successor:
            r.envoy.crash()
        with self._net_lock:
            net.detach(guid)
        self.alive_s[guid] = self.alive_s.get(guid, 0.0) + time.monotonic() - r.since
        stopping = threading.Thread(target=self._destroy, args=(net, r), daemon=True)
        stopping.start()
        self._stopping.append(stopping)

    def _destroy(self, net: Foundation, r: _Running) -> None:
        r.envoy.stop()
        stats = r.app.stop() or {}
        guid = r.container.instance.guid
        with self._lock:  # an instance restarted is one app over its processes
            self.apps[guid] = merged([self.apps.get(guid, {}), stats], maxima=("peak_queue",))
        with self._net_lock:
            net.remove_container(guid)

    # -- routers ----------------------------------------------------------------------------

    def write_routes(self) -> None:
        tmp = self.routes_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan.routes_table(self.table)))
        os.replace(tmp, self.routes_file)

    def routes_changed(self, change: RoutesChanged) -> None:
        """The new table written whole, and every router told to reload it."""
        change.apply(self.table, self.d.platform.keeps_empty_routes)
        self.write_routes()
        self._signal_routers(signal.SIGHUP)

    def _signal_routers(self, sig: int) -> None:
        for r in self.routers:
            if r is not None:
                r.signal(sig)

    def start_router(self, k: int) -> None:
        """Router ``k``'s process (again, after a restart: routes from the current table, an
        empty pool)."""
        ns = self._net.router_ns[k]
        self.routers[k] = TwinProcess(self.binary, "router", plan.router_config(
            self.d, k, listen=router_ip(k), routes_file=str(self.routes_file),
            ca_file=self._ca, client_cert=self._client_cert), self.directory,
            f"router-{k}-{len(self.router_stats[k])}",
            namespace=ns, extra=self._extras_flag())

    def stop_router(self, k: int) -> None:
        """The router process stops at once (SIGTERM: its stats written, its connections
        reset): the load balancer's requests to it are refused, those in flight end."""
        r, self.routers[k] = self.routers[k], None
        if r is not None:
            self.router_stats[k].append(r.stop() or {})

    # -- latency spikes ---------------------------------------------------------------------

    def _extras_flag(self) -> tuple[str, ...]:
        return ("--extras", str(self.extras_file))

    def latency_changed(self, hop: str, extra_s: float) -> None:
        """A spike starts or ends: every twin process re-reads the extra delay per hop."""
        self.extras[hop] = max(0.0, self.extras[hop] + extra_s)
        tmp = self.extras_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({h: v * 1000 for h, v in self.extras.items()}))
        os.replace(tmp, self.extras_file)
        with self._lock:
            apps = [r.app for r in self.running.values()]
        for p in (*apps, *(r for r in self.routers if r is not None), self._load):
            if p is not None:
                p.signal(signal.SIGUSR2)

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, memory: bool) -> None:
        """One sample of every running sidecar: its established connections, and Envoy's
        memory when ``memory`` (smaps_rollup costs more than the socket table)."""
        now = time.monotonic() - self._t0
        with self._lock:
            running = list(self.running.items())
        for guid, r in running:
            pid = r.envoy.pid
            if pid is None:
                continue
            try:
                conns = established(pid, {m.proxy for m in r.container.instance.proxy.mappings})
                private = smaps_kb(pid)["Private_Dirty"] / 1000 if memory else None
            except (FileNotFoundError, ProcessLookupError, KeyError):
                continue
            self.samples[guid].append(Sample(now, conns, private))

    def _sampler(self, stop: threading.Event) -> None:
        """Connections every CONNECTIONS_EVERY_S (a connection shorter than that, such as one
        whose handshake failed, can be missed), memory every MEMORY_EVERY_S."""
        n = 0
        per_memory = max(1, round(MEMORY_EVERY_S / CONNECTIONS_EVERY_S))
        while not stop.wait(CONNECTIONS_EVERY_S):
            self.sample(memory=n % per_memory == 0)
            n += 1

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Observed:
        d, s = self.d, self.s
        wall0 = time.monotonic()
        with ExitStack() as stack:
            credentials = self.directory / "credentials"
            credentials.mkdir(exist_ok=True)
            real = stack.enter_context(realize(d, credentials, sds=True))
            net = stack.enter_context(Foundation(s.routers.count,
                                                 {i.cell: i.cell_ip for i in d.instances}))
            stack.callback(self._stop_all, net)
            for guid in d.running:
                self.start_instance(real, net, d.instance(guid))
            self.write_routes()
            self._net = net
            self._ca = real.ca_file(s.routers.backends.trusted_ca or s.cells.instance_identity_ca)
            self._client_cert = real.router_client_files()
            self.routers = [None] * s.routers.count
            self.router_stats = [[] for _ in range(s.routers.count)]
            stack.callback(lambda: [r.kill() for r in self.routers if r is not None])
            for k in range(s.routers.count):
                self.start_router(k)
            stack.enter_context(EnvoyProcess(load_balancer_bootstrap(
                s.ingress, listen=(EDGE_IP, plan.LB_PORT),
                routers=[(router_ip(k), plan.ROUTER_PORT) for k in range(s.routers.count)],
                admin_port=LB_ADMIN_PORT), namespace=net.edge, concurrency=1))
            lead = START_DELAY_S + WARMUP_S
            start_at = time.time() + lead
            self._t0 = time.monotonic() + lead
            load = self._load = TwinProcess(
                self.binary, "load", plan.load_config(s, target=EDGE_IP), self.directory, "load",
                namespace=net.edge, extra=("--start-at", f"{start_at:.6f}",
                                           "--warmup-s", f"{WARMUP_S:g}", *self._extras_flag()))
            stack.callback(load.kill)
            # the routers count from time 0: the warm-up's requests are not the run's
            reset = threading.Timer(lead, self._signal_routers, args=(signal.SIGUSR1,))
            reset.start()
            stack.callback(reset.cancel)
            stop = threading.Event()
            sampler = threading.Thread(target=self._sampler, args=(stop,), daemon=True)
            sampler.start()
            stack.callback(stop.set)
            self._timeline(real, net)
            load.wait(s.duration_s + DRAIN_S + 60)
            load_result = json.loads(load.stats_file.read_text())
            stop.set()
            self._stop_all(net)
            for k in range(len(self.routers)):
                self.stop_router(k)
            router_stats = [merged(runs) for runs in self.router_stats]
        return Observed(load_result, router_stats, self.apps, self.samples, self.alive_s,
                        self.not_applied, self.late, time.monotonic() - wall0)

    def _timeline(self, real: Realization, net: Foundation) -> None:
        """Apply the derived events at their times. An instance that starts has its container
        and processes prepared PREPARE_S ahead in the background (once its guid's previous
        container is gone) and is attached at the event's time, so a start is as instant as
        the simulator's: a move's newcomer takes over the victim's address at once."""
        events = [e for e in self.d.events if e.at_s < self.s.duration_s]
        prepared: dict[int, Future] = {}  # index of a Start event -> its prepared instance
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:
            def prepare(j: int) -> None:
                if j not in prepared:
                    prepared[j] = pool.submit(self.start_instance, real, net,
                                              self.d.instance(events[j].guid), attach=False)

            for k, event in enumerate(events):
                while (delay := self._t0 + event.at_s - time.monotonic()) > 0:
                    for j in self._due(events, k, net):
                        prepare(j)
                    time.sleep(min(delay, 0.1))
                if self.progress:
                    self.progress(event.at_s / self.s.duration_s)
                match event:
                    case Stop(guid=guid):
                        self.stop_instance(net, guid, successor=self._succeeded(events, k))
                    case Start(guid=guid):
                        prepare(k)
                        started = prepared.pop(k).result()
                        late = time.monotonic() - self._t0 - event.at_s
                        if late > LATE_S:
                            self.late.append(
                                f"Start of {guid} at {event.at_s:g} s took effect {late:.2f} s late")
                        self.attach_instance(net, started)
                    case RoutesChanged():
                        self.routes_changed(event)
                    case CertExpired(guid=guid):
                        real.write_identity(guid, expired=True)
                    case CertWithoutGuid(guid=guid):
                        real.write_identity(guid, without_guid=True)
                    case CertRotated(guid=guid):
                        real.write_identity(guid)
                    case RouterDown(router=k):
                        self.stop_router(k)
                    case RouterUp(router=k):
                        self.start_router(k)
                    case LatencyChange(hop=hop, extra_s=extra_s):
                        self.latency_changed(hop, extra_s)
                    case _:
                        self.not_applied.append(f"{type(event).__name__} at {event.at_s:g} s")
            for future in prepared.values():  # prepared, never attached: destroy them
                self._destroy(net, future.result())
        rest = self._t0 + self.s.duration_s - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def _succeeded(self, events, k: int) -> bool:
        """Whether an instance starting at the same time takes over the address of the one
        ``events[k]`` stops."""
        stopped = self.d.instance(events[k].guid)
        return any(isinstance(e, Start) and e.at_s == events[k].at_s
                   and (i := self.d.instance(e.guid)).cell == stopped.cell
                   and i.container_ip == stopped.container_ip for e in events[k + 1:])

    def _due(self, events, k: int, net: Foundation):
        """The later Starts due within PREPARE_S whose guid holds no container now (nor will
        before them: no Stop of it comes first)."""
        now = time.monotonic() - self._t0
        for j in range(k, len(events)):
            e = events[j]
            if e.at_s - now > PREPARE_S:
                return
            if isinstance(e, Start) and e.guid not in net.containers \
                    and not any(isinstance(x, Stop) and x.guid == e.guid for x in events[k:j]):
                yield j

    def _stop_all(self, net: Foundation) -> None:
        """Stop every instance still running and wait for every stop under way."""
        for guid in list(self.running):
            self.stop_instance(net, guid)
        for stopping in self._stopping:
            stopping.join()
        self._stopping.clear()


def merged(runs: list[dict], maxima: tuple[str, ...] = ()) -> dict:
    """One router's or app's stats over its processes (a restart starts a new one): counters
    summed (also inside maps of counters and the warm-up's stats), ``maxima`` the largest."""
    out: dict = {}
    for stats in runs:
        for key, value in stats.items():
            if isinstance(value, dict):
                out[key] = merged([out.get(key, {}), value], maxima)
            elif key in maxima:
                out[key] = max(out.get(key, value), value)
            elif isinstance(value, (int, float)):
                out[key] = out.get(key, 0) + value
    return out


def established(pid: int, ports: set[int]) -> int:
    """Established TCP connections to ``ports`` in the network namespace of ``pid``, from the
    kernel's own table (``/proc/PID/net/tcp``: the socket list of that process's namespace)."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) in ports:
                        count += 1
        except FileNotFoundError:
            continue
    return count


def emulate(deployment: Deployment, directory: Path | None = None,
            progress: Callable[[float], None] | None = None) -> Observed:
    """Emulate the deployment; its working files go to ``directory`` (default a temporary one,
    removed afterwards)."""
    owned = directory is None
    directory = Path(tempfile.mkdtemp(prefix="simnet-emulate-")) if owned else directory
    try:
        return Emulation(deployment, directory, progress).run()
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
