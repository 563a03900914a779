"""Rules that can never match (simnet.model.shadowing): hand-written cases, Istio's generated
rules and golden files, and soundness against the evaluator -- no traced connection may match a
rule reported unreachable, and every claim "rule i takes every packet of rule j" holds packet
by packet."""

from __future__ import annotations

import dataclasses
import itertools
import json

from hypothesis import event, given, note
from hypothesis import strategies as st

from simnet.conformance import PEERS
from simnet.model import netfilter as nf
from simnet.model.addresses import AddressPlan
from simnet.model.capture import istio_capture
from simnet.model.interception import ISTIO_INJECTED
from simnet.model.packet_path import State, compile_ruleset, match, trace
from simnet.model.shadowing import UnreachableRule, unreachable_rules
from simnet.strategies.netfilter import connections, rulesets, rulesets_with_a_dead_copy

GOLDEN = PEERS / "istio-capture-golden"
CASES = [c["name"] for c in json.loads((GOLDEN / "cases.json").read_text())["cases"]]
GROUPS = {"java": 1001, "ftp": 1002}  # group names some goldens use


def found(text: str) -> dict[str, UnreachableRule]:
    return {u.label(): u for u in unreachable_rules(nf.load(text))}


def table(name: str, *lines: str, chains: tuple[str, ...] = ()) -> str:
    return "\n".join([f"*{name}", *(f"-N {c}" for c in chains), *lines, "COMMIT"]) + "\n"


def shadowed(text: str) -> dict[str, str | None]:
    return {label: u.by for label, u in found(text).items() if u.reason == "shadowed"}


# ----------------------------------------------------------------------------- hand-written rulesets


def test_a_duplicate_rule_is_shadowed_by_the_first():
    text = table("nat", "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                 "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
                 "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
                 "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
                 "-A ISTIO_INBOUND -p tcp -j REDIRECT --to-ports 15006", chains=("ISTIO_INBOUND",))
    (u,) = unreachable_rules(nf.load(text))
    assert (u.table, u.chain, u.index, u.reason, u.by) == (
        "nat", "ISTIO_INBOUND", 3, "shadowed", "nat/ISTIO_INBOUND#1")
    assert u.label() == "nat/ISTIO_INBOUND#3"
    assert u.rule == "-p tcp --dport 15008 -j RETURN"
    assert u.line == 6  # *nat, -N, PREROUTING's rule, then the chain's three rules
    assert "nat/ISTIO_INBOUND#1" in u.explanation() and u.explanation().endswith(".")


def test_a_narrower_rule_after_a_wider_terminal_one_is_shadowed():
    assert shadowed(table("filter", "-A INPUT -p tcp -j DROP",
                          "-A INPUT -p tcp --dport 80 -j ACCEPT")) == {"filter/INPUT#2": "filter/INPUT#1"}
    assert shadowed(table("filter", "-A INPUT -p tcp --dport 80 -j ACCEPT",
                          "-A INPUT -p tcp -j DROP")) == {}
    assert shadowed(table("filter", "-A INPUT -p udp -j DROP",
                          "-A INPUT -p tcp --dport 80 -j ACCEPT")) == {}


def test_address_containment_decides_and_order_matters():
    wide, narrow = "-A INPUT -s 10.0.0.0/8 -j DROP", "-A INPUT -s 10.1.0.0/16 -p tcp -j ACCEPT"
    assert shadowed(table("filter", wide, narrow)) == {"filter/INPUT#2": "filter/INPUT#1"}
    assert shadowed(table("filter", narrow, wide)) == {}
    # a match of the earlier rule the later one lacks: not covered
    assert shadowed(table("filter", "-A INPUT -s 10.0.0.0/8 -d 10.9.0.0/16 -j DROP", narrow)) == {}


