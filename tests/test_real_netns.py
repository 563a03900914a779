"""The real kernel side of the netfilter differential: namespaces, rule loading, real connections.

Expected values come from netfilter semantics (nat OUTPUT REDIRECT goes to 127.0.0.1,
PREROUTING REDIRECT to the incoming interface's first address, owner matches read the socket's
credentials, ...), never from ``simnet.model``. Needs root: without it these tests FAIL, they do
not skip. No traffic leaves the machine: only loopback and the veths between the test's own
namespaces are used.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from simnet.model.packet import Connection, Outcome
from simnet.real import netns as netns_mod
from simnet.real.netfilter import ProbeError, RulesError, kernel_outcome, load_rules, probe
from simnet.real.netns import Namespace, NetnsError, Topology, list_namespaces, sweep_leftovers

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("kernel_netns")]

PORTS = (15001, 15006, 9000)
ISTIO_OUTPUT = """\
*nat
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"""


def _children() -> set[int]:
    """PIDs of this process's children (from every thread's ``children`` list)."""
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return pids


@pytest.fixture
def topo():
    before = _children()
    with Topology() as t:
        yield t
    assert _children() - before == set(), "child processes left behind"


# ----------------------------------------------------------------------------- plumbing


def test_topology_layout(topo):
    """Addresses, routes and loopback as documented; sysctls are the kernel defaults."""
    out = subprocess.run(["ip", "-n", topo.pod.name, "-br", "addr"], capture_output=True,
                         text=True, check=True).stdout
    assert "198.18.0.1/24" in out and "198.18.1.1/24" in out and "2001:2::1/64" in out
    assert "lo" in out and "UNKNOWN" in out  # loopback up
    out = subprocess.run(["ip", "-n", topo.peer.name, "-br", "addr"], capture_output=True,
                         text=True, check=True).stdout
    assert "198.18.0.2/24" in out and "198.18.1.2/24" in out
    assert topo.interfaces == {"eth0": "198.18.0.1", "eth1": "198.18.1.1"}
    assert topo.pod_addrs[:2] == ("198.18.0.1", "198.18.1.1")
    assert topo.pod.sysctl("net.ipv4.conf.eth1.rp_filter") == "0"
    assert topo.pod.sysctl("net.ipv4.ip_forward") == "0"
    route = subprocess.run(["ip", "-n", topo.pod.name, "route", "get", "9.9.1.1"],
                           capture_output=True, text=True, check=True).stdout
    assert "via 198.18.0.2 dev eth0" in route


def test_out_if_and_connection_helpers():
    """Pure helpers (no namespaces): the interface pod's routing picks, filled-in connections."""
    t = Topology()
    assert t.out_if("198.18.0.1") == "lo" and t.out_if("127.0.0.6") == "lo"
    assert t.out_if("198.18.1.7") == "eth1" and t.out_if("9.9.1.1") == "eth0"
    assert t.out_if("2001:2:0:1::9") == "eth1" and t.out_if("::1") == "lo"
    c = t.inbound("198.18.0.1", 8080, in_if="eth1")
    assert c.in_addr == "198.18.1.1" and c.local_addrs == t.pod_addrs
    assert t.outbound("198.18.0.1", 80).out_if == "lo"
    assert not t.pod.exists  # nothing was created


def test_namespace_is_removed_on_exit_and_on_exception():
    with Namespace("plain") as ns:
        name = ns.name
        assert name in list_namespaces() and ns.sysctl("net.ipv4.ip_forward") in ("0", "1")
    assert name not in list_namespaces()
    with pytest.raises(RuntimeError, match="boom"):
        with Namespace("plain") as ns:
            name = ns.name
            raise RuntimeError("boom")
    assert name not in list_namespaces()


def test_topology_cleanup_normal_and_exception():
    before = _children()
    with Topology() as t:
        names = {t.pod.name, t.peer.name}
        assert names <= set(list_namespaces())
        load_rules(t, "*filter\n-A OUTPUT -j DROP\nCOMMIT\n")
        assert kernel_outcome(t, t.outbound("198.18.0.2", 8080), PORTS, timeout=0.1).verdict == "DROP"
    assert not names & set(list_namespaces())
    with pytest.raises(ZeroDivisionError):
        with Topology() as t:
            names = {t.pod.name, t.peer.name}
            kernel_outcome(t, t.outbound("198.18.0.2", 8080, uid=1000), PORTS)
            1 / 0
    assert not names & set(list_namespaces())
    assert _children() - before == set()


