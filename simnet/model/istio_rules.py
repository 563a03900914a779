"""Istio's capture-rule generator, istio-iptables (istio/istio ``tools/istio-iptables``),
reproduced rule for rule.

``istio_rules`` adds the rules in the order ``IptablesConfigurator.Run``
(``pkg/capture/run.go``) adds them, through ``_Rules``, which mirrors Istio's
``builder.IptablesRuleBuilder``; ``restore_text`` renders one family as Istio's
``buildRestore`` does. Each helper names the Istio function it mirrors. The public entry
point is ``simnet.model.capture.istio_capture``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from simnet.model.istio_config import IstioConfig, parse_prefix, split

# constants.BuiltInChainsAndTargetsMap: chains and targets that are never created with -N.
BUILT_IN = frozenset({"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING",
                      "ACCEPT", "RETURN", "DROP"})
INBOUND_PASSTHROUGH_V4 = "127.0.0.6/32"  # Envoy's inbound passthrough source address
INBOUND_PASSTHROUGH_V6 = "::6/128"
LOOPBACK_V6 = "::1/128"
OUTBOUND_MARK = "1338"  # constants.OutboundMark (TPROXY: Envoy outbound -> own inbound)
DNS_AGENT_PORT = "15053"  # constants.IstioAgentDNSListenerPort
_IP = "PLACEHOLDER_IP_VERSION_SPECIFIC"  # constants.IPVersionSpecific

ISTIO_OUTPUT, ISTIO_OUTPUT_DNS, ISTIO_INBOUND = "ISTIO_OUTPUT", "ISTIO_OUTPUT_DNS", "ISTIO_INBOUND"
ISTIO_DIVERT, ISTIO_TPROXY, ISTIO_DROP = "ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_DROP"
ISTIO_REDIRECT, ISTIO_IN_REDIRECT = "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT"


@dataclass(frozen=True)
class _Rule:
    chain: str
    table: str
    params: tuple[str, ...]  # the whole rule: ("-A", chain, ...) or ("-I", chain, n, ...)


class _Rules:
    """Istio's ``builder.IptablesRuleBuilder``: IPv4 and IPv6 rules in the order added.

    Rules for IPv6 are only kept when IPv6 is enabled (``AppendRuleV6``/``InsertRuleV6``
    are no-ops otherwise). ``-I CHAIN n`` rules stay where they were added in the list;
    iptables-restore applies them in that order.
    """

    def __init__(self, ipv6: bool):
        self.ipv6 = ipv6
        self.v4: list[_Rule] = []
        self.v6: list[_Rule] = []

    def append_v4(self, chain: str, table: str, *params: str) -> None:
        self.v4.append(_Rule(chain, table, ("-A", chain, *params)))

    def append_v6(self, chain: str, table: str, *params: str) -> None:
        if self.ipv6:
            self.v6.append(_Rule(chain, table, ("-A", chain, *params)))

    def append(self, chain: str, table: str, *params: str) -> None:
        self.append_v4(chain, table, *params)
        self.append_v6(chain, table, *params)

    def insert_v4(self, chain: str, table: str, position: int, *params: str) -> None:
        self.v4.append(_Rule(chain, table, ("-I", chain, str(position), *params)))

    def insert_v6(self, chain: str, table: str, position: int, *params: str) -> None:
        if self.ipv6:
            self.v6.append(_Rule(chain, table, ("-I", chain, str(position), *params)))

    def insert(self, chain: str, table: str, position: int, *params: str) -> None:
        self.insert_v4(chain, table, position, *params)
        self.insert_v6(chain, table, position, *params)

    def append_versioned(self, ipv4: str, ipv6: str, chain: str, table: str, *params: str) -> None:
        """``AppendVersionedRule``: the same rule with a family-specific address in it."""
        self.append_v4(chain, table, *(ipv4 if p == _IP else p for p in params))
        self.append_v6(chain, table, *(ipv6 if p == _IP else p for p in params))


def restore_text(rules: list[_Rule]) -> str:
    """iptables-restore input for one family: Istio's ``buildRestore``.

    Per table: ``-N`` for every non-built-in chain a rule is added to, in order of first
    use, then for every jump target (the rule's last two words are ``-j TARGET``) not yet
    declared, then the rules. Tables in sorted order (filter, mangle, nat, raw), each only
    if it has lines.
    """
    tables: dict[str, list[str]] = {"filter": [], "nat": [], "mangle": []}
    declared: set[tuple[str, str]] = set()

    def declare(chain: str, table: str) -> None:
        if (chain, table) not in declared:
            declared.add((chain, table))
            if chain not in BUILT_IN:
                tables.setdefault(table, []).append(f"-N {chain}")

    for r in rules:
        declare(r.chain, r.table)
    for r in rules:
        if len(r.params) >= 2 and r.params[-2] == "-j":
            declare(r.params[-1], r.table)
    for r in rules:
        tables.setdefault(r.table, []).append(" ".join(r.params))
    return "".join(f"* {t}\n" + "".join(f"{line}\n" for line in tables[t]) + "COMMIT\n"
                   for t in sorted(tables) if tables[t])


@dataclass(frozen=True)
class _Ranges:
    """Istio's ``config.NetworkRange`` for one family."""

    wildcard: bool
    cidrs: tuple[str, ...]
    has_loopback: bool


def _go_prefix_text(text: str) -> str:
    """A prefix as Go's ``netip.Prefix.String`` prints it: the address in canonical form
    (RFC 5952 for IPv6, IPv4-mapped as ``::ffff:a.b.c.d``), host bits kept."""
    addr = parse_prefix(text)
    bits = text.partition("/")[2]
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}/{bits}"
    return f"{addr}/{bits}"


