"""Hypothesis strategies: iptables rulesets over every match and target the model supports, and
connections through the test topology (``simnet.model.addresses``: pod eth0 198.18.0.1/24 and
eth1 198.18.1.1/24, peer .2 on each link, pod's default route via 198.18.0.2).

Rulesets are built as restore text, valid for the kernel: owner matches only in chains reached
from OUTPUT/POSTROUTING, ``-i`` only where packets come in, ``-o`` only where they go out, NAT
targets only in nat PREROUTING/OUTPUT, DROP never in nat, jumps only forward (no loops).
"""

from __future__ import annotations

from hypothesis import strategies as st

from simnet.model import netfilter as nf
from simnet.model.addresses import AddressPlan
from simnet.model.packet import Connection

TOPOLOGY = AddressPlan(ipv6=False)  # the kernel tests' pod and peer, IPv4 only

POD_ADDRS = TOPOLOGY.pod_addrs  # 198.18.0.1, 198.18.1.1
PEER_BY_IF = TOPOLOGY.peer_interfaces  # eth0: 198.18.0.2, eth1: 198.18.1.2
POD_BY_IF = TOPOLOGY.interfaces  # eth0: 198.18.0.1, eth1: 198.18.1.1
ADDR_POOL = ("198.18.0.0/24", "198.18.0.1/32", "198.18.0.2/32", "198.18.1.0/24", "198.18.1.2/32",
             "127.0.0.1/32", "127.0.0.0/8", "127.0.0.6/32", "9.9.0.0/16", "10.0.0.0/8")
PORT_POOL = (80, 8080, 9001, 15001, 15006, 15008)
REDIRECT_PORTS = (15001, 15006, 15008)
DNAT_TARGETS = ("198.18.0.1:9001", "198.18.1.2:9002", "127.0.0.1:9003", "198.18.0.2")
IDS = (0, 1000, 1337)
MARKS = (1, 1337, 1338)

HOOKS = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "OUTPUT"),
}
INCOMING = {"PREROUTING", "INPUT"}


@st.composite
def _matches(draw, table: str, hook: str) -> list[str]:
    parts: list[str] = []

    def neg() -> str:
        return "! " if draw(st.booleans()) and draw(st.booleans()) else ""

    proto = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", None, "!udp"]))
    if draw(st.booleans()):
        parts.append(f"{neg()}-s {draw(st.sampled_from(ADDR_POOL))}")
    if draw(st.booleans()):
        parts.append(f"{neg()}-d {draw(st.sampled_from(ADDR_POOL))}")
    if draw(st.booleans()):
        flag = "-i" if hook in INCOMING else "-o"
        parts.append(f"{neg()}{flag} {draw(st.sampled_from(['lo', 'eth0', 'eth1', 'eth+']))}")
    if proto == "!udp":
        parts.append("! -p udp")
    elif proto:
        parts.append(f"-p {proto}")
        kind = draw(st.sampled_from([None, None, "dport", "sport", "range", "multiport"]))
        if kind in ("dport", "sport"):
            explicit = f"-m {proto} " if draw(st.booleans()) else ""
            parts.append(f"{explicit}{neg()}--{kind} {draw(st.sampled_from(PORT_POOL + (40000,)))}")
        elif kind == "range":
            lo = draw(st.sampled_from((1, 80, 9000, 15000)))
            parts.append(f"{neg()}--dport {lo}:{lo + draw(st.sampled_from((0, 10, 1000)))}")
        elif kind == "multiport":
            ports = draw(st.lists(st.sampled_from(PORT_POOL), min_size=1, max_size=4, unique=True))
            parts.append(f"-m multiport {neg()}--dports {','.join(map(str, ports))}")
    if hook not in INCOMING and draw(st.integers(0, 2)) == 0:
        parts.append(f"-m owner {neg()}--{draw(st.sampled_from(['uid', 'gid']))}-owner "
                     f"{draw(st.sampled_from(IDS))}")
    if draw(st.integers(0, 4)) == 0:
        mod = draw(st.sampled_from(["mark", "connmark"]))
        mask = draw(st.sampled_from(["", "/0xffffffff", "/0x1"]))
        value = draw(st.sampled_from(MARKS)) if mask != "/0x1" else 1
        parts.append(f"-m {mod} {neg()}--mark {value}{mask}")
    if draw(st.integers(0, 5)) == 0:
        states = draw(st.sampled_from(["NEW", "ESTABLISHED,RELATED", "INVALID", "UNTRACKED", "NEW,ESTABLISHED"]))
        parts.append(f"-m conntrack {neg()}--ctstate {states}")
    if draw(st.integers(0, 6)) == 0:
        parts.append(f"-m addrtype {neg()}--{draw(st.sampled_from(['src', 'dst']))}-type "
                     f"{draw(st.sampled_from(['LOCAL', 'UNICAST']))}")
    return parts


