"""The emulated twin on real components: the foundation's namespaces and Garden's NetIn rules in
the kernel, then a whole bundled scenario emulated and held to its simulation. Needs root;
without it these tests fail (SIMNET_REAL_REQUIRED=1), they do not skip."""

from __future__ import annotations

import errno
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

from simnet.emulate import emulate, metrics_of
from simnet.lenses import derive, load, load_and_derive, scaled, simulate
from simnet.real.foundation import Foundation, router_ip
from simnet.real.netns import list_namespaces
from simnet.scenario.bundled import bundled

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("kernel_netns")]


def _serve_once(sock: socket.socket, answer: bytes) -> threading.Thread:
    def run():
        conn, _ = sock.accept()
        with conn:
            conn.sendall(answer)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _dial(ns, address: tuple[str, int]) -> bytes | int:
    """What a connection from ``ns`` gets: the first bytes, or the errno that refused it.
    A timeout fails the test: it is neither an answer nor a refusal."""
    s = ns.socket()
    s.settimeout(5)
    try:
        s.connect(address)
        return s.recv(64)
    except TimeoutError:
        pytest.fail(f"{address}: no answer and no refusal within 5 s")
    except OSError as e:
        return e.errno
    finally:
        s.close()


def test_a_router_reaches_a_container_only_through_its_cells_netin_rules():
    _, d = load_and_derive(bundled())
    inst = d.instances[0]
    route = d.routes["dashboard.apps.example.com"][0]
    assert route.guid == inst.guid
    before = set(list_namespaces())
    with Foundation(2, {i.cell: i.cell_ip for i in d.instances}) as net:
        c = net.add_container(inst)
        container_port = next(m.proxy for m in inst.proxy.mappings
                              if inst.host_ports[m.proxy] == route.address[1])
        listener = c.namespace.socket()
        listener.bind((inst.container_ip, container_port))
        listener.listen()
        served = _serve_once(listener, b"hello from the container\n")
        # the route's address is the cell's host port; DNAT takes it to the container's port
        assert _dial(net.router_ns[1], route.address) == b"hello from the container\n"
        served.join(5)
        listener.close()
        # the container's own address is not routed outside its cell
        assert _dial(net.router_ns[0], (inst.container_ip, container_port)) in (
            errno.ENETUNREACH, errno.EHOSTUNREACH)
        net.remove_container(inst.guid)
        # the chain is gone with the container: the cell itself refuses the host port
        assert _dial(net.router_ns[0], route.address) == errno.ECONNREFUSED
        assert router_ip(1) == "198.19.255.2"
    assert set(list_namespaces()) == before


# The default scenario up to just after the move's route update (t=6 s, reaching the routers at
# 8 s): long enough for the stale route to be dialled, short enough for CI.
MOVE_RUN_S = 9.0


def _emulated(**backends):
    s, _ = load(bundled())
    s = scaled(s, duration_s=MOVE_RUN_S)
    if backends:
        s = s.model_copy(update={"routers": s.routers.model_copy(update={
            "backends": s.routers.backends.model_copy(update=backends)})})
    d = derive(s)
    observed = emulate(d)
    assert not [n for n in list_namespaces() if n.startswith(f"simnet-{os.getpid()}-")]
    return d, observed, metrics_of(d, observed)


def test_the_moved_instance_is_refused_by_the_san_check_pruned_and_never_misdelivered():
    """diego-route-integrity on real components: after the move the routers' stale route
    reaches billing's new instance at dashboard's old address; Go's TLS check of the guid
    fails (gorouter's 503 class), the endpoint is pruned, the request retried elsewhere."""
    d, observed, m = _emulated()
    assert m.issued > 0.8 * MOVE_RUN_S * 300  # the open-loop client alone offers 300/s
    assert sum(m.outcomes.values()) + m.timed_out == m.issued  # nothing lost
    assert m.misdelivered == 0
    mismatches = sum(r["failures"].get("san_mismatch", 0) for r in observed.routers)
    # each router whose stale connection broke dials the reused address: mismatch, prune, retry
    assert mismatches >= 1 and m.endpoints_pruned >= 1 and m.retries >= mismatches
    assert m.outcomes[200] >= 0.99 * m.issued
    sim = simulate(d)
    assert sim.misdelivered == 0
    assert abs(m.outcomes[200] - sim.outcomes[200]) <= 0.1 * sim.outcomes[200]


