"""The checks behind ``simnet analyze``: each yields findings about a loaded scenario, located
by the scenario element they are about. They judge what ``simnet.questions`` answers (capture
traces, reachability paths, memory headroom, unreachable rules); none re-derives anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from simnet import lenses, questions
from simnet.credentials import certificates
from simnet.model.capture import boshy_vips
from simnet.model.capacity import connection_peaks, offered_load
from simnet.model.deployment import Deployment, DeriveError
from simnet.model.interception import CONTAINER_APP_UID
from simnet.model.platform import Bosh, Diego, platform_of
from simnet.model.ports import C2C_TLS_PORT, PROXY_PORT_END, PROXY_PORT_START
from simnet.scenario.schema import Scenario
from simnet.scenario.source import Loc, relative_to


@dataclass(frozen=True)
class ScenarioFinding:
    """A finding before it is located: its code, the scenario element, the template's fields."""

    code: str
    loc: Loc
    params: dict


def scenario_findings(s: Scenario, file: str, at: datetime) -> Iterator[ScenarioFinding]:
    """Every check's findings, for a scenario the loader accepted (save coded problems)."""
    yield from certificate_findings(s, file, at)
    if not isinstance(platform_of(s), Bosh) and not s.routers.backends.enabled:
        yield ScenarioFinding("SIM0007", ("routers", "backends", "enabled"), {})
    try:
        d = lenses.derive(s)
    except DeriveError as e:
        for loc, message in e.problems:
            yield ScenarioFinding("SIM0012", loc, {"detail": message})
        return
    for check in DERIVED_CHECKS:
        yield from check(d)


# --- ports ----------------------------------------------------------------------------------


def port_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """Ports in Diego's proxy range (61001-65534), and sidecar ports Envoy takes: the executor
    allocates proxy ports clear of the app's own ports, but it does not know sidecar ports."""
    s = d.scenario
    if not isinstance(d.platform, Diego) or not s.proxy.enabled:
        return
    running = questions.running_instances(d)
    for i, app in enumerate(s.apps):
        envoy = _envoy_ports(running[app.name]) if app.name in running else {}
        for k, port in enumerate(app.ports):
            if _in_proxy_range(port):
                yield ScenarioFinding("SIM0003", ("apps", i, "ports", k), {
                    "owner": f"app {app.name}", "port": port,
                    "consequence": "the executor allocates Envoy's ports around it, so Envoy's "
                    "ports move whenever the app's ports change"})
        for j, sc in enumerate(app.sidecars):
            for k, port in enumerate(sc.ports):
                loc = ("apps", i, "sidecars", j, "ports", k)
                if port in envoy:
                    yield ScenarioFinding("SIM0002", loc, {"detail": (
                        f"sidecar {sc.name} port {port} is Envoy's {envoy[port]} in app "
                        f"{app.name}'s containers (the executor does not know sidecar ports): "
                        "one of the two cannot bind")})
                elif _in_proxy_range(port):
                    yield ScenarioFinding("SIM0003", loc, {
                        "owner": f"sidecar {sc.name}", "port": port,
                        "consequence": "the executor does not know sidecar ports, so adding an "
                        "app port can hand it to Envoy"})


def _in_proxy_range(port: int) -> bool:
    return PROXY_PORT_START <= port < PROXY_PORT_END and port != C2C_TLS_PORT


def _envoy_ports(inst) -> dict[int, str]:
    if inst.proxy is None:
        return {}
    ports = {m.proxy: f"TLS proxy port for app port {m.app}" for m in inst.proxy.mappings}
    ports[inst.proxy.admin] = "admin port"
    return ports


# --- capture --------------------------------------------------------------------------------