def test_rules_that_let_the_walk_go_on_do_not_shadow():
    mark = table("mangle", "-A OUTPUT -p tcp -j MARK --set-mark 1", "-A OUTPUT -p tcp -j ACCEPT")
    log = table("filter", "-A INPUT -p tcp -j LOG", "-A INPUT -p tcp -j ACCEPT")
    counter = table("filter", "-A INPUT -p tcp", "-A INPUT -p tcp -j ACCEPT")
    jump = table("filter", "-A INPUT -p tcp -j CHECK", "-A INPUT -p tcp -j ACCEPT",
                 "-A CHECK -s 10.0.0.0/8 -j DROP", chains=("CHECK",))
    for text in (mark, log, counter, jump):
        assert found(text) == {}, text
    goto = table("filter", "-A INPUT -p tcp -g CHECK", "-A INPUT -p tcp -j ACCEPT",
                 "-A CHECK -s 10.0.0.0/8 -j DROP", chains=("CHECK",))
    assert shadowed(goto) == {"filter/INPUT#2": "filter/INPUT#1"}  # -g never comes back


def test_a_rule_reading_the_mark_is_not_trusted_across_a_rule_that_changes_it():
    def chain(*middle: str) -> str:
        return table("mangle", "-A PREROUTING -m mark --mark 1 -j ACCEPT", *middle,
                     "-A PREROUTING -m mark --mark 1 -j ACCEPT",
                     "-A SETS -j MARK --set-mark 1", "-A VIA -g SETS", chains=("SETS", "VIA"))
    assert shadowed(chain()) == {"mangle/PREROUTING#2": "mangle/PREROUTING#1"}
    assert shadowed(chain("-A PREROUTING -p tcp -j LOG")) == {"mangle/PREROUTING#3": "mangle/PREROUTING#1"}
    for middle in ("-A PREROUTING -j MARK --set-mark 1", "-A PREROUTING -j CONNMARK --restore-mark",
                   "-A PREROUTING -p tcp -j SETS", "-A PREROUTING -p tcp -j VIA"):
        assert shadowed(chain(middle)) == {}, middle
    # a shadower that does not read the mark is still trusted across a MARK rule
    assert shadowed(table("mangle", "-A PREROUTING -p tcp -j ACCEPT", "-A PREROUTING -j MARK --set-mark 1",
                          "-A PREROUTING -p tcp -m mark --mark 1 -j ACCEPT")) == {
        "mangle/PREROUTING#3": "mangle/PREROUTING#1"}


def test_a_matchless_terminal_rule_shadows_everything_after_it():
    assert shadowed(table("filter", "-A INPUT -p tcp --dport 80 -j ACCEPT", "-A INPUT -j RETURN",
                          "-A INPUT -s 10.0.0.0/8 -j DROP", "-A INPUT ! -p tcp -j DROP")) == {
        "filter/INPUT#3": "filter/INPUT#2", "filter/INPUT#4": "filter/INPUT#2"}
    assert shadowed(table("filter", "-A INPUT -p all -m comment --comment x -j ACCEPT",
                          "-A INPUT -p udp -j DROP")) == {"filter/INPUT#2": "filter/INPUT#1"}


def test_unreferenced_chains_are_reported_rule_by_rule():
    text = table("filter", "-A INPUT -p tcp -j USED", "-A USED -j ACCEPT",
                 "-A ORPHAN -j DROP", "-A ORPHAN -p tcp -j ACCEPT", "-A ORPHAN -j CALLED",
                 "-A CALLED -j DROP", chains=("USED", "ORPHAN", "CALLED"))
    got = found(text)
    assert sorted(got) == ["filter/CALLED#1", "filter/ORPHAN#1", "filter/ORPHAN#2", "filter/ORPHAN#3"]
    assert {(u.reason, u.by) for u in got.values()} == {("unreferenced-chain", None)}
    assert "ORPHAN" in got["filter/ORPHAN#2"].explanation()
    # a chain only a shadowed rule jumps to is out of reach too
    text = table("filter", "-A INPUT -j DROP", "-A INPUT -p tcp -j LATE", "-A LATE -j ACCEPT",
                 chains=("LATE",))
    assert {k: v.reason for k, v in found(text).items()} == {
        "filter/INPUT#2": "shadowed", "filter/LATE#1": "unreferenced-chain"}