def test_failed_setup_leaves_nothing(monkeypatch):
    """A topology whose configuration fails half-way is removed before the error propagates."""
    t = Topology()
    monkeypatch.setattr(t, "_pod_lines", lambda: ["addr add not-an-address dev eth0"])
    with pytest.raises(NetnsError, match="not-an-address"):
        t.open()
    assert not {t.pod.name, t.peer.name} & set(list_namespaces())


def test_sweep_removes_namespaces_of_dead_processes():
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"simnet-{dead.pid}-1-leftover"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with Namespace("mine") as mine:
            removed = sweep_leftovers()
            assert name in removed and mine.name not in removed
            assert mine.name in list_namespaces()
        assert name not in list_namespaces()
    finally:
        netns_mod._delete(name)


def test_load_rules_error_names_the_line(topo):
    with pytest.raises(RulesError) as info:
        load_rules(topo, "*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\n-A OUTPUT -j NOPE\nCOMMIT\n")
    assert "line" in str(info.value) and "3" in str(info.value)
    assert "-j NOPE" in str(info.value)


# ----------------------------------------------------------------------------- kernel behaviour


def test_empty_ruleset_reaches_peer(topo):
    r = probe(topo, topo.outbound("198.18.0.2", 8080), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("198.18.0.2", 8080), local=False)
    assert r.peername == ("198.18.0.1", 40000)
    # AnyIP: any destination is accepted in peer, unchanged
    assert kernel_outcome(topo, topo.outbound("9.9.1.1", 80, uid=1000), PORTS) == \
        Outcome("ACCEPT", ("9.9.1.1", 80), local=False)
    assert kernel_outcome(topo, topo.outbound("2001:db8::5", 443), PORTS) == \
        Outcome("ACCEPT", ("2001:db8::5", 443), local=False)


def test_output_redirect_goes_to_loopback_with_original_dst(topo):
    load_rules(topo, "*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n")
    r = probe(topo, topo.outbound("198.18.0.2", 8080, uid=1000), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("127.0.0.1", 15001), local=True)
    assert r.original_dst == ("198.18.0.2", 8080)


def test_owner_uid_and_gid_bypass(topo):
    load_rules(topo, ISTIO_OUTPUT)
    redirected = Outcome("ACCEPT", ("127.0.0.1", 15001), local=True)
    direct = Outcome("ACCEPT", ("10.1.2.3", 80), local=False)
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1000, gid=1000), PORTS) == redirected
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1337, gid=1000), PORTS) == direct
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1000, gid=1337), PORTS) == direct
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 80), PORTS) == redirected  # root
    # -d 127.0.0.1 RETURN: loopback traffic is not captured
    assert kernel_outcome(topo, topo.outbound("127.0.0.1", 8080, uid=1000), PORTS) == \
        Outcome("ACCEPT", ("127.0.0.1", 8080), local=True)


def test_caller_credentials_are_untouched(topo):
    """Sockets are made as another uid by a short-lived thread: this process stays root."""
    groups = os.getgroups()
    load_rules(topo, ISTIO_OUTPUT)
    kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1337, gid=1337), PORTS)
    assert (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) == (0, 0, 0, 0)
    assert os.getgroups() == groups
    with open("/proc/thread-self/status") as f:
        status = f.read()
    assert "\nUid:\t0\t0\t0\t0\n" in status and "\nGid:\t0\t0\t0\t0\n" in status


def test_inbound_prerouting_redirect_uses_incoming_interface_address(topo):
    load_rules(topo, "*nat\n-A PREROUTING -p tcp -j REDIRECT --to-ports 15006\nCOMMIT\n")
    r = probe(topo, topo.inbound("198.18.0.1", 8080), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("198.18.0.1", 15006), local=True)
    assert r.original_dst == ("198.18.0.1", 8080)
    # arriving on eth1 (still addressed to eth0's address): REDIRECT picks eth1's address
    r = probe(topo, topo.inbound("198.18.0.1", 8080, in_if="eth1", src="10.9.9.9"), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("198.18.1.1", 15006), local=True)
    assert r.peername == ("10.9.9.9", 40000)


def test_inbound_in_if_is_honoured(topo):
    load_rules(topo, "*nat\n-A PREROUTING -i eth1 -p tcp -j REDIRECT --to-ports 15006\nCOMMIT\n")
    assert kernel_outcome(topo, topo.inbound("198.18.0.1", 8080, in_if="eth0"), PORTS) == \
        Outcome("ACCEPT", ("198.18.0.1", 8080), local=True)
    assert kernel_outcome(topo, topo.inbound("198.18.0.1", 8080, in_if="eth1"), PORTS) == \
        Outcome("ACCEPT", ("198.18.1.1", 15006), local=True)