def uid_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """An app whose outbound connections the capture rules let through while another uid's
    are captured: Istio's rules exempt the proxy's own uid (1337); the BOSH add-on's rule,
    traced the same way, exempts none."""
    s = d.scenario
    if isinstance(d.platform, Diego):
        return  # Diego captures no outbound traffic, whatever the uid
    dst, port = questions.EXTERNAL_ADDRESS, 443
    if isinstance(d.platform, Bosh):
        if not s.routes:
            return
        dst, port = boshy_vips([s.routes[0].host])[s.routes[0].host], s.routes[0].port
    running = questions.running_instances(d)
    for i, app in enumerate(s.apps):
        if app.name not in running:
            continue
        uid = d.platform.uid(app)
        other = CONTAINER_APP_UID if uid != CONTAINER_APP_UID else CONTAINER_APP_UID + 1
        mine = questions.capture(d, app.name, port, direction="outbound", uid=uid, dst=dst)
        theirs = questions.capture(d, app.name, port, direction="outbound", uid=other, dst=dst)
        if theirs.captured and not mine.captured:
            loc: Loc = ("apps", i, "uid") if app.uid is not None else (
                ("capture", "istio", "ProxyUID") if "ProxyUID" in s.capture.istio else ("apps", i))
            landing = (f"go straight to {mine.destination}" if mine.verdict == "ACCEPT"
                       else "are dropped")
            yield ScenarioFinding("SIM0004", loc, {
                "app": app.name, "uid": uid, "landing": landing,
                "rules": ", ".join(mine.rules) or "no rule matches"})


def rule_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """Rules in the platform's capture rulesets that no packet can reach."""
    s = d.scenario
    loc: Loc = ("capture", "istio") if s.capture.istio else ("platform",)
    seen = set()
    for u in questions.unreachable_rules(d):
        key = (u.rule, u.text)
        if key not in seen:  # Garden's rules repeat per container: report a rule once
            seen.add(key)
            yield ScenarioFinding("SIM0008", loc, {"ruleset": u.ruleset,
                                                   "explanation": u.explanation})


# --- reachability ---------------------------------------------------------------------------


def bypass_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """Plain paths around Envoy to app ports: with mutual TLS required they defeat it (an
    error per app port); otherwise they are worth knowing (one info)."""
    s = d.scenario
    if not isinstance(d.platform, Diego):
        return
    found = [r for r in questions.bypasses(d) if r.kind == "app-port" and r.reachable]
    if not found:
        return
    loc = ("proxy", "enable_unproxied_port_mappings")
    if not s.routers.backends.enabled:
        return  # the plain mappings are how routers reach the apps: SIM0007 says so
    if not s.proxy.require_and_verify_client_certificates:
        r = found[0]
        yield ScenarioFinding("SIM0013", loc, {"count": len(found), "source": r.source,
                                               "path": r.path})
        return
    for r in found:
        yield ScenarioFinding("SIM0005", loc, {"source": r.source, "path": r.path,
                                               "target": r.target})


def admin_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """An Envoy admin API that another machine reaches (the BOSH add-on binds it to
    0.0.0.0:8001): whoever reaches it can stop Envoy (/quitquitquit), drain its listeners or
    dump its configuration and certificates."""
    exposed = [r for r in questions.reachability(d)
               if r.kind == "envoy-admin" and r.source != "local" and r.reachable]
    if exposed:
        r = exposed[0]
        yield ScenarioFinding("SIM0018", ("platform",), {
            "count": len(exposed), "source": r.source, "target": r.target})


# --- memory ---------------------------------------------------------------------------------


def memory_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """Diego's additional memory allocation against the sidecar's memory at the expected peak
    (the calibrated model of the real Envoy, unless the scenario picks another)."""
    s = d.scenario
    if not isinstance(d.platform, Diego):
        return  # the additional allocation is the Diego rep's; Istio sizes sidecars apart
    for h in questions.memory_headroom(d):
        if not h.fits:
            yield ScenarioFinding("SIM0006", ("proxy", "additional_memory_allocation_mb"), {
                "have": h.additional_mb, "need": f"{h.envoy_mb:.1f}", "app": h.app,
                "model": s.proxy.memory.model, "peak": h.peak_connections,
                "oom_at": h.oom_at_connections, "fits": h.recommended_mb})


# --- certificates ---------------------------------------------------------------------------


def certificate_findings(s: Scenario, file: str, at: datetime) -> Iterator[ScenarioFinding]:
    """Certificates that are not valid for the whole run: expired or not yet valid when it
    starts, or expiring before ``duration_s`` has passed."""
    end = at + timedelta(seconds=s.duration_s)
    for i, c in enumerate(s.certificates):
        for cert in certificates(relative_to(file, c.file), f"certificates[{i}].file"):
            when = _validity(cert, at, end)
            if when:
                yield ScenarioFinding("SIM0011", ("certificates", i, "file"), {
                    "role": c.role, "subject": cert.subject.rfc4514_string() or "(no subject)",
                    "file": c.file, "when": when})


