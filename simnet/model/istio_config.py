"""istio-iptables' configuration, read and checked the way simnet needs it.

The fields are Istio's own ``Config`` struct fields (istio/istio ``tools/common/config/config.go``,
``type Config``), with the values its command line starts from (``DefaultConfig`` plus the
``ProxyUID``/``ProxyGID`` fill-in of ``FillConfigFromEnvironment``). Like Istio they are strings
holding comma-separated lists, so a configuration copied from a pod's ``istio-init`` arguments or
from Istio's own tests (``tools/istio-iptables/pkg/capture/run_test.go``) reads unchanged.

Istio checks little itself (``Config.Validate``: owner-group count and the loopback CIDR;
``Run``: the CIDR lists). simnet also rejects values that would only fail later, inside
``iptables-restore`` (a port that is not a number, an interface name the kernel cannot have),
so every problem is reported with its field before any rule is generated. See docs/capture.md.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields

from simnet.errors import Problem, SimnetError

DEFAULT_PROXY_UID = "1337"  # constants.DefaultProxyUID: used when no istio-proxy user exists
MAX_OWNER_GROUPS_INCLUDE = 64  # config/types.go maxOwnerGroupsInclude

# Istio Config fields simnet does not model: they choose how or whether rules are applied
# (nftables instead of iptables, cleanup, reconciliation), or change no rule at all.
UNMODELLED_FIELDS = {
    "IptablesProbePort": "only used by istio-iptables' post-install validation probe",
    "ProbeTimeout": "only used by istio-iptables' post-install validation probe",
    "SkipRuleApply": "skips generating rules altogether",
    "RunValidation": "runs a live probe after applying, nothing to generate",
    "NetworkNamespace": "chooses where rules are applied, not which",
    "HostFilesystemPodNetwork": "CNI mode changes iptables locking, not the rules",
    "DualStack": "only used to detect EnableIPv6 from the pod's addresses; set EnableIPv6",
    "HostIP": "detected from the pod's addresses; it changes no rule",
    "Reconcile": "reconciliation of pre-existing rules needs a live iptables state",
    "CleanupOnly": "removes rules instead of generating them",
    "ForceApply": "only matters when rules already exist in a live iptables state",
    "NativeNftables": "selects istio-nftables instead of istio-iptables",
    "ForceIptablesBinary": "chooses the iptables binary, not the rules",
}


# String fields that may also be given as a number (they hold a port, an id or a mark).
_INT_OK = frozenset({"ProxyPort", "InboundCapturePort", "InboundTunnelPort", "ProxyUID", "ProxyGID",
                     "InboundTProxyMark", "InboundTProxyRouteTable"})


def split(value: str) -> list[str]:
    """Items of a comma-separated list, empty items dropped: Istio's ``config.Split``
    (tools/common/config/types.go). No whitespace is trimmed, exactly like Istio."""
    return [item for item in value.split(",") if item] if value else []


@dataclass(frozen=True)
class IstioConfig:
    """The inputs of Istio's capture-rule generator (``tools/common/config.Config``).

    Defaults are what ``istio-iptables`` runs with when given no flags (``DefaultConfig``);
    ``ProxyUID`` empty becomes 1337 and ``ProxyGID`` empty becomes ``ProxyUID``, as
    ``FillConfigFromEnvironment`` does on a system without an ``istio-proxy`` user.
    ``InboundInterceptionMode`` empty means REDIRECT. ``DryRun`` is accepted and changes
    nothing: simnet always produces the dry-run transcript.
    """

    ProxyPort: str = "15001"
    InboundCapturePort: str = "15006"
    InboundTunnelPort: str = "15008"
    ProxyUID: str = DEFAULT_PROXY_UID
    ProxyGID: str = ""
    InboundInterceptionMode: str = ""
    InboundTProxyMark: str = "1337"
    InboundTProxyRouteTable: str = "133"
    InboundPortsInclude: str = ""
    InboundPortsExclude: str = ""
    OwnerGroupsInclude: str = "*"
    OwnerGroupsExclude: str = ""
    OutboundPortsInclude: str = ""
    OutboundPortsExclude: str = ""
    OutboundIPRangesInclude: str = ""
    OutboundIPRangesExclude: str = ""
    RerouteVirtualInterfaces: str = ""
    ExcludeInterfaces: str = ""
    DryRun: bool = False
    RedirectDNS: bool = False
    DropInvalid: bool = False
    CaptureAllDNS: bool = False
    EnableIPv6: bool = False
    DNSServersV4: tuple[str, ...] = ()
    DNSServersV6: tuple[str, ...] = ()
    HostIPv4LoopbackCidr: str = "127.0.0.1/32"

    def __post_init__(self) -> None:
        for name in _INT_OK:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, str(value))
        for name in ("DNSServersV4", "DNSServersV6"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.ProxyUID == "":
            object.__setattr__(self, "ProxyUID", DEFAULT_PROXY_UID)
        if self.ProxyGID == "":
            object.__setattr__(self, "ProxyGID", self.ProxyUID)

    @property
    def tproxy(self) -> bool:
        """Inbound capture by TPROXY (mangle) instead of REDIRECT (nat), as ``Run`` decides."""
        return self.InboundInterceptionMode == "TPROXY"

    @classmethod
    def from_mapping(cls, data: Mapping, source: str = "<config>",
                     lines: Mapping[str, int] | None = None) -> IstioConfig:
        """A configuration from a mapping of Istio field names to values.

        Every unknown field, wrong type and bad value is collected and raised together as a
        SimnetError; ``lines`` (field name -> line) locates them in ``source`` when known.
        """
        if not isinstance(data, Mapping):
            raise SimnetError(Problem(source, None, "", (
                f"expected a mapping of istio-iptables fields, found {_json_type(data)}")))
        lines = lines or {}
        problems: list[Problem] = []
        good: dict[str, object] = {}
        for key, value in data.items():
            message = _key_problem(key) or _type_problem(str(key), value)
            if message:
                problems.append(Problem(source, lines.get(str(key)), str(key), message))
            else:
                good[key] = _typed(key, value)
        if "ProxyUID" in good and "ProxyGID" not in data:
            good["ProxyGID"] = ""  # FillConfigFromEnvironment: the gid follows the uid
        config = cls(**good)
        # Only given fields can be wrong: defaults are valid, and a derived ProxyGID repeats
        # ProxyUID's problem.
        problems += [Problem(source, lines.get(f), f, m) for f, m in value_problems(config)
                     if f in good and f in data]
        if problems:
            raise SimnetError(problems)
        return config


def parse_istio_config(text: str, file: str) -> IstioConfig:
    """An IstioConfig from a JSON file's text: a bare mapping of fields, or a case object
    ``{"name": ..., "config": {...}}`` as in peers/istio-capture-golden/cases.json; problems
    name ``file`` and the line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SimnetError(Problem(file, e.lineno, "", f"not JSON: {e.msg} (column {e.colno})")) from None
    lines = key_lines(text)
    if isinstance(data, dict) and "config" in data:
        extra = sorted(set(data) - {"name", "config", "description"})
        if extra:
            raise SimnetError([Problem(file, lines.get(k), k, (
                "unknown key in a case object (expected name, config, description)")) for k in extra])
        data = data["config"]
    return IstioConfig.from_mapping(data, file, lines)