def test_negated_matches_are_not_over_reported():
    none = [
        ("! -s 10.0.0.0/8 -j DROP", "-s 10.1.0.0/16 -j ACCEPT"),
        ("! -d 10.0.0.0/8 -j RETURN", "! -d 10.1.0.0/16 -j ACCEPT"),
        ("! -p tcp -j ACCEPT", "-p tcp --dport 80 -j ACCEPT"),
        ("-p tcp ! --dport 80 -j ACCEPT", "-p tcp --dport 80 -j ACCEPT"),
        ("-p tcp ! --dport 80 -j ACCEPT", "-p tcp ! --dport 81 -j ACCEPT"),
        ("-p tcp -m multiport ! --ports 80 -j DROP", "-p tcp --dport 81 -j ACCEPT"),
        ("! -o eth0 -j DROP", "-o eth+ -j ACCEPT"),
        ("-m owner ! --uid-owner 1337 -j RETURN", "-m owner --uid-owner 1337 -j ACCEPT"),
        ("-m owner --uid-owner 0-65535 -j RETURN", "-m owner ! --uid-owner 1337 -j ACCEPT"),
        ("-m conntrack ! --ctstate DNAT -j ACCEPT", "-m conntrack --ctstate NEW -j DROP"),
        ("-m mark ! --mark 0x1/0x1 -j ACCEPT", "-m mark --mark 0x3 -j DROP"),
        ("-m addrtype ! --dst-type LOCAL -j ACCEPT", "-m addrtype ! --dst-type UNICAST -j DROP"),
    ]
    for first, second in none:
        assert found(table("filter", f"-A OUTPUT {first}", f"-A OUTPUT {second}")) == {}, (first, second)
    some = [
        ("! -s 10.0.0.0/8 -j DROP", "-s 192.168.0.0/16 -j ACCEPT"),
        ("! -d 10.1.0.0/16 -j RETURN", "! -d 10.0.0.0/8 -j ACCEPT"),
        ("! -p udp -j ACCEPT", "-p tcp --dport 80 -j ACCEPT"),
        ("-p tcp ! --dport 80 -j ACCEPT", "-p tcp -m multiport --dports 81,90:99 -j ACCEPT"),
        ("-p tcp ! --dport 53 -j ACCEPT", "-p tcp -m multiport ! --dports 53,15008 -j ACCEPT"),
        ("-p tcp -m multiport --ports 80,443 -j ACCEPT", "-p tcp --sport 443 -j ACCEPT"),
        ("! -o eth0 -j DROP", "-o eth1 -j ACCEPT"),
        ("! -o eth+ -j DROP", "! -o e+ -j ACCEPT"),
        ("-m owner ! --uid-owner 1337 -j RETURN", "-m owner --uid-owner 1000 -j ACCEPT"),
        ("-m owner ! --uid-owner 1000-2000 -j RETURN", "-m owner ! --uid-owner 0-5000 -j ACCEPT"),
        ("-m conntrack ! --ctstate INVALID -j ACCEPT", "-m conntrack --ctstate NEW,ESTABLISHED -j DROP"),
        ("-m mark ! --mark 0x2/0x2 -j ACCEPT", "-m mark --mark 0x1 -j DROP"),
    ]
    for first, second in some:
        assert shadowed(table("filter", f"-A OUTPUT {first}", f"-A OUTPUT {second}")) == {
            "filter/OUTPUT#2": "filter/OUTPUT#1"}, (first, second)