def _validity(cert: x509.Certificate, start: datetime, end: datetime) -> str | None:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not_after <= start:
        return f"expired at {not_after.isoformat()}, before the run starts ({start.isoformat()})"
    if not_before > start:
        return f"is not valid until {not_before.isoformat()}, after the run starts"
    if not_after < end:
        into = (not_after - start).total_seconds()
        return f"expires at {not_after.isoformat()}, {into:g} s into the run"
    return None


# --- capacity -------------------------------------------------------------------------------


def capacity_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """An app offered more open-loop load than its instances can serve (``model.capacity``):
    its queues fill and it refuses requests, whatever else is right."""
    s = d.scenario
    for load in offered_load(d):
        if load.offered_per_s <= load.capacity_per_s:
            continue
        i, app = next((i, a) for i, a in enumerate(s.apps) if a.name == load.app)
        yield ScenarioFinding("SIM0014", ("apps", i, "concurrency"), {
            "app": app.name, "offered": f"{load.offered_per_s:,.0f}",
            "capacity": f"{load.capacity_per_s:,.0f}", "instances": app.instances,
            "concurrency": app.concurrency, "service": f"{app.service_time.mean:.1f}",
            "needed": load.instances_needed})


RETRY_RISK_UTILISATION = 0.8  # from here Poisson bursts fill the queues now and then


def connection_limit_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """A route whose busiest endpoint can reach ``router.backends.max_conns`` at one router at
    the expected peak (``model.capacity.connection_peaks``): gorouter skips it, and when every
    endpoint of the route is there it answers 503 Connection Limit Reached."""
    s = d.scenario
    for peak in connection_peaks(d):
        if peak.peak_in_progress < peak.max_conns:
            continue
        yield ScenarioFinding("SIM0015", ("routers", "backends", "max_conns"), {
            "host": peak.host, "app": peak.endpoint.app, "mean": f"{peak.mean_in_progress:,.1f}",
            "peak": f"{peak.peak_in_progress:,.0f}", "max_conns": peak.max_conns,
            "routers": s.routers.count})


def retry_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """An app near its capacity whose refusals gorouter retries: every refused request comes
    back as new load on another instance, up to ``max_attempts`` times, so a burst can push
    the load past capacity and keep it there (a retry storm). Not reported for an app already
    over capacity (SIM0014) or without retries."""
    s = d.scenario
    attempts = s.routers.max_attempts
    if attempts < 2:
        return
    for load in offered_load(d):
        utilisation = load.offered_per_s / load.capacity_per_s if load.capacity_per_s else 0.0
        if not RETRY_RISK_UTILISATION <= utilisation <= 1 or load.offered_per_s * attempts <= load.capacity_per_s:
            continue
        yield ScenarioFinding("SIM0016", ("routers", "max_attempts"), {
            "app": load.app, "utilisation": f"{utilisation:.0%}", "attempts": attempts,
            "amplified": f"{load.offered_per_s * attempts:,.0f}",
            "capacity": f"{load.capacity_per_s:,.0f}"})


def flush_findings(d: Deployment) -> Iterator[ScenarioFinding]:
    """The BOSH prototype's capture begins with a flush of nat OUTPUT: the rules it loads (the
    platform's, from ``capture_rules``) say so themselves."""
    if not isinstance(d.platform, Bosh) or not d.scenario.proxy.enabled:
        return
    rules = d.platform.capture_rules(d.scenario, None).text
    if any(line.split()[:2] == ["-F", "OUTPUT"] for line in rules.splitlines()):
        yield ScenarioFinding("SIM0017", ("platform",), {})


DERIVED_CHECKS: tuple[Callable[[Deployment], Iterator[ScenarioFinding]], ...] = (
    port_findings, uid_findings, bypass_findings, memory_findings, rule_findings,
    capacity_findings, connection_limit_findings, retry_findings, flush_findings,
    admin_findings)

__all__ = ["DERIVED_CHECKS", "ScenarioFinding", "scenario_findings"]