def test_without_backend_tls_the_stale_route_delivers_to_the_wrong_app():
    """The negative control: the same move with routers.backends.enabled false (plain HTTP to
    the unproxied host port) lets billing's new instance answer dashboard's requests."""
    d, _, m = _emulated(enabled=False)
    assert m.misdelivered > 0
    assert m.served["dashboard.apps.example.com", "billing"] == m.misdelivered
    assert simulate(d).misdelivered > 0


def test_the_routers_client_certificate_is_what_envoy_requires_as_simulated():
    """Sidecars that require client certificates (the executor's
    require_and_verify_client_certificates) from router-ca: routers holding gorouter's
    router.backends.cert_chain from that CA are served; without it the real Envoy refuses the
    handshake (TLS 1.3: certificate_required after the client's handshake, which gorouter's
    RemoteFailedCertCheck classifies as 496 and prunes), as the simulator says."""
    s, _ = load(bundled("sidecar-buildpack"))
    s = scaled(s, duration_s=3.0)
    proxy = s.proxy.model_copy(update={"require_and_verify_client_certificates": True,
                                       "trusted_ca_certificates": ["router-ca"]})
    outcomes = {}
    for client_cert in ({"ca": "router-ca"}, None):
        backends = s.routers.backends.model_validate(
            {**s.routers.backends.model_dump(), "client_cert": client_cert})
        d = derive(s.model_copy(update={"proxy": proxy, "routers": s.routers.model_copy(
            update={"backends": backends})}))
        observed = emulate(d)
        m = metrics_of(d, observed)
        failed = {v for r in observed.routers for v in r["warmup"]["failures"]}
        outcomes[client_cert is not None] = (set(m.outcomes), set(simulate(d).outcomes), failed)
    assert outcomes[True] == ({200}, {200}, set())
    emulated, simulated, failed = outcomes[False]
    # The twin's warm-up met the refusals and pruned every endpoint (PrunableClassifiers), so
    # its measured answers are the empty pool's 503; the simulator's pools start cold at time 0
    # and answer 496 first, then 503.
    # Envoy's alert and its close race Go's transport: an attempt may see the connection closed
    # instead (gorouter uses the same transport), never another verdict.
    assert "client_cert_rejected" in failed
    assert failed <= {"client_cert_rejected", "backend_closed", "connection_reset"}
    assert emulated == {503} and simulated == {496, 503}


def test_a_graceful_stop_is_refused_by_the_real_envoy_as_simulated():
    """A stop: the real Envoy loads the guid-less identity the rep's credential manager
    writes (executor credmanager.go, on signal) from its SDS file, the twin's router meets
    Go's HostnameError (gorouter's HostnameMismatch: retriable, prunable), prunes the
    instance and retries on the other; every client answer is 200, in emulation and
    simulation alike."""
    s, _ = load(bundled("sidecar-buildpack"))
    s = scaled(s, duration_s=5.0)
    s = s.model_validate({**s.model_dump(), "faults": [
        {"kind": "stop", "at_s": 1.5, "app": s.apps[0].name, "instance": 0}],
        "proxy": {**s.proxy.model_dump(), "envoy_config_reload_duration_s": 2.0},
        "routers": {**s.routers.model_dump(), "keep_alive_to_backends": False}})
    d = derive(s)
    observed = emulate(d)
    emulated, simulated = metrics_of(d, observed), simulate(d)
    failures = [r["failures"] for r in observed.routers]
    assert {v for f in failures for v in f} == {"san_mismatch"}, failures
    for m in (emulated, simulated):
        seen = (m.endpoints_pruned, m.retries, dict(m.outcomes), dict(m.causes))
        assert m.endpoints_pruned == 1 and m.retries >= 1, seen
        assert set(m.outcomes) == {200} and m.misdelivered == 0, seen


def test_ctrl_c_in_the_middle_of_an_emulation_leaves_nothing_behind(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "simnet", "emulate", "--duration", "20", "--reports", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ours = f"simnet-{proc.pid}-"

    def load_generator_running() -> bool:
        return subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "twin-.* load"],
                              capture_output=True).returncode == 0
    deadline = time.monotonic() + 60
    while not load_generator_running():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.2)
    assert any(n.startswith(ours) for n in list_namespaces())
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    assert not [n for n in list_namespaces() if n.startswith(ours)]
    alive = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    assert not alive, f"children of the interrupted emulation still running: {alive}"
    assert not (tmp_path / "diego-route-integrity-emulated").exists()