def test_each_match_kind_compares_by_its_own_semantics():
    def pair(first: str, second: str) -> bool:
        return bool(shadowed(table("filter", f"-A OUTPUT {first}", f"-A OUTPUT {second}")))
    assert pair("-o eth+ -j ACCEPT", "-o eth0 -p tcp -j ACCEPT")
    assert pair("-o eth+ -j ACCEPT", "-o eth1+ -j ACCEPT")
    assert pair("-o + -j ACCEPT", "-p udp -j DROP")
    assert not pair("-o eth0 -j ACCEPT", "-o eth+ -j ACCEPT")
    ports = "-p tcp -m multiport --dports 80,443,8000:9000 -j ACCEPT"
    assert pair(ports, "-p tcp --dport 8080 -j DROP")
    assert pair(ports, "-p tcp -m multiport --dports 443,8001:8999 -j DROP")
    assert not pair(ports, "-p tcp --dport 9001 -j DROP")
    assert not pair(ports, "-p tcp --sport 80 -j DROP")
    assert not pair(ports, "-p tcp -m multiport --ports 80 -j DROP")
    assert pair("-p tcp --dport 0:65535 -j ACCEPT", "-p tcp -j DROP")
    assert pair("-m owner --uid-owner 1000-2000 -j RETURN", "-m owner --uid-owner 1337 -j ACCEPT")
    assert not pair("-m owner --uid-owner 1000-2000 -j RETURN", "-m owner --gid-owner 1337 -j ACCEPT")
    assert pair("-m mark --mark 0x1/0x1 -j ACCEPT", "-m mark --mark 0x3 -j DROP")
    assert not pair("-m mark --mark 0x1/0x1 -j ACCEPT", "-m mark --mark 0x2 -j DROP")
    assert not pair("-m mark --mark 0x1/0x3 -j ACCEPT", "-m mark --mark 0x1/0x1 -j DROP")
    assert not pair("-m mark --mark 0x1 -j ACCEPT", "-m connmark --mark 0x1 -j DROP")
    assert not pair("-m connmark --mark 0x0/0x0 -j ACCEPT", "-p tcp -j DROP")  # needs an entry
    assert pair("-m mark --mark 0x0/0x0 -j ACCEPT", "-p tcp -j DROP")
    assert pair("-m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT", "-m state --state NEW -j DROP")
    assert not pair("-m conntrack --ctstate NEW -j ACCEPT", "-m conntrack --ctstate NEW,RELATED -j DROP")
    assert pair("-m addrtype --dst-type LOCAL,UNICAST -j ACCEPT", "-m addrtype --dst-type LOCAL -j DROP")
    assert not pair("-m addrtype --dst-type LOCAL -j ACCEPT", "-m addrtype --src-type LOCAL -j DROP")
    assert pair("-m comment --comment anything -j ACCEPT", "-p tcp -j DROP")


def test_rules_whose_own_matches_exclude_each_other():
    cases = ["-p tcp --dport 80 -m multiport --dports 443,8443 -j ACCEPT",
             "-m mark --mark 1 -m mark --mark 2 -j ACCEPT",
             "-m mark --mark 0x1/0x0 -j ACCEPT",
             "-m addrtype --dst-type LOCAL -m addrtype --dst-type UNICAST -j ACCEPT",
             "! -d 0.0.0.0/0 -j ACCEPT",
             "-m conntrack --ctstate NEW -m conntrack --ctstate ESTABLISHED -j ACCEPT"]
    for rule in cases:
        got = found(table("filter", f"-A OUTPUT {rule}"))
        assert [(u.reason, u.by) for u in got.values()] == [("never-matches", None)], rule
    for rule in ("-p tcp --dport 80 -m multiport --dports 80,443 -j ACCEPT",
                 "-m mark --mark 1 -m connmark --mark 2 -j ACCEPT",
                 "-m conntrack --ctstate NEW -m conntrack --ctstate DNAT -j ACCEPT"):
        assert found(table("filter", f"-A OUTPUT {rule}")) == {}, rule


# ----------------------------------------------------------------------------- Istio's rules


def test_istio_injected_capture_rules_have_no_unreachable_rule():
    assert unreachable_rules(nf.load(istio_capture(ISTIO_INJECTED).v4)) == ()