def key_lines(text: str) -> dict[str, int]:
    """The line of the first ``"key":`` for each key in JSON text, to locate problems
    (the json module keeps no positions)."""
    out: dict[str, int] = {}
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"\s*:', text):
        out.setdefault(m.group(1), text.count("\n", 0, m.start()) + 1)
    return out


# --- types -------------------------------------------------------------------------------

_KINDS = {f.name: f.type for f in fields(IstioConfig)}


def _json_type(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _key_problem(key: object) -> str | None:
    if key in _KINDS:
        return None
    if key in UNMODELLED_FIELDS:
        return f"Istio field not modelled by simnet: {UNMODELLED_FIELDS[key]}"
    close = difflib.get_close_matches(str(key), list(_KINDS), n=1)
    return "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")


def _type_problem(key: str, value: object) -> str | None:
    kind = _KINDS[key]
    if kind == "bool":
        ok = isinstance(value, bool)
        expected = "true or false"
    elif kind == "str":
        ok = isinstance(value, str) or (
            key in _INT_OK and isinstance(value, int) and not isinstance(value, bool))
        expected = "a string" + (" or a number" if key in _INT_OK else "")
    else:
        ok = value is None or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
        expected = "a list of strings"
    return None if ok else f"expected {expected}, found {_json_type(value)}"