def test_filter_output_drop(topo):
    load_rules(topo, "*filter\n-A OUTPUT -p tcp -d 198.18.0.2 --dport 8080 -j DROP\nCOMMIT\n")
    r = probe(topo, topo.outbound("198.18.0.2", 8080, uid=1000), PORTS, timeout=0.2)
    assert r.outcome == Outcome("DROP", None, local=False)
    assert r.client_error == "ETIMEDOUT"
    assert kernel_outcome(topo, topo.outbound("198.18.0.2", 8081), PORTS).verdict == "ACCEPT"


def test_filter_input_policy_drop_inbound(topo):
    load_rules(topo, "*filter\n:INPUT DROP [0:0]\nCOMMIT\n")
    assert kernel_outcome(topo, topo.inbound("198.18.0.1", 8080), PORTS, timeout=0.2) == \
        Outcome("DROP", None, local=False)


def test_dnat_to_peer(topo):
    load_rules(topo, "*nat\n-A OUTPUT -p tcp --dport 8080 -j DNAT --to-destination 198.18.1.2:9000\nCOMMIT\n")
    r = probe(topo, topo.outbound("10.1.2.3", 8080), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("198.18.1.2", 9000), local=False)
    # rerouted out of eth1, but the source address was chosen at connect(), before NAT
    assert r.accepted_in == "peer" and r.peername[0] == "198.18.0.1"


def test_pod_local_destination_goes_over_lo(topo):
    load_rules(topo, "*nat\n-A OUTPUT -o lo -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n")
    assert kernel_outcome(topo, topo.outbound("198.18.1.1", 8080), PORTS) == \
        Outcome("ACCEPT", ("127.0.0.1", 15001), local=True)
    assert kernel_outcome(topo, topo.outbound("198.18.0.2", 8080), PORTS) == \
        Outcome("ACCEPT", ("198.18.0.2", 8080), local=False)


def test_mangle_mark_then_nat_mark_match(topo):
    load_rules(topo, "*mangle\n-A OUTPUT -p tcp --dport 8080 -j MARK --set-mark 0x539\nCOMMIT\n"
                     "*nat\n-A OUTPUT -p tcp -m mark --mark 0x539 -j REDIRECT --to-ports 15001\nCOMMIT\n")
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 8080), PORTS) == \
        Outcome("ACCEPT", ("127.0.0.1", 15001), local=True)
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 8081), PORTS) == \
        Outcome("ACCEPT", ("10.1.2.3", 8081), local=False)


def test_socket_mark_of_the_connection(topo):
    """``Connection.mark`` is the socket's SO_MARK, also for a non-root uid."""
    load_rules(topo, "*nat\n-A OUTPUT -p tcp -m mark --mark 0x7 -j REDIRECT --to-ports 15001\nCOMMIT\n")
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1000, mark=7), PORTS) == \
        Outcome("ACCEPT", ("127.0.0.1", 15001), local=True)
    assert kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1000), PORTS).local is False


def test_tproxy_keeps_original_destination(topo):
    load_rules(topo, "*mangle\n-A PREROUTING -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 "
                     "--tproxy-mark 0x539/0xffffffff\nCOMMIT\n")
    r = probe(topo, topo.inbound("198.18.0.1", 8080), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("198.18.0.1", 15006), local=True)
    assert r.sockname == ("198.18.0.1", 8080)
    # a destination pod does not own is delivered too (fwmark -> table 133 -> local)
    r = probe(topo, topo.inbound("10.1.2.3", 8080, src="10.9.9.9", in_if="eth1"), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("10.1.2.3", 15006), local=True)


def test_inbound_to_foreign_address_without_forwarding_is_dropped(topo):
    assert kernel_outcome(topo, topo.inbound("10.1.2.3", 8080), PORTS, timeout=0.2).verdict == "DROP"


def test_ipv6_redirect_and_inbound(topo):
    load_rules(topo, "*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\n"
                     "-A PREROUTING -p tcp -j REDIRECT --to-ports 15006\nCOMMIT\n", family=6)
    r = probe(topo, topo.outbound("2001:db8::1", 443, uid=1000), PORTS)
    assert r.outcome == Outcome("ACCEPT", ("::1", 15001), local=True)
    assert r.original_dst == ("2001:db8::1", 443)
    assert kernel_outcome(topo, topo.inbound("2001:2::1", 8080), PORTS) == \
        Outcome("ACCEPT", ("2001:2::1", 15006), local=True)
    # IPv4 is untouched by ip6tables rules
    assert kernel_outcome(topo, topo.outbound("9.9.1.1", 443), PORTS).local is False


