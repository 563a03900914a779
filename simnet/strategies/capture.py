"""Hypothesis strategies for istio-iptables configurations.

Every configuration drawn here produces rulesets a real ``iptables-restore --noflush`` (and
``ip6tables-restore``) accepts in an empty network namespace: ports are single valid port
numbers, uids/gids/groups are small numeric ids (names would need to exist on the host),
interfaces are eth0/eth1/lo, CIDRs and DNS servers are well-formed addresses of the right
family. The kernel differential test draws from ``istio_configs()``.
"""

from __future__ import annotations

from hypothesis import strategies as st

from simnet.model.capture import IstioConfig

ports = st.integers(1, 65535).map(str)
ids = st.integers(0, 5000).map(str)
interfaces = st.sampled_from(["eth0", "eth1", "lo"])


def comma_list(items: st.SearchStrategy[str], min_size: int = 0, max_size: int = 3,
               unique: bool = True) -> st.SearchStrategy[str]:
    return st.lists(items, min_size=min_size, max_size=max_size, unique=unique).map(",".join)


def cidrs(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(v=version), st.integers(0, bits))


def cidr_lists() -> st.SearchStrategy[str]:
    return comma_list(st.one_of(cidrs(4), cidrs(6)), max_size=3)


loopback_cidrs = st.builds(lambda b, c, d, n: f"127.{b}.{c}.{d}/{n}", st.integers(0, 255),
                           st.integers(0, 255), st.integers(1, 255), st.integers(8, 32))


def istio_config_mappings() -> st.SearchStrategy[dict]:
    """Mappings of Istio Config field names to values, as a JSON config file holds them.
    Fields are left out at random, so defaults are exercised too."""
    fields = {
        "ProxyPort": ports,
        "InboundCapturePort": ports,
        "InboundTunnelPort": ports,
        "ProxyUID": comma_list(ids, min_size=1, max_size=2),
        "ProxyGID": comma_list(ids, min_size=1, max_size=2),
        "InboundInterceptionMode": st.sampled_from(["", "REDIRECT", "TPROXY"]),
        "InboundTProxyMark": st.integers(1, 65535).map(str),
        "InboundPortsInclude": st.one_of(st.just(""), st.just("*"), comma_list(ports, min_size=1)),
        "InboundPortsExclude": comma_list(ports),
        "OwnerGroupsInclude": st.one_of(st.just("*"), comma_list(ids)),
        "OwnerGroupsExclude": comma_list(ids),
        "OutboundPortsInclude": comma_list(ports),
        "OutboundPortsExclude": comma_list(ports),
        "OutboundIPRangesInclude": st.one_of(st.just("*"), cidr_lists()),
        "OutboundIPRangesExclude": cidr_lists(),
        "RerouteVirtualInterfaces": comma_list(interfaces, max_size=2),
        "ExcludeInterfaces": comma_list(interfaces, max_size=2),
        "RedirectDNS": st.booleans(),
        "CaptureAllDNS": st.booleans(),
        "DropInvalid": st.booleans(),
        "EnableIPv6": st.booleans(),
        "DNSServersV4": st.lists(st.ip_addresses(v=4).map(str), max_size=2, unique=True),
        "DNSServersV6": st.lists(st.ip_addresses(v=6).map(str), max_size=2, unique=True),
        "HostIPv4LoopbackCidr": loopback_cidrs,
    }
    return st.fixed_dictionaries({}, optional=fields)


def istio_configs() -> st.SearchStrategy[IstioConfig]:
    """Valid IstioConfig values (see the module docstring for what keeps them loadable)."""
    return istio_config_mappings().map(IstioConfig.from_mapping)