def test_a_duplicated_excluded_inbound_port_is_shadowed_by_its_first_rule():
    config = dataclasses.replace(ISTIO_INJECTED, InboundPortsExclude="15090,15021,15020,15090")
    rs = nf.load(istio_capture(config).v4)
    (u,) = unreachable_rules(rs)
    rules = rs.chain("nat", "ISTIO_INBOUND").rules
    assert u.reason == "shadowed" and u.rule == "-p tcp --dport 15090 -j RETURN"
    assert rules[u.index - 1] == rules[int(u.by.rpartition("#")[2]) - 1]
    assert u.by == "nat/ISTIO_INBOUND#2" and u.label() == "nat/ISTIO_INBOUND#5"


def golden_rulesets():
    for name in CASES:
        text = (GOLDEN / f"{name}.golden").read_text()
        for family, part in zip((4, 6), nf.split_dry_run(text)):
            yield name, family, nf.load(part, name, family)


def golden_pool(family: int):
    """Outbound connections of several owners to every kind of destination, and inbound ones."""
    topo = AddressPlan(ipv6=True)
    if family == 4:
        dsts = ("198.18.0.2", "198.18.0.1", "127.0.0.1", "127.1.2.3", "9.9.1.1", "10.1.2.3",
                "1.1.1.1", "127.0.0.53")
    else:
        dsts = ("2001:2::2", "2001:2::1", "::1", "2001:db8::5", "::127.0.0.53")
    ids = ((1000, 1000), (1337, 1337), (3, 1), (4, 2), (1000, 1001), (1000, 1002))
    for dst, dport, (uid, gid) in itertools.product(dsts, (53, 80, 15006, 15008), ids):
        srcs = ((["127.0.0.1", "127.0.0.6"] if family == 4 else ["::1", "::6"])
                if dst.startswith(("127.", "::1")) else [dst] if topo.is_pod_local(dst)
                else [topo.address(topo.out_if(dst), family)])
        for src, proto in itertools.product(srcs, ("tcp", "udp") if dport == 53 else ("tcp",)):
            yield topo.outbound(dst, dport, src=src, uid=uid, gid=gid, proto=proto)
    peers = topo.peer_interfaces if family == 4 else topo.peer_interfaces6
    for in_if, dport in itertools.product(("eth0", "eth1"), (80, 15008, 15090, 15021)):
        yield topo.inbound(topo.address(in_if, family), dport, in_if=in_if, src=peers[in_if])


def test_golden_rulesets_unreachable_rules_are_never_traced_and_look_right():
    """Istio's goldens: chains left without a jump (ISTIO_INBOUND with no inbound ports,
    ISTIO_REDIRECT with no outbound capture), and a few rules Istio's ordering shadows; the
    unreferenced ones agree with nf.hooks_reaching, and no connection of a wide pool hits any."""
    reasons: dict[str, int] = {}
    labels = set()
    for name, family, rs in golden_rulesets():
        found_here = unreachable_rules(rs)
        hooks = {t: nf.hooks_reaching(rs.tables[t]) for t in nf.TABLES}
        unhooked = {f"{t}/{c}#{n}" for t, c, n, _ in rs.rules() if not hooks[t][c]}
        assert unhooked <= {u.label() for u in found_here if u.reason == "unreferenced-chain"}
        for u in found_here:
            reasons[u.reason] = reasons.get(u.reason, 0) + 1
            labels.add((name, family, u.label(), u.by))
        bad = {u.label() for u in found_here}
        compiled = compile_ruleset(rs, GROUPS)
        for conn in golden_pool(family):
            hit = {p.partition(":")[2] if p.startswith(("syn-ack:", "ack:")) else p
                   for p in compiled.trace(conn).path}
            assert not hit & bad, (name, family, conn, hit & bad)
    # Istio's second proxy uid: its loopback in-redirect rule comes after the first uid's
    # "-o lo ! --uid-owner 3 -j RETURN", which already takes uid 4's loopback traffic.
    assert ("ipv6-uid-gid", 4, "nat/ISTIO_OUTPUT#5", "nat/ISTIO_OUTPUT#3") in labels
    # The same range both included and excluded: the exclusion (RETURN) comes first.
    assert ("ipv6-ipnets", 6, "nat/ISTIO_OUTPUT#10", "nat/ISTIO_OUTPUT#9") in labels
    assert reasons == {"unreferenced-chain": 55, "shadowed": 13}