def test_a_simulation_given_the_measured_overhead_has_the_emulations_latency_distribution():
    """simnet calibrate hops on this machine, then the scenario emulated and simulated with the
    calibration: the latency distributions agree (with the simulator ignoring the overhead its
    median was 28.3 ms against the emulation's 32.7: this test went red)."""
    from simnet.lenses import calibrate_hops
    from simnet.emulate.validate import distribution

    s, _ = load(bundled())
    s = scaled(s, duration_s=5.0)
    calibration = calibrate_hops(s, 4.0)
    s = s.model_copy(update={"latency": s.latency.model_copy(update={
        "overhead": calibration.overhead()})})
    d = derive(s)
    emulated = metrics_of(d, emulate(d))
    simulated = simulate(d)
    p50 = [m.summary()["latency_ms"]["p50"] for m in (simulated, emulated)]
    assert abs(p50[1] - p50[0]) <= 0.15 * p50[0], p50
    assert distribution([simulated], emulated)["ks_distance"] < 0.15


def test_an_expired_identity_written_under_a_running_envoy_is_what_the_router_then_sees():
    """The emulation's expire_certificate: realized with file-based SDS (as the executor points
    Envoy at sds-id-cert-and-key.yaml), the identity rewritten under the running Envoy is the
    one new handshakes get; the rotation brings a valid one back."""
    import ssl

    from simnet.real.realize import realize
    from simnet.real.reach import EchoServer, round_trip

    _, d = load_and_derive(bundled())
    inst = d.instance(d.running[0])
    port = inst.proxy.app_ports[0]
    endpoint = d.platform.endpoint(d.scenario, inst, port)

    def until(sc, ctx, wanted, what: str):
        deadline = time.monotonic() + 15
        while True:
            trip = round_trip(sc.cell.router, endpoint.address, ctx, server_hostname=inst.guid)
            if wanted(trip):
                return trip
            assert time.monotonic() < deadline, f"Envoy never served {what}: {trip.detail}"
            time.sleep(0.2)

    with realize(d, guids=[inst.guid], sds=True) as real:
        sc = real.start(inst.guid)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(real.ca_file(d.scenario.cells.instance_identity_ca))
        with EchoServer(sc.cell.container, port, "app"):
            assert until(sc, ctx, lambda t: t.answered_by == "app", "its identity").tls
            real.write_identity(inst.guid, expired=True)
            expired = until(sc, ctx, lambda t: t.answered_by is None, "the expired identity")
            assert "certificate has expired" in expired.detail, expired.detail
            real.write_identity(inst.guid)
            until(sc, ctx, lambda t: t.answered_by == "app", "the rotated identity")


def test_a_router_restart_and_a_latency_spike_happen_for_real_as_simulated():
    """restart_router: while router 0 is down the load balancer answers 502 "router down" for
    the requests it sends there, in the emulation as in the simulation; latency_spike: the hop's
    extra delay is slept by the component that carries it, both ways."""
    from simnet.scenario.schema import LatencySpikeFault, RouterRestartFault

    s, _ = load(bundled())
    s = scaled(s.model_copy(update={"faults": [
        RouterRestartFault(kind="restart_router", at_s=1.0, router=0, down_s=1.5),
        LatencySpikeFault(kind="latency_spike", at_s=3.5, duration_s=1.0,
                          hop="router_to_sidecar", extra_ms=40.0)]}), duration_s=5.5)
    d = derive(s)
    observed = emulate(d)
    assert observed.not_applied == []
    m, sim = metrics_of(d, observed), simulate(d)
    for run in (m, sim):
        assert run.causes["router down"] > 0.8 * 0.5 * 1.5 * 300 * 0.5, run.causes
        assert sum(run.outcomes.values()) + run.timed_out + run.in_flight == run.issued
    assert abs(m.causes["router down"] - sim.causes["router down"]) <= 0.3 * sim.causes["router down"]
    requests = observed.load["requests"]
    spiked = [r[3] for r in requests if 3.6 <= r[1] < 4.4 and r[4] == 200 and r[0] == 0]
    calm = [r[3] for r in requests if 2.8 <= r[1] < 3.4 and r[4] == 200 and r[0] == 0]
    assert statistics.median(spiked) - statistics.median(calm) > 60  # 2 x 40 ms, less noise
