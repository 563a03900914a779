"""One rule's options read from its tokens (``parse_rule``): the matches, their ``-m`` modules and
the target, normalised and checked as iptables does; whatever the model cannot evaluate exactly
is refused with the token.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from simnet.model.netfilter.matches import (
    ADDR_TYPES,
    CT_STATES,
    FULL_MASK,
    Address,
    AddrType,
    Comment,
    CtState,
    Interface,
    Mark,
    Match,
    Owner,
    PortRange,
    Ports,
    Protocol,
)
from simnet.model.netfilter.rules import Rule, RuleError, Target


def _int(token: str, what: str, lo: int = 0, hi: int = FULL_MASK) -> int:
    try:
        v = int(token, 0)
    except ValueError:
        raise RuleError(token, f"{what} must be a number") from None
    if not lo <= v <= hi:
        raise RuleError(token, f"{what} must be between {lo} and {hi}")
    return v


def _port_range(token: str, sep: str = ":") -> PortRange:
    a, has_sep, b = token.partition(sep)
    lo = _int(a, "port", 0, 65535) if a else 0
    hi = _int(b, "port", 0, 65535) if b else (65535 if has_sep else lo)
    if lo > hi:
        raise RuleError(token, "port range runs backwards")
    return lo, hi


def _network(token: str, family: int):
    try:
        net = ipaddress.ip_network(token, strict=False)
    except ValueError:
        raise RuleError(token, "not an address or CIDR (host names are not resolved)") from None
    if net.version != family:
        raise RuleError(token, f"IPv{net.version} address in an IPv{family} ruleset")
    return net


def _mark(token: str) -> tuple[int, int]:
    value, _, mask = token.partition("/")
    return _int(value, "mark"), _int(mask, "mark mask") if mask else FULL_MASK


def _id_range(token: str) -> tuple[PortRange | None, str | None]:
    a, sep, b = token.partition("-")
    if a.isdigit() and (not sep or b.isdigit()):
        lo, hi = int(a), int(b) if sep else int(a)
        if lo > hi:
            raise RuleError(token, "id range runs backwards")
        return (lo, hi), None
    if not token or not token.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise RuleError(token, "not a user/group id or name")
    return None, token


# Long options iptables accepts by unique prefix (getopt_long); we normalise the common ones.
_OPTION_ALIASES = {
    "--protocol": "-p", "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
    "--in-interface": "-i", "--out-interface": "-o", "--match": "-m", "--jump": "-j",
    "--goto": "-g", "--destination-port": "--dport", "--source-port": "--sport",
    "--destination-ports": "--dports", "--source-ports": "--sports",
}


class _Tokens:
    def __init__(self, tokens: list[str]):
        self.tokens, self.i = tokens, 0

    def more(self) -> bool:
        return self.i < len(self.tokens)

    def peek(self) -> str:
        return self.tokens[self.i]

    def take(self, what: str) -> str:
        if self.i >= len(self.tokens):
            raise RuleError(self.tokens[-1] if self.tokens else what, f"{what} needs a value")
        self.i += 1
        return self.tokens[self.i - 1]

    def negation(self) -> bool:
        if self.more() and self.peek() == "!":
            self.i += 1
            return True
        return False


def parse_rule(tokens: list[str], table: str = "filter", family: int = 4, lineno: int = 0) -> Rule:
    """The matches and target of one rule, from its tokens after the chain name."""
    ts = _Tokens(tokens)
    matches: list[Match] = []
    target: Target | None = None
    proto: str | None = None
    modules: list[str] = []  # loaded with -m, most recent last
    while ts.more():
        negated = ts.negation()
        opt = ts.take("option")
        opt = _OPTION_ALIASES.get(opt, opt)
        if opt == "!":
            raise RuleError(opt, "double negation")
        if negated and ts.more() and ts.peek() == "!":
            raise RuleError("!", "double negation")
        if opt in ("-c", "--set-counters"):
            ts.take("-c packets"), ts.take("-c bytes")
            continue
        if opt == "-p":
            name = ts.take("-p").lower()
            if name not in ("tcp", "udp", "all", "icmp", "icmpv6", "ipv6-icmp", "sctp"):
                raise RuleError(name, "protocol not modelled (tcp, udp, icmp, all)")
            proto = name
            matches.append(Protocol(name, negated))
        elif opt in ("-s", "-d"):
            text = ts.take(opt)
            matches.append(Address("src" if opt == "-s" else "dst", _network(text, family), negated, text))
        elif opt in ("-i", "-o"):
            name = ts.take(opt)
            if not name or len(name) > 15 or "/" in name or " " in name:
                raise RuleError(name, "not an interface name")
            matches.append(Interface("in_if" if opt == "-i" else "out_if", name, negated))
        elif opt == "-m":
            if negated:
                raise RuleError("!", "-m cannot be negated")
            mod = ts.take("-m")
            if mod not in ("tcp", "udp", "multiport", "owner", "mark", "connmark", "conntrack",
                           "state", "addrtype", "comment"):
                raise RuleError(mod, "match module not modelled by simnet")
            if mod in ("tcp", "udp") and proto != mod:
                raise RuleError(mod, f"-m {mod} needs -p {mod} before it")
            if mod == "multiport" and proto not in ("tcp", "udp"):
                raise RuleError(mod, "-m multiport needs -p tcp or -p udp before it")
            modules.append(mod)
            matches.append(_module_match(ts, mod, proto))
        elif opt in ("--dport", "--sport"):
            if proto not in ("tcp", "udp") or (matches and isinstance(matches[-1], Protocol) and matches[-1].negated):
                raise RuleError(opt, f"{opt} needs -p tcp or -p udp before it")
            field_ = opt[2:]
            if any(isinstance(m, Ports) and not m.multiport and m.field == field_ for m in matches):
                raise RuleError(opt, f"{opt} given twice")
            matches.append(Ports(field_, (_port_range(ts.take(opt)),), negated, option=opt))
        elif opt in ("--uid-owner", "--gid-owner"):
            if "owner" not in modules:
                raise RuleError(opt, "needs -m owner")
            ids, name = _id_range(ts.take(opt))
            matches.append(Owner(opt[2:5], ids, name, negated, module=False))
        elif opt in ("-j", "-g"):
            if negated:
                raise RuleError("!", f"{opt} cannot be negated")
            if target is not None:
                raise RuleError(opt, "a rule has one target")
            target = _target(ts, opt, table, family)
        else:
            raise RuleError(opt, "option not modelled by simnet")
        if negated and isinstance(matches[-1], (Comment,)):
            raise RuleError("!", "cannot negate a comment")
    _check_supported_combinations(matches)
    if target is not None and target.port is not None and target.name in ("REDIRECT", "DNAT") \
            and not any(isinstance(m, Protocol) and not m.negated and m.name in ("tcp", "udp", "sctp")
                        for m in matches):
        raise RuleError(target.options[0] if target.options else target.name,
                        "a port needs -p tcp, udp or sctp (iptables: \"Need TCP, UDP, SCTP or DCCP "
                        "with port specification\")")
    return Rule(tuple(matches), target, lineno)


def _check_supported_combinations(matches: list[Match]) -> None:
    protos = [m for m in matches if isinstance(m, Protocol)]
    if len(protos) > 1:
        raise RuleError("-p", "-p given twice")
    for kind in ("src", "dst"):
        if sum(isinstance(m, Address) and m.field == kind for m in matches) > 1:
            raise RuleError("-s" if kind == "src" else "-d", "given twice")
    for kind in ("in_if", "out_if"):
        if sum(isinstance(m, Interface) and m.field == kind for m in matches) > 1:
            raise RuleError("-i" if kind == "in_if" else "-o", "given twice")


def _module_match(ts: _Tokens, mod: str, proto: str | None) -> Match:
    """The options of one ``-m`` module (they follow it, possibly each negated)."""
    if mod in ("tcp", "udp"):
        negated = ts.negation()
        opt = _OPTION_ALIASES.get(ts.take(f"-m {mod}"), None) or ts.tokens[ts.i - 1]
        if opt not in ("--dport", "--sport"):
            raise RuleError(opt, f"-m {mod} option not modelled (simnet reads --dport, --sport)")
        return Ports(opt[2:], (_port_range(ts.take(opt)),), negated, module=mod, option=opt)
    if mod == "multiport":
        negated = ts.negation()
        opt = ts.take("-m multiport")
        opt = _OPTION_ALIASES.get(opt, opt)
        if opt not in ("--dports", "--sports", "--ports"):
            raise RuleError(opt, "-m multiport needs --dports, --sports or --ports")
        items = ts.take(opt).split(",")
        ranges = tuple(_port_range(p) for p in items)
        if sum(1 if lo == hi else 2 for lo, hi in ranges) > 15:
            raise RuleError(opt, "multiport takes at most 15 ports (a range counts as two)")
        field_ = {"--dports": "dport", "--sports": "sport", "--ports": "ports"}[opt]
        return Ports(field_, ranges, negated, multiport=True, module="multiport", option=opt)
    if mod == "owner":
        negated = ts.negation()
        opt = ts.take("-m owner")
        if opt not in ("--uid-owner", "--gid-owner"):
            raise RuleError(opt, "-m owner option not modelled (simnet reads --uid-owner, --gid-owner)")
        ids, name = _id_range(ts.take(opt))
        return Owner(opt[2:5], ids, name, negated)
    if mod in ("mark", "connmark"):
        negated = ts.negation()
        opt = ts.take(f"-m {mod}")
        if opt != "--mark":
            raise RuleError(opt, f"-m {mod} needs --mark")
        text = ts.take("--mark")
        value, mask = _mark(text)
        return Mark(value, mask, negated, conn=mod == "connmark", text=text)
    if mod in ("conntrack", "state"):
        negated = ts.negation()
        opt = ts.take(f"-m {mod}")
        if opt != ("--state" if mod == "state" else "--ctstate"):
            raise RuleError(opt, f"-m {mod} option not modelled (simnet reads --ctstate)")
        order = tuple(ts.take(opt).split(","))
        bad = [s for s in order if s not in CT_STATES]
        if bad:
            raise RuleError(bad[0], f"unknown conntrack state (known: {', '.join(CT_STATES)})")
        return CtState(frozenset(order), negated, order, module=mod)
    if mod == "addrtype":
        negated = ts.negation()
        opt = ts.take("-m addrtype")
        if opt not in ("--src-type", "--dst-type"):
            raise RuleError(opt, "-m addrtype option not modelled (simnet reads --src-type, --dst-type)")
        order = tuple(ts.take(opt).split(","))
        bad = [s for s in order if s not in ADDR_TYPES]
        if bad:
            raise RuleError(bad[0], "unknown address type")
        return AddrType(opt[2:5], frozenset(order), negated, order)
    # comment
    if ts.take("-m comment") != "--comment":
        raise RuleError(ts.tokens[ts.i - 1], "-m comment needs --comment")
    return Comment(ts.take("--comment"))


def _target(ts: _Tokens, opt: str, table: str, family: int) -> Target:
    name = ts.take(opt)
    start = ts.i
    options: dict[str, str] = {}
    flags: set[str] = set()
    takes_value = {"--to-ports", "--to-port", "--to-destination", "--on-port", "--on-ip",
                   "--tproxy-mark", "--set-mark", "--set-xmark", "--and-mark", "--or-mark",
                   "--xor-mark", "--zone", "--log-prefix", "--log-level", "--mask", "--nfmask",
                   "--ctmask"}
    while ts.more() and ts.peek().startswith("--"):
        o = ts.take("option")
        if o in takes_value:
            if o in options:
                raise RuleError(o, f"{o} given twice")
            options[o] = ts.take(o)
        else:
            flags.add(o)
    if ts.more() and not ts.peek().startswith("-") and ts.peek() != "!":
        raise RuleError(ts.peek(), f"unexpected argument to -j {name}")
    written = tuple(ts.tokens[start:ts.i])
    allowed = {
        "ACCEPT": (set(), set()), "DROP": (set(), set()), "RETURN": (set(), set()),
        "REDIRECT": ({"--to-ports", "--to-port"}, {"--random"}),
        "DNAT": ({"--to-destination"}, {"--random", "--persistent"}),
        "TPROXY": ({"--on-port", "--on-ip", "--tproxy-mark"}, set()),
        "MARK": ({"--set-mark", "--set-xmark", "--and-mark", "--or-mark", "--xor-mark"}, set()),
        "CONNMARK": ({"--set-mark", "--set-xmark", "--mask", "--nfmask", "--ctmask"},
                     {"--save-mark", "--restore-mark"}),
        "CT": ({"--zone"}, {"--notrack"}),
        "LOG": ({"--log-prefix", "--log-level"}, {"--log-uid", "--log-tcp-options", "--log-ip-options"}),
    }
    if name in allowed:
        vals, fl = allowed[name]
        for o in options:
            if o not in vals:
                raise RuleError(o, f"option not modelled for -j {name}")
        for f in flags:
            if f not in fl:
                raise RuleError(f, f"option not modelled for -j {name}")
    elif options or flags:
        raise RuleError(next(iter(options or flags)), f"-j {name} takes no options")
    elif not name or name.startswith("-") or len(name) > 28:
        raise RuleError(name, "not a target or chain name")
    elif name.isupper() and name not in ("ACCEPT", "DROP", "RETURN") and name in _KNOWN_UNSUPPORTED:
        raise RuleError(name, "target not modelled by simnet")
    t = Target(name, written, goto=opt == "-g")
    if name == "REDIRECT":
        spec = options.get("--to-ports", options.get("--to-port"))
        port = _port_range(spec, "-")[0] if spec else None
        return replace(t, port=port)
    if name == "DNAT":
        if "--to-destination" not in options:
            raise RuleError("-j DNAT", "DNAT needs --to-destination")
        addr, port = _dnat_destination(options["--to-destination"], family)
        return replace(t, address=addr, port=port)
    if name == "TPROXY":
        if "--on-port" not in options:
            raise RuleError("-j TPROXY", "TPROXY needs --on-port")
        value, mask = _mark(options.get("--tproxy-mark", "0/0"))
        on_ip = options.get("--on-ip")
        if on_ip is not None:
            on_ip = str(_network(on_ip, family).network_address)
        return replace(t, port=_int(options["--on-port"], "--on-port", 0, 65535), address=on_ip,
                       mark=value, mask=mask)
    if name == "MARK":
        if len(options) != 1:
            raise RuleError("-j MARK", "MARK needs exactly one of --set-mark, --set-xmark, --and-mark, "
                                       "--or-mark, --xor-mark")
        (o, v), = options.items()
        value, mask = _mark(v)
        if o in ("--and-mark", "--or-mark", "--xor-mark") and "/" in v:
            raise RuleError(v, f"{o} takes bits, not value/mask")
        mark, mask = {"--set-xmark": (value, mask), "--set-mark": (value, mask | value),
                      "--and-mark": (0, ~value & FULL_MASK), "--or-mark": (value, value),
                      "--xor-mark": (value, 0)}[o]
        return replace(t, mark=mark, mask=mask, action="set")
    if name == "CONNMARK":
        acts = [f for f in ("--save-mark", "--restore-mark") if f in flags]
        sets = [o for o in ("--set-mark", "--set-xmark") if o in options]
        if len(acts) + len(sets) != 1:
            raise RuleError("-j CONNMARK", "CONNMARK needs one of --save-mark, --restore-mark, --set-mark")
        if {"--mask", "--nfmask", "--ctmask"} & set(options):
            raise RuleError(next(iter({"--mask", "--nfmask", "--ctmask"} & set(options))),
                            "CONNMARK masks are not modelled")
        if sets:
            value, mask = _mark(options[sets[0]])
            mask = mask | value if sets[0] == "--set-mark" else mask
            return replace(t, mark=value, mask=mask, action="set")
        return replace(t, action="save" if acts[0] == "--save-mark" else "restore")
    if name == "CT":
        if bool("--zone" in options) == bool("--notrack" in flags):
            raise RuleError("-j CT", "CT needs exactly one of --zone or --notrack (others not modelled)")
        if "--notrack" in flags:
            return replace(t, notrack=True)
        return replace(t, zone=_int(options["--zone"], "--zone", 0, 65535))
    if name == "LOG" and "--log-level" in options:
        _int(options["--log-level"], "--log-level", 0, 7)
    return t


_KNOWN_UNSUPPORTED = frozenset({
    "SNAT", "MASQUERADE", "NETMAP", "REJECT", "NOTRACK", "TRACE", "NFQUEUE", "NFLOG", "TEE",
    "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "SECMARK", "CONNSECMARK", "TCPMSS", "CHECKSUM",
    "AUDIT", "IDLETIMER", "LED", "RATEEST", "SET", "SYNPROXY", "HMARK", "CLUSTERIP", "ULOG",
})


def _dnat_destination(spec: str, family: int) -> tuple[str, int | None]:
    host, port = spec, None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = _port_range(rest[1:], "-")[0]
    elif family == 4 and ":" in spec:
        host, _, p = spec.partition(":")
        port = _port_range(p, "-")[0]
    if "-" in host:
        raise RuleError(spec, "DNAT address ranges are not modelled")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise RuleError(spec, "DNAT --to-destination needs an address") from None
    if addr.version != family:
        raise RuleError(spec, f"IPv{addr.version} address in an IPv{family} ruleset")
    return str(addr), port