def _is_loopback(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go's ``netip.Addr.IsLoopback`` (IPv4-mapped addresses are unmapped first)."""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def separate_v4_v6(cidr_list: str) -> tuple[_Ranges, _Ranges]:
    """IPv4 and IPv6 ranges of a comma-separated CIDR list: Istio's ``config.SeparateV4V6``.
    ``*`` is a wildcard for both families; a range whose address is loopback marks its
    family as including loopback."""
    if cidr_list == "*":
        return _Ranges(True, (), False), _Ranges(True, (), False)
    found: dict[int, list[str]] = {4: [], 6: []}
    loopback = {4: False, 6: False}
    for item in split(cidr_list):
        addr = parse_prefix(item)
        version = 4 if addr.version == 4 else 6
        found[version].append(_go_prefix_text(item))
        loopback[version] |= _is_loopback(addr)
    return (_Ranges(False, tuple(found[4]), loopback[4]), _Ranges(False, tuple(found[6]), loopback[6]))


def _exclude_interface_rules(b: _Rules, c: IstioConfig) -> None:
    """``shortCircuitExcludeInterfaces``: traffic on excluded NICs is never captured."""
    for nic in split(c.ExcludeInterfaces):
        b.append("PREROUTING", "nat", "-i", nic, "-j", "RETURN")
        b.append("OUTPUT", "nat", "-o", nic, "-j", "RETURN")
    if c.tproxy:
        for nic in split(c.ExcludeInterfaces):
            b.append("PREROUTING", "mangle", "-i", nic, "-j", "RETURN")
            b.append("OUTPUT", "mangle", "-o", nic, "-j", "RETURN")


def _kube_virt_interface_rules(b: _Rules, c: IstioConfig) -> None:
    """``shortCircuitKubeInternalInterface``: inbound traffic of KubeVirt interfaces is not
    captured as inbound (it is rerouted as outbound further down)."""
    for nic in split(c.RerouteVirtualInterfaces):
        b.insert("PREROUTING", "nat", 1, "-i", nic, "-j", "RETURN")


def _inbound_rules(b: _Rules, c: IstioConfig) -> None:
    """``handleInboundPortsInclude``: inbound TCP to the included ports (``*`` = all but the
    excluded ones) goes to ISTIO_IN_REDIRECT (nat) or, in TPROXY mode, is marked and
    TPROXYed to the inbound capture port (mangle). Empty list: no inbound capture."""
    if not c.InboundPortsInclude:
        return
    table = "mangle" if c.tproxy else "nat"
    if c.tproxy:
        b.append(ISTIO_DIVERT, "mangle", "-j", "MARK", "--set-mark", c.InboundTProxyMark)
        b.append(ISTIO_DIVERT, "mangle", "-j", "ACCEPT")
        b.append_versioned(c.HostIPv4LoopbackCidr, LOOPBACK_V6, ISTIO_TPROXY, "mangle",
                           "!", "-d", _IP, "-p", "tcp", "-j", "TPROXY",
                           "--tproxy-mark", c.InboundTProxyMark + "/0xffffffff",
                           "--on-port", c.InboundCapturePort)
    b.append("PREROUTING", table, "-p", "tcp", "-j", ISTIO_INBOUND)
    if c.InboundPortsInclude == "*":
        for port in split(c.InboundPortsExclude):
            b.append(ISTIO_INBOUND, table, "-p", "tcp", "--dport", port, "-j", "RETURN")
        if c.tproxy:
            b.append(ISTIO_INBOUND, "mangle", "-p", "tcp", "-m", "conntrack",
                     "--ctstate", "RELATED,ESTABLISHED", "-j", ISTIO_DIVERT)
            b.append(ISTIO_INBOUND, "mangle", "-p", "tcp", "-j", ISTIO_TPROXY)
        else:
            b.append(ISTIO_INBOUND, "nat", "-p", "tcp", "-j", ISTIO_IN_REDIRECT)
        return
    for port in split(c.InboundPortsInclude):
        if c.tproxy:
            b.append(ISTIO_INBOUND, "mangle", "-p", "tcp", "--dport", port, "-m", "conntrack",
                     "--ctstate", "RELATED,ESTABLISHED", "-j", ISTIO_DIVERT)
            b.append(ISTIO_INBOUND, "mangle", "-p", "tcp", "--dport", port, "-j", ISTIO_TPROXY)
        else:
            b.append(ISTIO_INBOUND, "nat", "-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT)


def _proxy_owner_rules(b: _Rules, c: IstioConfig, redirect_dns: bool, loopback_included: bool) -> None:
    """The per-uid and per-gid rules of ``Run``: the proxy's own traffic is never captured,
    except its loopback calls to a non-local address (app -> Envoy -> Envoy inbound -> app),
    which go to the inbound port; other processes' loopback traffic is left alone unless
    loopback is explicitly included. With DNS capture, port 53 is kept out of both."""
    for uid in split(c.ProxyUID):
        if redirect_dns:
            b.append_versioned(c.HostIPv4LoopbackCidr, LOOPBACK_V6, ISTIO_OUTPUT, "nat",
                               "-o", "lo", "!", "-d", _IP, "-p", "tcp", "-m", "multiport",
                               "!", "--dports", "53," + c.InboundTunnelPort,
                               "-m", "owner", "--uid-owner", uid, "-j", ISTIO_IN_REDIRECT)
        else:
            b.append_versioned(c.HostIPv4LoopbackCidr, LOOPBACK_V6, ISTIO_OUTPUT, "nat",
                               "-o", "lo", "!", "-d", _IP, "-p", "tcp",
                               "!", "--dport", c.InboundTunnelPort,
                               "-m", "owner", "--uid-owner", uid, "-j", ISTIO_IN_REDIRECT)
        if not loopback_included:
            dns = ("-p", "tcp", "!", "--dport", "53") if redirect_dns else ()
            b.append(ISTIO_OUTPUT, "nat", "-o", "lo", *dns,
                     "-m", "owner", "!", "--uid-owner", uid, "-j", "RETURN")
        b.append(ISTIO_OUTPUT, "nat", "-m", "owner", "--uid-owner", uid, "-j", "RETURN")
    for gid in split(c.ProxyGID):
        # Istio uses the multiport form (53 excluded) for uids only.
        b.append_versioned(c.HostIPv4LoopbackCidr, LOOPBACK_V6, ISTIO_OUTPUT, "nat",
                           "-o", "lo", "!", "-d", _IP, "-p", "tcp",
                           "!", "--dport", c.InboundTunnelPort,
                           "-m", "owner", "--gid-owner", gid, "-j", ISTIO_IN_REDIRECT)
        if not loopback_included:
            dns = ("-p", "tcp", "!", "--dport", "53") if redirect_dns else ()
            b.append(ISTIO_OUTPUT, "nat", "-o", "lo", *dns,
                     "-m", "owner", "!", "--gid-owner", gid, "-j", "RETURN")
        b.append(ISTIO_OUTPUT, "nat", "-m", "owner", "--gid-owner", gid, "-j", "RETURN")


def _owner_group_rules(b: _Rules, c: IstioConfig) -> None:
    """``handleCaptureByOwnerGroup`` on ``config.ParseInterceptFilter``: with ``*`` every
    excluded group returns; otherwise one rule returns everything not owned by one of the
    included groups (an empty include list therefore captures nothing)."""
    if c.OwnerGroupsInclude == "*":
        for group in split(c.OwnerGroupsExclude):
            b.append(ISTIO_OUTPUT, "nat", "-m", "owner", "--gid-owner", group, "-j", "RETURN")
        return
    none_of = [w for g in split(c.OwnerGroupsInclude) for w in ("-m", "owner", "!", "--gid-owner", g)]
    b.append(ISTIO_OUTPUT, "nat", *none_of, "-j", "RETURN")


def _dns_rules(b: _Rules, c: IstioConfig) -> None:
    """``SetupDNSRedir``: DNS to the configured servers (or all DNS with CaptureAllDNS) is
    redirected to the agent's DNS proxy on 15053, TCP with ``--to-ports``, UDP with
    ``--to-port`` (Istio spells them differently)."""
    b.append("OUTPUT", "raw", "-j", ISTIO_OUTPUT_DNS)
    if c.CaptureAllDNS or c.DNSServersV4:
        b.append_v4(ISTIO_OUTPUT, "nat", "-j", ISTIO_OUTPUT_DNS)
    if c.CaptureAllDNS or c.DNSServersV6:
        b.append_v6(ISTIO_OUTPUT, "nat", "-j", ISTIO_OUTPUT_DNS)
    for proto, to in (("tcp", "--to-ports"), ("udp", "--to-port")):
        if c.CaptureAllDNS:
            b.append(ISTIO_OUTPUT_DNS, "nat", "-p", proto, "--dport", "53",
                     "-j", "REDIRECT", to, DNS_AGENT_PORT)
            continue
        for server in c.DNSServersV4:
            b.append_v4(ISTIO_OUTPUT_DNS, "nat", "-p", proto, "--dport", "53", "-d", server + "/32",
                        "-j", "REDIRECT", to, DNS_AGENT_PORT)
        for server in c.DNSServersV6:
            b.append_v6(ISTIO_OUTPUT_DNS, "nat", "-p", proto, "--dport", "53", "-d", server + "/128",
                        "-j", "REDIRECT", to, DNS_AGENT_PORT)
    _dns_conntrack_zone_rules(b, c)


def _dns_conntrack_zone_rules(b: _Rules, c: IstioConfig) -> None:
    """``addDNSConntrackZones``: the agent's upstream DNS (zone 1) and the app's DNS to the
    agent (zone 2) go to separate conntrack zones, avoiding UDP conntrack races."""
    for owner, ids in (("--uid-owner", c.ProxyUID), ("--gid-owner", c.ProxyGID)):
        for i in split(ids):
            b.append(ISTIO_OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53",
                     "-m", "owner", owner, i, "-j", "CT", "--zone", "1")
            b.append(ISTIO_OUTPUT_DNS, "raw", "-p", "udp", "--sport", DNS_AGENT_PORT,
                     "-m", "owner", owner, i, "-j", "CT", "--zone", "2")
    if c.CaptureAllDNS:
        b.append("PREROUTING", "raw", "-j", ISTIO_INBOUND)
        b.append(ISTIO_OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2")
        b.append(ISTIO_INBOUND, "raw", "-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1")
        return
    for servers, append, bits in ((c.DNSServersV4, b.append_v4, "/32"),
                                  (c.DNSServersV6, b.append_v6, "/128")):
        if servers:
            append("PREROUTING", "raw", "-j", ISTIO_INBOUND)
        for server in servers:
            append(ISTIO_OUTPUT_DNS, "raw", "-p", "udp", "--dport", "53", "-d", server + bits,
                   "-j", "CT", "--zone", "2")
            append(ISTIO_INBOUND, "raw", "-p", "udp", "--sport", "53", "-s", server + bits,
                   "-j", "CT", "--zone", "1")


def _outbound_include_rules(b: _Rules, c: IstioConfig, ranges: _Ranges, v6: bool) -> None:
    """``handleOutboundIncludeRules`` for one family: the included ranges (or everything)
    go to ISTIO_REDIRECT, also when they arrive on a KubeVirt interface."""
    append = b.append_v6 if v6 else b.append_v4
    insert = b.insert_v6 if v6 else b.insert_v4
    if ranges.wildcard:
        append(ISTIO_OUTPUT, "nat", "-j", ISTIO_REDIRECT)
        for nic in split(c.RerouteVirtualInterfaces):
            insert("PREROUTING", "nat", 1, "-i", nic, "-j", ISTIO_REDIRECT)
        return
    for cidr in ranges.cidrs:
        for nic in split(c.RerouteVirtualInterfaces):
            insert("PREROUTING", "nat", 1, "-i", nic, "-d", cidr, "-j", ISTIO_REDIRECT)
        append(ISTIO_OUTPUT, "nat", "-d", cidr, "-j", ISTIO_REDIRECT)


def _tproxy_mark_rules(b: _Rules, c: IstioConfig) -> None:
    """The TPROXY tail of ``Run``: connection marks so replies of TPROXYed connections are
    routed back to Envoy, and Envoy's own outbound-to-inbound calls are not re-captured."""
    mark = c.InboundTProxyMark
    b.append("PREROUTING", "mangle", "-p", "tcp", "-m", "mark", "--mark", mark,
             "-j", "CONNMARK", "--save-mark")
    b.append("OUTPUT", "mangle", "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN")
    for owner, ids in (("--uid-owner", c.ProxyUID), ("--gid-owner", c.ProxyGID)):
        for i in split(ids):
            b.append_versioned(c.HostIPv4LoopbackCidr, LOOPBACK_V6, "OUTPUT", "mangle",
                               "!", "-d", _IP, "-p", "tcp", "-o", "lo", "-m", "owner", owner, i,
                               "-j", "MARK", "--set-mark", OUTBOUND_MARK)
    b.append("OUTPUT", "mangle", "-p", "tcp", "-m", "connmark", "--mark", mark,
             "-j", "CONNMARK", "--restore-mark")
    b.insert(ISTIO_INBOUND, "mangle", 1, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN")
    b.insert_v4(ISTIO_INBOUND, "mangle", 2, "-p", "tcp", "-s", INBOUND_PASSTHROUGH_V4, "-i", "lo", "-j", "RETURN")
    b.insert_v6(ISTIO_INBOUND, "mangle", 2, "-p", "tcp", "-s", INBOUND_PASSTHROUGH_V6, "-i", "lo", "-j", "RETURN")
    b.insert(ISTIO_INBOUND, "mangle", 3, "-p", "tcp", "-i", "lo", "-m", "mark", "!",
             "--mark", OUTBOUND_MARK, "-j", "RETURN")


def istio_rules(c: IstioConfig) -> _Rules:
    """Every rule Istio's ``IptablesConfigurator.Run`` adds, in its order
    (tools/istio-iptables/pkg/capture/run.go)."""
    v4_exclude, v6_exclude = separate_v4_v6(c.OutboundIPRangesExclude)
    v4_include, v6_include = separate_v4_v6(c.OutboundIPRangesInclude)
    # "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided."
    redirect_dns = c.RedirectDNS and bool(c.CaptureAllDNS or c.DNSServersV4 or c.DNSServersV6)
    b = _Rules(c.EnableIPv6)
    _exclude_interface_rules(b, c)
    _kube_virt_interface_rules(b, c)
    if c.DropInvalid:
        b.append("PREROUTING", "mangle", "-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP)
        b.append(ISTIO_DROP, "mangle", "-j", "DROP")
    b.append(ISTIO_INBOUND, "nat", "-p", "tcp", "--dport", c.InboundTunnelPort, "-j", "RETURN")
    b.append(ISTIO_REDIRECT, "nat", "-p", "tcp", "-j", "REDIRECT", "--to-ports", c.ProxyPort)
    b.append(ISTIO_IN_REDIRECT, "nat", "-p", "tcp", "-j", "REDIRECT", "--to-ports", c.InboundCapturePort)
    _inbound_rules(b, c)
    b.append("OUTPUT", "nat", "-j", ISTIO_OUTPUT)
    for port in split(c.OutboundPortsExclude):
        b.append(ISTIO_OUTPUT, "nat", "-p", "tcp", "--dport", port, "-j", "RETURN")
        b.append(ISTIO_OUTPUT, "nat", "-p", "udp", "--dport", port, "-j", "RETURN")
    b.append_versioned(INBOUND_PASSTHROUGH_V4, INBOUND_PASSTHROUGH_V6, ISTIO_OUTPUT, "nat",
                       "-o", "lo", "-s", _IP, "-j", "RETURN")
    _proxy_owner_rules(b, c, redirect_dns, v4_include.has_loopback or v6_include.has_loopback)
    _owner_group_rules(b, c)
    if redirect_dns:
        _dns_rules(b, c)
    b.append_versioned(c.HostIPv4LoopbackCidr, LOOPBACK_V6, ISTIO_OUTPUT, "nat", "-d", _IP, "-j", "RETURN")
    for cidr in v4_exclude.cidrs:
        b.append_v4(ISTIO_OUTPUT, "nat", "-d", cidr, "-j", "RETURN")
    for cidr in v6_exclude.cidrs:
        b.append_v6(ISTIO_OUTPUT, "nat", "-d", cidr, "-j", "RETURN")
    for port in split(c.OutboundPortsInclude):  # handleOutboundPortsInclude
        b.append(ISTIO_OUTPUT, "nat", "-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT)
    _outbound_include_rules(b, c, v4_include, v6=False)
    _outbound_include_rules(b, c, v6_include, v6=True)
    if c.tproxy:
        _tproxy_mark_rules(b, c)
    return b