def test_refused_is_an_error_not_a_drop(topo):
    load_rules(topo, "*nat\n-A OUTPUT -p tcp -j DNAT --to-destination 198.18.1.2:9999\nCOMMIT\n")
    with pytest.raises(ProbeError, match="refused"):
        kernel_outcome(topo, topo.outbound("10.1.2.3", 80), PORTS)


def test_invalid_probes_are_refused(topo):
    with pytest.raises(ProbeError, match="not an address of pod"):
        kernel_outcome(topo, topo.outbound("10.1.2.3", 80, src="10.0.0.5"), PORTS)
    with pytest.raises(ProbeError, match="listening port"):
        kernel_outcome(topo, topo.outbound("10.1.2.3", 80, sport=15001), PORTS)
    with pytest.raises(ProbeError, match="peer's own"):
        kernel_outcome(topo, topo.inbound("198.18.0.2", 80), PORTS)
    with pytest.raises(ProbeError, match="Permission denied"):  # as a real uid-1000 process
        kernel_outcome(topo, topo.outbound("10.1.2.3", 80, uid=1000, sport=999), PORTS)
    with pytest.raises(ProbeError, match="local_addrs"):  # the model would see other local addresses
        kernel_outcome(topo, Connection("outbound", "10.1.2.3", 53), PORTS)
    with pytest.raises(ProbeError, match="routes 198.18.1.5 through 'eth1'"):
        kernel_outcome(topo, topo.outbound("198.18.1.5", 80, out_if="eth0"), PORTS)
    with pytest.raises(ProbeError, match="in_addr"):
        kernel_outcome(topo, topo.inbound("198.18.0.1", 80, in_if="eth1", in_addr="198.18.0.1"), PORTS)


def test_no_child_left_after_drop_and_accept(topo):
    before = _children()
    load_rules(topo, "*filter\n-A OUTPUT -p tcp --dport 1 -j DROP\nCOMMIT\n")
    kernel_outcome(topo, topo.outbound("10.1.2.3", 1, uid=1000), PORTS, timeout=0.05)
    kernel_outcome(topo, topo.outbound("10.1.2.3", 2, uid=1000), PORTS)
    assert _children() == before


# ----------------------------------------------------------------------------- UDP


def test_udp_outbound_redirect_and_plain(topo):
    assert kernel_outcome(topo, topo.outbound("9.9.1.1", 53, proto="udp"), PORTS) == \
        Outcome("ACCEPT", ("9.9.1.1", 53), local=False)
    load_rules(topo, "*nat\n-A OUTPUT -p udp --dport 53 -m owner ! --uid-owner 1337 "
                     "-j REDIRECT --to-ports 15053\nCOMMIT\n")
    r = probe(topo, topo.outbound("9.9.1.2", 53, proto="udp", uid=1000, sport=40001), (15053,))
    assert r.outcome == Outcome("ACCEPT", ("127.0.0.1", 15053), local=True)
    assert kernel_outcome(topo, topo.outbound("9.9.1.2", 53, proto="udp", uid=1337, sport=40002),
                          (15053,)) == Outcome("ACCEPT", ("9.9.1.2", 53), local=False)


def test_udp_output_drop_and_inbound(topo):
    load_rules(topo, "*filter\n-A OUTPUT -p udp --dport 53 -j DROP\nCOMMIT\n")
    r = probe(topo, topo.outbound("9.9.1.1", 53, proto="udp"), PORTS, timeout=0.2)
    assert r.outcome == Outcome("DROP", None, local=False) and r.client_error == "EPERM"
    assert kernel_outcome(topo, topo.inbound("198.18.0.1", 53, proto="udp"), PORTS) == \
        Outcome("ACCEPT", ("198.18.0.1", 53), local=True)
    assert kernel_outcome(topo, topo.inbound("2001:2::1", 53, proto="udp"), PORTS) == \
        Outcome("ACCEPT", ("2001:2::1", 53), local=True)


def test_udp_to_a_port_without_listener_is_an_error(topo):
    load_rules(topo, "*nat\n-A OUTPUT -p udp -j DNAT --to-destination 198.18.0.2:9999\nCOMMIT\n")
    with pytest.raises(ProbeError, match="refused"):
        kernel_outcome(topo, topo.outbound("9.9.1.1", 53, proto="udp"), PORTS)