@st.composite
def _target(draw, table: str, hook: str, jumpable: list[str], tcp: bool, notrack: bool) -> str:
    options = ["ACCEPT", "RETURN", "MARK"]
    if table != "nat":
        options += ["DROP"]
    if table == "nat" and hook in ("PREROUTING", "OUTPUT") and tcp:
        options += ["REDIRECT", "REDIRECT", "DNAT"]
    if table == "mangle":
        options += ["CONNMARK"]
    if table == "raw":
        options += ["CT"]
    if jumpable:
        options += ["jump", "jump"]
    kind = draw(st.sampled_from(options))
    if kind == "jump":
        flag = "-g" if draw(st.integers(0, 3)) == 0 else "-j"
        return f"{flag} {draw(st.sampled_from(jumpable))}"
    if kind == "REDIRECT":
        return f"-j REDIRECT --to-ports {draw(st.sampled_from(REDIRECT_PORTS))}"
    if kind == "DNAT":
        return f"-j DNAT --to-destination {draw(st.sampled_from(DNAT_TARGETS))}"
    if kind == "MARK":
        return draw(st.sampled_from(["-j MARK --set-mark 1337", "-j MARK --set-mark 1338",
                                     "-j MARK --set-xmark 0x1/0x1", "-j MARK --or-mark 0x2"]))
    if kind == "CONNMARK":
        return draw(st.sampled_from(["-j CONNMARK --save-mark", "-j CONNMARK --restore-mark",
                                     "-j CONNMARK --set-mark 1337"]))
    if kind == "CT":
        return draw(st.sampled_from(["-j CT --zone 1", "-j CT --notrack"] if notrack else ["-j CT --zone 1"]))
    return f"-j {kind}"


@st.composite
def _table_block(draw, table: str, notrack: bool) -> str:
    lines = [f"*{table}"]
    hooks = HOOKS[table]
    if table in ("filter", "mangle") and draw(st.integers(0, 4)) == 0:
        lines.append(f"-P {draw(st.sampled_from(hooks))} DROP")
    owned: dict[str, list[str]] = {h: [] for h in hooks}
    for n in range(draw(st.integers(0, 3))):
        name = f"SIM_{table.upper()}_{n}"
        owned[draw(st.sampled_from(hooks))].append(name)
        lines.append(f"-N {name}")
    for hook in hooks:
        chains = [hook, *owned[hook]]
        for k, chain in enumerate(chains):
            for _ in range(draw(st.integers(0, 4 if k == 0 else 3))):
                matches = draw(_matches(table, hook))
                tcp = any(m.startswith(("-p tcp", "-p udp")) for m in matches)
                target = draw(_target(table, hook, chains[k + 1:], tcp, notrack))
                lines.append(" ".join([f"-A {chain}", *matches, target]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@st.composite
def rulesets(draw, notrack: bool = True) -> str:
    """IPv4 restore text over one to four tables. ``notrack=False`` leaves out CT --notrack,
    whose later packets the model does not follow (see docs/netfilter.md)."""
    tables = draw(st.lists(st.sampled_from(["raw", "mangle", "nat", "filter"]), min_size=1,
                           max_size=4, unique=True))
    order = ["raw", "mangle", "nat", "filter"]
    return "".join(draw(_table_block(t, notrack)) for t in sorted(tables, key=order.index))


TERMINAL_TARGETS = ("ACCEPT", "DROP", "RETURN", "REDIRECT", "DNAT", "TPROXY")


@st.composite
def rulesets_with_a_dead_copy(draw, notrack: bool = True) -> tuple[nf.Ruleset, str | None]:
    """A ruleset from ``rulesets`` with a copy of one of its terminal rules (a verdict, RETURN,
    or ``-g``) inserted right after it: first match wins, so the copy can never match. Returns
    the ruleset and the copy's ``table/CHAIN#n`` (None when no rule is terminal)."""
    rs = nf.load(draw(rulesets(notrack)))
    terminal = [(t, c, n, r) for t, c, n, r in rs.rules() if r.target is not None and (
        r.target.goto if r.target.name in rs.tables[t].chains
        else r.target.name in TERMINAL_TARGETS)]
    if not terminal:
        return rs, None
    t, c, n, r = draw(st.sampled_from(terminal))
    rs.chain(t, c).rules.insert(n, r)
    return rs, f"{t}/{c}#{n + 1}"


@st.composite
def connections(draw) -> Connection:
    """A TCP connection in the topology: from a pod process (any uid/gid) or from the peer.
    Built with the topology's own address helpers, so routes and interfaces are the kernel's."""
    sport = draw(st.sampled_from([40000, 40001]))
    dport = draw(st.sampled_from(PORT_POOL))
    if draw(st.integers(0, 2)) == 0:
        in_if = draw(st.sampled_from(["eth0", "eth1"]))
        return TOPOLOGY.inbound(POD_BY_IF[in_if], dport, in_if=in_if, src=PEER_BY_IF[in_if], sport=sport)
    dst = draw(st.sampled_from(["198.18.0.2", "198.18.1.2", "198.18.0.1", "198.18.1.1",
                                "127.0.0.1", "9.9.1.1", "10.1.2.3"]))
    if dst.startswith("127."):
        src = draw(st.sampled_from(["127.0.0.1", "127.0.0.6"]))
    elif dst in POD_ADDRS:
        src = dst
    else:
        src = POD_BY_IF[TOPOLOGY.out_if(dst)]
    return TOPOLOGY.outbound(dst, dport, src=src, sport=sport, uid=draw(st.sampled_from(IDS)),
                             gid=draw(st.sampled_from(IDS)))