def _typed(key: str, value: object) -> object:
    if _KINDS[key] == "str":
        return str(value)
    if _KINDS[key] == "bool":
        return value
    return tuple(value or ())


# --- values ------------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


def _port(item: str) -> str | None:
    if not _NUMBER.fullmatch(item) or not 1 <= int(item) <= 65535:
        return f"{item!r} is not a port number (1-65535)"
    return None


def _single_port(value: str) -> Iterator[str]:
    """One port: it reaches iptables verbatim (``--to-ports``, ``--dport``, ``--on-port``)."""
    message = _port(value)
    if message:
        yield message


def _port_or_range(item: str) -> str | None:
    low, sep, high = item.partition(":")
    if sep:
        bad = _port(low) or _port(high)
        if bad or int(low) > int(high):
            return f"{item!r} is not a port or a port range LOW:HIGH"
        return None
    return _port(item)


def _owner(item: str) -> str | None:
    if _NUMBER.fullmatch(item) and int(item) < 2**32 or _NAME.fullmatch(item):
        return None
    return f"{item!r} is neither a numeric id nor a user/group name"


def _interface(item: str) -> str | None:
    # The kernel's dev_valid_name(): at most 15 bytes, not "." or "..", no '/', ':' or space.
    if len(item.encode()) > 15 or item in (".", "..") or re.search(r"[/:\s]", item):
        return f"{item!r} is not a valid network interface name"
    return None


def _each(check: Callable[[str], str | None], *, wildcard: bool = False,
          at_least_one: bool = False) -> Callable[[str], Iterator[str]]:
    def problems(value: str) -> Iterator[str]:
        if wildcard and value == "*":
            return
        items = split(value)
        if at_least_one and not items:
            yield "must list at least one value"
        for item in items:
            message = check(item)
            if message:
                yield message
    return problems


def _number_field(limit: int) -> Callable[[str], Iterator[str]]:
    def problems(value: str) -> Iterator[str]:
        if not _NUMBER.fullmatch(value) or int(value) >= limit:
            yield f"{value!r} is not a number below {limit}"
    return problems


