"""The netfilter model against the Linux kernel: same ruleset, same connection, same destination.

Each case builds a fresh pair of network namespaces (``simnet.real.netns.Topology``), loads
the ruleset with the real iptables-restore, makes the real connection (as the given uid/gid)
and reads back where the kernel delivered it. The model's prediction must be equal:
verdict, destination address and port, and whether it stayed on this host. Hypothesis draws
arbitrary rulesets over every supported match and target and Istio configurations over the
generator's option space. Every golden file runs with connections chosen so that every rule
in it matches at least one of them.

Needs root and network namespaces: without them these tests FAIL, they never skip. Traffic
stays inside the test's own namespaces (veth pairs, 198.18.0.0/15 and 2001:2::/48).
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simnet.model import netfilter as nf
from simnet.model.capture import IstioConfig, istio_capture
from simnet.model.interception import INJECTED_FIELDS
from simnet.model.packet import Connection
from simnet.model.packet_path import State, compile_ruleset, match
from simnet.model.shadowing import unreachable_rules
from simnet.real.netfilter import load_rules, probe
from simnet.conformance import PEERS
from simnet.real.netns import Topology
from simnet.strategies.capture import istio_configs
from simnet.strategies.netfilter import connections, rulesets, rulesets_with_a_dead_copy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("kernel_netns")]

GOLDEN = PEERS / "istio-capture-golden"
CASES = ([c["name"] for c in json.loads((GOLDEN / "cases.json").read_text())["cases"]]
         if (GOLDEN / "cases.json").is_file() else [])
GROUPS = {"java": 1001, "ftp": 1002}  # group names in four goldens; numbers for the kernel
TIMEOUT_S = 0.25  # no SYN answer within this on a veth: the kernel dropped it
RECHECK_TIMEOUT_S = 2.0  # ... unless the machine was busy: disagreements on a timeout are re-asked
# Kernel cases per hypothesis example budget: the ci profile's 200 examples become 600
# arbitrary rulesets, 400 Istio configurations and 100 rulesets with rules the model calls
# unreachable, each with a few connections (about half a second each: most of CI's time).
SCALE = settings().max_examples
KERNEL = settings(max_examples=SCALE * 3, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ISTIO = settings(max_examples=SCALE * 2, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNTERS = settings(max_examples=max(SCALE // 2, 10), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def numeric_groups(text: str) -> str:
    for name, gid in GROUPS.items():
        text = text.replace(f"--gid-owner {name}", f"--gid-owner {gid}")
    return text


def listen_ports(rs: nf.Ruleset, conns) -> set[int]:
    return nf.referenced_ports(rs) | {c.dport for c in conns}


KERNEL_CASES = {"rulesets": 0, "connections": 0}  # reported at the end of the run (conftest)


def check_against_kernel(text: str, family: int, conns: list[Connection], ipv6: bool = False
                         ) -> dict[str, int]:
    """Load ``text`` into a fresh topology, make each connection, compare with the model.
    Returns the packets the kernel counted per rule (``table/CHAIN#n``) after the connections."""
    rs = nf.load(text, "<case>", family)
    compiled = compile_ruleset(rs)
    ports = listen_ports(rs, conns)
    with Topology(ipv6=ipv6) as topo:
        load_rules(topo, text, family)
        KERNEL_CASES["rulesets"] += 1
        for conn in conns:
            predicted = compiled.trace(conn)
            seen = probe(topo, conn, ports - {conn.sport}, TIMEOUT_S)
            if predicted != seen.outcome and seen.client_error in ("ETIMEDOUT", "ACK_NOT_DELIVERED"):
                seen = recheck(text, family, conn, ports - {conn.sport}, ipv6)
            KERNEL_CASES["connections"] += 1
            assert predicted == seen.outcome, (
                f"model and kernel disagree\n--- ruleset (IPv{family})\n{text}--- connection\n{conn}\n"
                f"--- model\n{predicted.to_json()}\n--- kernel\n{seen}")
        return kernel_counters(topo, family)


def kernel_counters(topo: Topology, family: int = 4) -> dict[str, int]:
    """Packets each rule of the pod's ruleset matched, as the kernel counts them
    (``iptables-save -c``: ``[packets:bytes] -A CHAIN ...``), keyed ``table/CHAIN#n``."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    out = topo.pod.run([tool, "-c"], what=f"{tool} -c").stdout
    counts: dict[str, int] = {}
    position: dict[str, int] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("[") and " -A " in line:
            packets = int(line[1:line.index(":")])
            chain = line.split(" -A ", 1)[1].split()[0]
            key = f"{table}/{chain}"
            position[key] = position.get(key, 0) + 1
            counts[f"{key}#{position[key]}"] = packets
    return counts


def recheck(text: str, family: int, conn: Connection, ports: set[int], ipv6: bool):
    """A timeout on a loaded machine is not a verdict: ask again, in a fresh topology, waiting
    long enough (2 s, before the first SYN retransmission would even matter) to be sure."""
    with Topology(ipv6=ipv6) as topo:
        load_rules(topo, text, family)
        return probe(topo, conn, ports, RECHECK_TIMEOUT_S)


# ----------------------------------------------------------------------------- generated rulesets


@KERNEL
@given(rulesets(notrack=False), st.lists(connections(), min_size=1, max_size=3))
def test_generated_rulesets_agree_with_the_kernel(text, conns):
    check_against_kernel(text, 4, conns)


TOPO = Topology(ipv6=False)  # only its pure address helpers, to build matching connections
TOPO6 = Topology(ipv6=True)


def test_a_loopback_source_natted_off_the_host_is_dropped_like_the_kernel():
    """Found by the unreachable-rules test below: DNAT in nat OUTPUT sending a 127.0.0.1-sourced
    connection to another host; the kernel's re-route refuses a loopback source off the host."""
    text = "*nat\n-A OUTPUT -o lo -p tcp -j DNAT --to-destination 198.18.0.2\nCOMMIT\n"
    conn = TOPO.outbound("127.0.0.1", 53, src="127.0.0.1", uid=1000, gid=1000)
    predicted = compile_ruleset(nf.load(text)).trace(conn)
    assert predicted.verdict == "DROP" and predicted.path[-1] == "routing:martian-source"
    check_against_kernel(text, 4, [conn])


@st.composite
def istio_pod_connections(draw):
    """Connections an Istio pod sees: app or proxy traffic out, the gateway's traffic in."""
    dport = draw(st.sampled_from([80, 8080, 15001, 15006, 15008, 15020, 15090, 4000, 5000, 31000,
                                  32000, 6000, 53]))
    if draw(st.integers(0, 2)) == 0:
        in_if = draw(st.sampled_from(["eth0", "eth1"]))
        return TOPO.inbound(TOPO.address(in_if), dport, in_if=in_if, src=TOPO.peer_interfaces[in_if])
    dst = draw(st.sampled_from(["198.18.0.2", "198.18.1.2", "198.18.0.1", "127.0.0.1", "9.9.1.1",
                                "10.1.2.3", "1.1.1.1", "127.0.0.53"]))
    src = TOPO.address(TOPO.out_if(dst)) if not TOPO.is_pod_local(dst) else (
        draw(st.sampled_from(["127.0.0.1", "127.0.0.6"])) if dst.startswith("127.") else dst)
    ids = draw(st.sampled_from([0, 1, 2, 3, 4, 1000, 1337]))
    gid = draw(st.sampled_from([ids, 1337, 1000]))
    return TOPO.outbound(dst, dport, src=src, uid=ids, gid=gid)


@ISTIO
@given(istio_configs(), st.lists(istio_pod_connections(), min_size=1, max_size=3))
def test_istio_generated_rules_agree_with_the_kernel(config, conns):
    check_against_kernel(istio_capture(config).v4, 4, conns)


# ----------------------------------------------------------------------------- unreachable rules


@COUNTERS
@given(st.data())
def test_rules_the_model_calls_unreachable_count_no_packet_in_the_kernel(data):
    """``simnet.model.shadowing`` against the kernel's own rule counters: after real
    connections (random ones, and one aimed at each reported rule's matches), every rule
    reported as never matching has counted 0 packets. A copy of a terminal rule is inserted
    right after it, so most rulesets have at least one such rule."""
    rs, copy = data.draw(rulesets_with_a_dead_copy(notrack=False), label="rules")
    reported = unreachable_rules(rs)
    assert copy is None or copy in {u.label() for u in reported}
    conns = data.draw(st.lists(connections(), min_size=1, max_size=3), label="connections")
    pool = candidate_connections(4)
    conns += [c for u in reported if (c := aimed_at(_rule(rs, u), pool)) and c not in conns][:4]
    counters = check_against_kernel(rs.save_text(), 4, conns)
    counted = {u.label(): counters.get(u.label()) for u in reported}
    assert all(n == 0 for n in counted.values()), (counted, rs.save_text())


def test_a_shadowed_istio_rule_counts_no_packet_while_its_first_copy_does():
    config = IstioConfig(**{**INJECTED_FIELDS, "InboundPortsExclude": "15090,15021,15020,15090"})
    text = istio_capture(config).v4
    [u] = unreachable_rules(nf.load(text))
    assert (u.label(), u.by) == ("nat/ISTIO_INBOUND#5", "nat/ISTIO_INBOUND#2")
    conn = TOPO.inbound(TOPO.address("eth0"), 15090, in_if="eth0", src=TOPO.peer_interfaces["eth0"])
    counters = check_against_kernel(text, 4, [conn])
    assert counters[u.by] >= 1 and counters[u.label()] == 0, counters


def _rule(rs: nf.Ruleset, u) -> nf.Rule:
    return rs.chain(u.table, u.chain).rules[u.index - 1]


# ----------------------------------------------------------------------------- golden rulesets


def candidate_connections(family: int) -> list[Connection]:
    """A pool wide enough to reach every rule of Istio's goldens: every kind of destination,
    the ports the goldens name, the uids/gids they exempt, TCP and UDP (DNS)."""
    topo = Topology(ipv6=True)
    ports = (53, 80, 4000, 5000, 6000, 15001, 15006, 15008, 31000, 32000)
    ids = ((1000, 1000), (1337, 1337), (1000, 1337), (1337, 1000), (3, 1), (4, 2), (1000, 1001),
           (1000, 202), (1000, 888), (1000, 1002))
    if family == 4:
        dsts = ("198.18.0.2", "198.18.1.2", "198.18.0.1", "127.0.0.1", "127.1.2.3", "9.9.1.1",
                "10.1.2.3", "1.1.1.1", "127.0.0.53")
    else:
        dsts = ("2001:2::2", "2001:2:0:1::2", "2001:2::1", "::1", "2001:db8::5", "::127.0.0.53")
    pool = []
    for dst, dport, (uid, gid) in itertools.product(dsts, ports, ids):
        local = topo.is_pod_local(dst)
        srcs = ([dst] if not dst.startswith(("127.", "::1")) else
                (["127.0.0.1", "127.0.0.6"] if family == 4 else ["::1"])) if local else \
            [topo.address(topo.out_if(dst), family)]
        for src in srcs:
            pool.append(topo.outbound(dst, dport, src=src, uid=uid, gid=gid))
            if dport == 53:
                for sport in (40000, 15053):
                    pool.append(topo.outbound(dst, dport, src=src, uid=uid, gid=gid, proto="udp", sport=sport))
    loop = "127.0.0.1" if family == 4 else "::1"
    for mark, uid in itertools.product((1337, 1338), (1000, 1337)):  # packets Envoy marked (TPROXY)
        pool.append(topo.outbound(loop, 15006, src=loop, uid=uid, gid=uid, mark=mark))
        pool.append(topo.outbound(dsts[0], 80, src=topo.address("eth0", family), uid=uid, gid=uid, mark=mark))
    if family == 4:  # a DNS answer from the local resolver, as it loops back in
        pool.append(topo.outbound("127.0.0.1", 40000, src="127.0.0.53", sport=53, proto="udp", uid=0, gid=0))
    peers = topo.peer_interfaces if family == 4 else topo.peer_interfaces6
    for in_if, dport in itertools.product(("eth0", "eth1"), ports + (15090, 15021)):
        pool.append(topo.inbound(topo.address(in_if, family), dport, in_if=in_if, src=peers[in_if]))
    # traffic for other hosts routed through the pod (KubeVirt: RerouteVirtualInterfaces)
    foreign = ("9.9.1.1", "10.1.2.3") if family == 4 else ("2001:db8::5",)
    for in_if, dst in itertools.product(("eth0", "eth1"), foreign):
        pool.append(topo.inbound(dst, 80, in_if=in_if, src=peers[in_if]))
    if family == 6:  # a DNS answer from the IPv6 resolver address, arriving from outside
        pool.append(topo.inbound(topo.address("eth0", 6), 40000, src="::127.0.0.53", sport=53, proto="udp"))
    return pool


def covering_connections(rs: nf.Ruleset, pool: list[Connection]) -> tuple[list[Connection], set[str]]:
    """A small set of connections that together make every reachable rule of ``rs`` match
    (greedy set cover over the pool, by the model's paths), and the rules none of them reach."""
    compiled = compile_ruleset(rs)
    hits = [(c, {p for p in compiled.trace(c).path if "#" in p}) for c in pool]
    chosen, covered = [], set()
    while True:
        conn, new = max(hits, key=lambda h: len(h[1] - covered))
        if not new - covered:
            break
        chosen.append(conn)
        covered |= new
    return chosen, set(nf.rule_lines(rs)) - covered


def aimed_at(rule: nf.Rule, pool: list[Connection]) -> Connection | None:
    """A connection satisfying the rule's own matches as it enters the hooks: if the model says
    an earlier rule decides it first (the rule is shadowed), the kernel must agree."""
    for conn in pool:
        s = State(conn, {})
        if all(match(m, s) for m in rule.matches):
            return conn
    return None


def first_packet_impossible(rs: nf.Ruleset, table: str, chain: str, rule: nf.Rule,
                            interfaces: set[str]) -> str | None:
    """Why no first packet in the topology can reach this rule, when that is structural."""
    if not nf.hooks_reaching(rs.tables[table])[chain]:
        return "its chain is not reachable from any hook"
    for m in rule.matches:
        if isinstance(m, nf.CtState) and not m.negated and not m.states & {"NEW", "UNTRACKED"}:
            return f"only {','.join(m.order)} packets match, never a connection's first"
        if isinstance(m, nf.Interface) and not m.negated and not m.name.endswith("+") \
                and m.name not in interfaces:
            return f"the topology has no interface {m.name}"
    on_lo = any(isinstance(m, nf.Interface) and m.name == "lo" and not m.negated for m in rule.matches)
    for m in rule.matches:
        if on_lo and isinstance(m, nf.Address) and m.field == "src" and not m.negated \
                and m.net.num_addresses == 1 and not m.net.network_address.is_loopback \
                and not TOPO6.is_pod_local(str(m.net.network_address)):
            return f"it needs a local source {m.net.network_address}, which the pod does not have"
    hooks = nf.hooks_reaching(rs.tables[table])[chain]
    for m in rule.matches:
        if isinstance(m, nf.Mark) and m.conn and not m.negated and m.value & m.mask \
                and hooks <= {"OUTPUT"}:
            return "a new local connection's conntrack mark is still 0 in OUTPUT"
    callers = list(_callers(rs, table, chain))
    if callers and all(first_packet_impossible(rs, table, c_name, r, interfaces)
                       for c_name, r in _callers(rs, table, chain)):
        return "every rule jumping to its chain is unreachable"
    return None


def _callers(rs: nf.Ruleset, table: str, chain: str):
    for name, c in rs.tables[table].chains.items():
        for r in c.rules:
            if r.target and r.target.name == chain:
                yield name, r




@pytest.mark.parametrize("name", CASES or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"Istio's golden files are not at {GOLDEN} (set SIMNET_PEERS)"))])
def test_golden_rulesets_agree_with_the_kernel_on_every_rule(name):
    """Every rule of every golden is checked against the kernel: by a connection it matches,
    by a connection aimed at it that an earlier rule takes (shadowed), or it is structurally
    out of reach of a first packet (and the test says why)."""
    text = numeric_groups((GOLDEN / f"{name}.golden").read_text())
    for family, part in zip((4, 6), nf.split_dry_run(text)):
        rs = nf.load(part, name, family)
        pool = candidate_connections(family)
        conns, uncovered = covering_connections(rs, pool)
        rules = {f"{t}/{c}#{n}": (t, c, r) for t, c, n, r in rs.rules()}
        unexplained = []
        for line in sorted(uncovered):
            t, c, r = rules[line]
            if first_packet_impossible(rs, t, c, r, {"lo", "eth0", "eth1"}):
                continue
            conn = aimed_at(r, pool)
            if conn is None:
                unexplained.append(line)
            elif conn not in conns:
                conns.append(conn)
        assert unexplained == [], f"{name} IPv{family}: nothing reaches or aims at {unexplained}"
        check_against_kernel(part, family, conns, ipv6=family == 6)