# ----------------------------------------------------------------------------- soundness


def unprefixed(path) -> set[str]:
    """Rule labels of a path, the handshake's ("syn-ack:", "ack:") included."""
    return {p.partition(":")[2] if p.startswith(("syn-ack:", "ack:")) else p for p in path}


@given(st.data())
def test_no_connection_is_traced_through_a_rule_reported_unreachable(data):
    rs, copy = data.draw(rulesets_with_a_dead_copy(), label="rules")
    reported = unreachable_rules(rs)
    bad = {u.label() for u in reported}
    assert len(bad) == len(reported) and bad <= set(nf.rule_lines(rs))
    if copy is not None:
        assert copy in bad, rs.save_text()
    event(f"unreachable rules besides the copy: {min(len(bad - {copy}), 3)}")
    for u in reported:
        event(f"reason: {u.reason}")
    for conn in data.draw(st.lists(connections(), min_size=1, max_size=8), label="connections"):
        hit = unprefixed(trace(rs, conn).path) & bad
        assert not hit, (conn, hit, rs.save_text())


@st.composite
def states(draw) -> State:
    """A packet as a hook sees it: a connection's, with any mark, conntrack state and interfaces."""
    s = State(draw(connections()), {})
    s.mark, s.ctmark = (draw(st.sampled_from((0, 1, 2, 3, 1337, 1338, 1339))) for _ in range(2))
    s.ctstate = draw(st.sampled_from(("NEW", "ESTABLISHED", "RELATED", "INVALID")))
    s.tracked, s.ct = draw(st.booleans()), draw(st.booleans())
    s.in_if, s.out_if = (draw(st.sampled_from(("", "lo", "eth0", "eth1", "eth", "veth0"))) for _ in range(2))
    s.uid, s.gid = draw(st.sampled_from((0, 1000, 1337))), draw(st.sampled_from((0, 1000, 1337)))
    return s


@given(st.data())
def test_every_shadowing_claim_holds_packet_by_packet(data):
    """Each pair of rules of a random ruleset put in one chain, the first made terminal: when the
    second is reported shadowed, every packet matching it matches the first; when it is reported
    never to match, no packet does."""
    rules = [r for _, _, _, r in nf.load(data.draw(rulesets(), label="rules")).rules()]
    pairs = list(itertools.product(rules, repeat=2))
    claims = []  # (a rule said never to match, the earlier rule said to take its packets)
    for a, b in pairs:
        rs = nf.Ruleset()
        chain = [dataclasses.replace(a, target=nf.Target("ACCEPT")), dataclasses.replace(b, target=None)]
        rs.chain("filter", "OUTPUT").rules[:] = chain
        for u in unreachable_rules(rs):
            assert u.reason in ("shadowed", "never-matches") and (u.by is None) == (u.reason != "shadowed")
            claims.append((chain[u.index - 1], chain[0] if u.by else None))
    for dead, by in claims:
        if by is None or dead.matches != by.matches:
            event(f"a claim between different rules: {'shadowed' if by else 'never-matches'}")
    samples = data.draw(st.lists(states(), min_size=20, max_size=40), label="packets")
    for dead, by in claims:
        note(f"{dead.text()} is unreachable, taken by {by.text() if by else None}")
        for s in samples:
            if all(match(m, s) for m in dead.matches):
                assert by is not None and all(match(m, s) for m in by.matches)