def parse_prefix(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of a CIDR prefix, with the checks of Go's ``netip.ParsePrefix``: a '/' is
    required, the length has no sign or leading zero and fits the family. Raises ValueError."""
    addr_text, slash, bits = text.partition("/")
    if not slash:
        raise ValueError(f"{text!r} is not a CIDR prefix (no '/')")
    addr = ipaddress.ip_address(addr_text)  # rejects zones and leading-zero octets, as Go does
    if not re.fullmatch(r"0|[1-9][0-9]{0,2}", bits) or int(bits) > addr.max_prefixlen:
        raise ValueError(f"{text!r}: bad prefix length {bits!r}")
    return addr


def _prefix_list(value: str, *, exclude: bool) -> Iterator[str]:
    """Problems Istio's ``config.SeparateV4V6`` and ``Run`` raise for an IP range list."""
    if value == "*":
        if exclude:
            yield "invalid value for OUTBOUND_IP_RANGES_EXCLUDE: '*' is not allowed"
        return
    for item in split(value):
        try:
            parse_prefix(item)
        except ValueError as e:
            yield str(e)


def _loopback_cidr(value: str) -> Iterator[str]:
    """Istio's ``config.ValidateIPv4LoopbackCidr``."""
    try:
        addr = parse_prefix(value)
    except ValueError as e:
        yield f"failed to parse CIDR: {e}"
        return
    bits = int(value.partition("/")[2])
    if addr.version != 4 or not addr.is_loopback:
        yield f"expected valid IPv4 loopback address in CIDR {value}; found {addr}"
    elif not 8 <= bits <= 32:
        yield f"expected CIDR {value} to have mask in range [8, 32]; found {bits}"


def _owner_groups_include(value: str) -> Iterator[str]:
    """Istio's ``config.ValidateOwnerGroups`` plus the item check."""
    if value == "*":
        return
    items = split(value)
    if len(items) > MAX_OWNER_GROUPS_INCLUDE:
        yield (f"number of owner groups whose outgoing traffic should be redirected to Envoy "
               f"cannot exceed {MAX_OWNER_GROUPS_INCLUDE}, got {len(items)}")
    yield from _each(_owner)(value)


def _mode(value: str) -> Iterator[str]:
    if value not in ("", "REDIRECT", "TPROXY"):
        yield f"{value!r} is not an interception mode (REDIRECT or TPROXY)"


def _addresses(version: int) -> Callable[[tuple[str, ...]], Iterator[str]]:
    def problems(values: tuple[str, ...]) -> Iterator[str]:
        for v in values:
            try:
                ok = ipaddress.ip_address(v).version == version
            except ValueError:
                ok = False
            if not ok:
                yield f"{v!r} is not an IPv{version} address"
    return problems


_VALUE_CHECKS: dict[str, Callable] = {
    "ProxyPort": _single_port,
    "InboundCapturePort": _single_port,
    "InboundTunnelPort": _single_port,
    "ProxyUID": _each(_owner, at_least_one=True),
    "ProxyGID": _each(_owner, at_least_one=True),
    "InboundInterceptionMode": _mode,
    "InboundTProxyMark": _number_field(2**32),
    "InboundTProxyRouteTable": _number_field(2**32),
    "InboundPortsInclude": _each(_port_or_range, wildcard=True),
    "InboundPortsExclude": _each(_port_or_range),
    "OwnerGroupsInclude": _owner_groups_include,
    "OwnerGroupsExclude": _each(_owner),
    "OutboundPortsInclude": _each(_port_or_range),
    "OutboundPortsExclude": _each(_port_or_range),
    "OutboundIPRangesInclude": lambda v: _prefix_list(v, exclude=False),
    "OutboundIPRangesExclude": lambda v: _prefix_list(v, exclude=True),
    "RerouteVirtualInterfaces": _each(_interface),
    "ExcludeInterfaces": _each(_interface),
    "DNSServersV4": _addresses(4),
    "DNSServersV6": _addresses(6),
    "HostIPv4LoopbackCidr": _loopback_cidr,
}
def value_problems(config: IstioConfig) -> list[tuple[str, str]]:
    """(field, message) for every value of the wrong type or that Istio or iptables-restore
    would reject."""
    out = []
    for f in fields(config):
        value = getattr(config, f.name)
        wrong = _type_problem(f.name, value)
        if wrong:
            out.append((f.name, wrong))
            continue
        check = _VALUE_CHECKS.get(f.name)
        if check:
            out += [(f.name, m) for m in check(value)]
    return out


def checked(config: IstioConfig, source: str = "<config>") -> IstioConfig:
    """The config itself, or a SimnetError listing every bad value."""
    problems = [Problem(source, None, f, m) for f, m in value_problems(config)]
    if problems:
        raise SimnetError(problems)
    return config
