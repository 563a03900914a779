"""Questions to ask of a deployment, answered from what simnet derives, as plain records.

In the spirit of pybatfish's questions: each function takes a scenario (a path, a bundled
scenario's name, a ``Scenario`` or a derived ``Deployment``) and returns ``Records``, a tuple of
frozen dataclasses with ``.to_frame()`` (a pandas DataFrame, when pandas is installed) and
``.to_json()``. Nothing is re-derived here: reachability is ``model.reachability``'s graph,
capture is ``model.packet_path``'s trace through the rules ``model.capture`` writes, TLS verdicts
are the handshake model's, memory is the calibrated footprint. ``simnet analyze`` and
``simnet.asserts`` are built on these answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, Union

from simnet import lenses
from simnet.model.deployment import Deployment
from simnet.model.interception import compiled_rules
from simnet.model.placement import CELL_NET, GATEWAY_IP, Instance
from simnet.model.platform import CaptureRules as Rules
from simnet.model.platform import Bosh, Diego, Istio
from simnet.model.memory import recommended_allocation_mb
from simnet.model.netfilter import Ruleset, load
from simnet.model.packet import Connection
from simnet.model.reachability import Client, reachability as reach_answer, representatives
from simnet.model.shadowing import unreachable_rules as unreachable_in
from simnet.scenario.load import SourceMap, scenario_path
from simnet.scenario.schema import Scenario

ScenarioLike = Union[str, Path, Scenario, Deployment]
EXTERNAL_ADDRESS = "198.18.255.1"  # a peer outside the container/pod, in the benchmarking range


class Records(tuple):
    """Answers to one question: a tuple of records, printable as a table."""

    def to_json(self) -> list[dict]:
        return [asdict(r) for r in self]

    def to_frame(self):
        """A pandas DataFrame, one row per record (``pip install 'simnet[notebook]'``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Records.to_frame() needs pandas: pip install 'simnet[notebook]'") from None
        columns = [f.name for f in fields(self[0])] if self else None
        return pd.DataFrame(self.to_json(), columns=columns)


def deployment_of(scenario: ScenarioLike) -> Deployment:
    """The derived deployment of a scenario given any way: a file, a bundled name, a model."""
    if isinstance(scenario, Deployment):
        return scenario
    if isinstance(scenario, Scenario):
        return lenses.derive(scenario, SourceMap("<scenario>", None))
    return lenses.load_and_derive(scenario_path(scenario))[1]


# --- reachability -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """One way from a source to a socket in an instance, and whether the given client gets in."""

    source: str  # external | router | peer | local
    app: str
    index: int  # the instance asked about (every instance of an app answers alike)
    kind: str  # app-port | sidecar-port | envoy-admin | listener
    port: int
    path: str  # e.g. "host port 61002 -> app port 8080"
    needs: str  # what the connection must bring, in words
    level: str  # plain | tls | mtls
    proxied: bool  # through an Envoy listener (False: a bypass of the sidecar)
    reachable: bool  # with the client asked about, and no platform grant
    grants: tuple[str, ...] = ()  # permissions the platform must grant first

    @property
    def target(self) -> str:
        """``app/index kind port``, e.g. ``billing/0 app-port 8080``."""
        return f"{self.app}/{self.index} {self.kind} {self.port}"


def reachability(scenario: ScenarioLike, source: str | None = None, target: str | None = None,
                 *, with_cert: Literal["router"] | tuple[str, str | None] | None = None
                 ) -> Records:
    """Who can open a connection to which socket, and whether a client presenting
    ``with_cert`` (``"router"``: the routers' configured client certificate; ``(ca, san)``; None:
    no certificate) gets through. ``source`` and ``target`` (an app name, or ``app:port``) narrow
    the answer."""
    d = deployment_of(scenario)
    app, port = _target(target)
    ca, san = _cert(d.scenario, with_cert)
    out = []
    for pr in reach_answer(d, app=app, port=port, guids=representatives(d)).ports:
        t = pr.target
        for a in pr.access:
            if source is not None and a.source != source:
                continue
            client = Client(tls=a.needs.tls, cert_ca=ca, cert_san=san)
            out.append(Reach(a.source, t.app, t.index, t.kind, t.port, a.name, a.needs.text(),
                             a.needs.level, a.proxied, a.admits(client), a.needs.grants))
    return Records(out)


def _target(target: str | None) -> tuple[str | None, int | None]:
    if target is None:
        return None, None
    app, _, port = target.partition(":")
    return app or None, int(port) if port else None


def _cert(s: Scenario, with_cert) -> tuple[str | None, str | None]:
    if with_cert == "router":
        c = s.routers.backends.client_cert
        return (c.ca, c.san) if c else (None, None)
    return with_cert if with_cert is not None else (None, None)


def bypasses(scenario: ScenarioLike) -> Records:
    """Paths from outside an instance to an app or sidecar port that skip its Envoy, when the
    platform puts one there: e.g. Diego's unproxied port mappings (``host port -> app port``)."""
    d = deployment_of(scenario)
    if not d.scenario.proxy.enabled:
        return Records(())
    return Records(r for r in reachability(d) if r.source != "local" and not r.proxied
                   and not r.grants and r.kind in ("app-port", "sidecar-port"))


# --- capture ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    """Where a connection lands after the platform's capture rules, and the rules it took."""

    ruleset: str  # which rules: "istio-iptables (pod)", "garden netin (cell)", ...
    connection: str
    verdict: str  # ACCEPT | DROP
    destination: str | None
    captured: bool  # it lands on the sidecar's Envoy
    rules: tuple[str, ...]  # table/CHAIN#n of every rule that matched, in order


def platform_rules(scenario: ScenarioLike) -> tuple[Rules, ...]:
    """The capture rulesets a deployment installs: Istio's per pod (all pods alike), the BOSH
    prototype's VIP rule per VM, Garden's NetIn DNAT rules per Diego container (one per app)."""
    d = deployment_of(scenario)
    if isinstance(d.platform, Diego):
        return tuple(d.platform.capture_rules(d.scenario, i) for i in running_instances(d).values())
    return (d.platform.capture_rules(d.scenario, None),)


def capture(scenario: ScenarioLike, app: str, port: int, *,
            direction: Literal["inbound", "outbound"] = "inbound", uid: int | None = None,
            dst: str = EXTERNAL_ADDRESS) -> Capture:
    """The chain rules a connection takes and where it lands: ``inbound`` to the app's ``port``
    as the router dials it (on Diego: the cell's host port for the port's TLS proxy, through
    Garden's DNAT; on Istio: the pod's capture rules), or ``outbound`` from the app's process
    (as ``uid``, default the app's) to ``dst:port``."""
    d = deployment_of(scenario)
    inst = _first(d, app)
    rules = d.platform.capture_rules(d.scenario, inst)
    conn = _connection(d, inst, port, direction, d.platform.uid(d.scenario.app(app))
                       if uid is None else uid, dst)
    return trace_capture(rules, conn)


def trace_capture(rules: Rules, conn: Connection) -> Capture:
    """``conn`` through ``rules`` (the evaluator: simnet.model.packet_path)."""
    o = compiled_rules(rules.text).trace(conn)
    dest = f"{o.destination[0]}:{o.destination[1]}" if o.destination else None
    captured = (o.verdict == "ACCEPT" and o.local and o.destination is not None
                and o.destination[1] in rules.proxy_ports)
    return Capture(rules.name, _conn_text(conn), o.verdict, dest, captured, o.path)


def running_instances(d: Deployment) -> dict[str, Instance]:
    """One instance per app running at t=0 (its lowest index), by app name: every instance of
    an app has the same sockets and rules, only addresses differ."""
    return {i.app: i for i in map(d.instance, representatives(d))}


def _first(d: Deployment, app: str) -> Instance:
    try:
        return running_instances(d)[app]
    except KeyError:
        raise ValueError(f"no running instance of app {app!r}") from None


def _connection(d: Deployment, inst: Instance, port: int, direction: str, uid: int,
                dst: str) -> Connection:
    own = d.platform.own_address(inst)
    if direction == "outbound":
        return Connection("outbound", dst, port, own, uid=uid, gid=uid, out_if="eth0",
                          local_addrs=(own,))
    if isinstance(d.platform, Diego):  # to the cell's host port that publishes ``port``
        # The cell forwards to its containers (ip_forward=1, which the evaluator's fresh
        # namespace lacks): the container's address counts as delivered.
        routed = inst.proxy.proxy_for(port) if inst.proxy and port in inst.proxy.app_ports else port
        host = inst.host_ports.get(routed, routed)
        return Connection("inbound", inst.cell_ip, host, str(CELL_NET + 65_000), in_if="eth0",
                          in_addr=inst.cell_ip, local_addrs=(inst.cell_ip, inst.container_ip))
    src = GATEWAY_IP if isinstance(d.platform, Istio) else EXTERNAL_ADDRESS
    return Connection("inbound", own, port, src, in_if="eth0", in_addr=own, local_addrs=(own,))


def _conn_text(c: Connection) -> str:
    who = f" as uid {c.uid}" if c.uid is not None else ""
    return f"{c.direction} {c.src}:{c.sport} -> {c.dst}:{c.dport}{who}"


# --- rules that can never match -------------------------------------------------------------


@dataclass(frozen=True)
class Unreachable:
    """A rule no packet reaches, and why (model.shadowing)."""

    ruleset: str
    rule: str  # table/CHAIN#n
    text: str
    reason: str  # shadowed | unreferenced-chain | never-matches
    by: str | None
    explanation: str


def unreachable_rules(ruleset: ScenarioLike | Ruleset) -> Records:
    """Rules that can never match, in a ruleset (a ``Ruleset``, or iptables-save text) or in
    every ruleset a scenario's platform installs: Batfish's filter-line reachability."""
    if isinstance(ruleset, Ruleset):
        found = [("ruleset", u) for u in unreachable_in(ruleset)]
    elif isinstance(ruleset, str) and ("\n" in ruleset or ruleset.startswith("*")):
        found = [("ruleset", u) for u in unreachable_in(load(ruleset, "<rules>"))]
    else:  # simnet wrote these rules: their line numbers would only confuse
        found = [(r.name, replace(u, line=None)) for r in platform_rules(ruleset)
                 for u in unreachable_in(compiled_rules(r.text).ruleset)]
    return Records(Unreachable(name, u.label(), u.rule, u.reason, u.by, u.explanation())
                   for name, u in found)


# --- TLS along the request path -------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One hop of a request to a route, what TLS it carries and the verdict on it."""

    hop: str
    tls: str  # none | tls | mtls | not modelled
    verifies: str  # what the client side checks
    verdict: str  # OK, or the status a failure gives (gorouter's / Envoy's)
    stale_route: str  # the verdict when another instance answers at the route's address
    expired_cert: str  # the verdict when the backend's identity certificate has expired


def tls_path(scenario: ScenarioLike, host: str | None = None) -> Records:
    """Each hop from the load balancer to the app for a request to ``host`` (default: the
    first route), with its TLS and verdicts from the handshake model."""
    d = deployment_of(scenario)
    s = d.scenario
    if host is not None and host not in {r.host for r in s.routes}:
        raise ValueError(f"no route for host {host!r}")
    v = d.backend_verdicts
    b = s.routers.backends
    mutual = s.proxy.require_and_verify_client_certificates
    router = d.platform.router
    if isinstance(d.platform, Bosh):  # the prototype: plain TCP from the job through its VM's Envoy
        return Records([Hop("job -> VIP -> local Envoy -> instance", "none", "-", "OK", "OK",
                            "OK")])
    # The client's TLS to the load balancer and on to the routers is not modelled.
    hops = [Hop("client -> load balancer", "not modelled", "-", "-", "-", "-"),
            Hop(f"load balancer -> {router}", "not modelled", "-", "-", "-", "-")]
    if d.platform.terminates_tls(s):
        istio = isinstance(d.platform, Istio)
        checks = f"CA {b.trusted_ca}" + (", SAN = workload SPIFFE id" if istio
                                          else ", SAN = instance guid")
        hops.append(Hop(f"{router} -> Envoy sidecar", "mtls" if mutual or istio
                        else "tls", checks, v[True, False].name, v[False, False].name,
                        v[True, True].name))
        hops.append(Hop("Envoy sidecar -> app", "none", "-", "OK", "-", "-"))
    else:
        hops.append(Hop(f"{router} -> app", "none", "-", "OK",
                        "delivered to whichever app answers", "-"))
    return Records(hops)


# --- memory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headroom:
    """An app's sidecar memory at the expected peak, against what the container holds."""

    app: str
    peak_connections: int
    envoy_mb: float  # the model's Envoy memory at the peak
    additional_mb: int  # the cell's additional allocation
    headroom_mb: float  # additional allocation minus Envoy at peak (app using its full quota)
    slack_mb: float  # container limit minus app, sidecars and Envoy at peak (as configured)
    fits: bool  # Envoy at peak fits in the additional allocation
    recommended_mb: int  # the allocation that holds the peak with the model's 10% margin
    oom_at_connections: int | None  # connections at which a full-quota app is OOM-killed


def memory_headroom(scenario: ScenarioLike, peak_connections: int | None = None) -> Records:
    """Per app, the sidecar's memory at ``peak_connections`` (default the scenario's
    ``proxy.expected_peak_connections``; the scenario's memory model, calibrated on the real
    Envoy by default) against the additional allocation."""
    d = deployment_of(scenario)
    s = d.scenario
    if not s.proxy.enabled:
        return Records(())
    peak = s.proxy.expected_peak_connections if peak_connections is None else peak_connections
    out = []
    for i in running_instances(d).values():
        fp = i.envoy
        envoy = fp.memory_mb(peak)
        out.append(Headroom(
            i.app, peak, round(envoy, 3), d.additional_mb, round(d.additional_mb - envoy, 3),
            round(i.envoy_limit_mb - envoy, 3), envoy <= d.additional_mb,
            recommended_allocation_mb(fp, peak), fp.connections_until(d.additional_mb)))
    return Records(out)


# --- differences between two versions of a deployment ----------------------------------------


@dataclass(frozen=True)
class Difference:
    """Something a change to the deployment changed."""

    question: str  # reachability | capture | tls | memory
    subject: str
    before: str
    after: str


def compare(before: ScenarioLike, after: ScenarioLike) -> Records:
    """What changed in reachability, capture, TLS and memory between two versions of a
    deployment: a CI gate for configuration changes (empty when nothing did)."""
    a, b = deployment_of(before), deployment_of(after)
    out: list[Difference] = []
    for question, answer in (("reachability", _reach_facts), ("capture", _capture_facts),
                             ("tls", _tls_facts), ("memory", _memory_facts)):
        fa, fb = answer(a), answer(b)
        for subject in sorted(fa.keys() | fb.keys()):
            was, now = fa.get(subject, "-"), fb.get(subject, "-")
            if was != now:
                out.append(Difference(question, subject, was, now))
    return Records(out)


def _reach_facts(d: Deployment) -> dict[str, str]:
    facts: dict[str, set[str]] = {}
    for r in reachability(d):
        if not r.grants:
            facts.setdefault(f"{r.source} -> {r.app} {r.kind} {r.port}", set()).add(
                f"{r.level}{'' if r.proxied else ' (bypasses Envoy)'}")
    return {k: ", ".join(sorted(v)) for k, v in facts.items()}


def _capture_facts(d: Deployment) -> dict[str, str]:
    facts = {}
    for app in d.scenario.apps:
        if app.name not in running_instances(d):
            continue
        for port in dict.fromkeys(app.ports):
            c = capture(d, app.name, port)
            facts[f"{app.name} inbound {port}"] = _landing(c)
        c = capture(d, app.name, 443, direction="outbound")
        facts[f"{app.name} outbound"] = _landing(c)
    return facts


def _landing(c: Capture) -> str:
    if c.verdict == "DROP":
        return "dropped"
    return f"captured by Envoy ({c.destination})" if c.captured else f"direct ({c.destination})"


def _tls_facts(d: Deployment) -> dict[str, str]:
    return {h.hop: f"{h.tls}, {h.verdict}, stale route: {h.stale_route}" for h in tls_path(d)}


def _memory_facts(d: Deployment) -> dict[str, str]:
    return {h.app: f"Envoy {h.envoy_mb:g} MB of {h.additional_mb} MB" for h in memory_headroom(d)}


__all__ = ["Capture", "Difference", "Headroom", "Hop", "Reach", "Records", "Rules",
           "Unreachable", "bypasses", "capture", "compare", "deployment_of", "memory_headroom",
           "platform_rules", "reachability", "tls_path", "trace_capture", "unreachable_rules"]
