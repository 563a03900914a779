"""Diego proxy port allocation: the seed's examples and its invariants."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet.errors import PortRangeExhausted
from simnet.model.ports import (
    C2C_TLS_PORT, PROXY_PORT_END, PROXY_PORT_START, cf_instance_ports_json, instance_ports,
    proxy_ports,
)


def pairs(pp):
    return [(m.app, m.proxy) for m in pp.mappings]


def test_design_examples():
    assert pairs(proxy_ports([8080, 9090])) == [(8080, 61001), (8080, 61443), (9090, 61002)]
    assert pairs(proxy_ports([61001, 9090])) == [(61001, 61002), (9090, 61003)]


def test_seed_002_example_and_cf_instance_ports():
    pp = proxy_ports([8080, 9999, 2222])
    assert pairs(pp) == [(8080, 61001), (8080, 61443), (9999, 61002), (2222, 61003)]
    assert pp.admin == 61004
    # The seed's `echo $CF_INSTANCE_PORTS | jq .` output, field for field.
    assert instance_ports(pp.app_ports, pp, 61008) == [
        {"internal": 8080, "external": 61008, "internal_tls_proxy": 61001, "external_tls_proxy": 61011},
        {"internal": 9999, "external": 61009, "internal_tls_proxy": 61002, "external_tls_proxy": 61012},
        {"internal": 2222, "external": 61010, "internal_tls_proxy": 61003, "external_tls_proxy": 61013},
    ]


def test_without_unproxied_mappings_external_disappears():
    pp = proxy_ports([8080, 9999])
    entries = instance_ports(pp.app_ports, pp, 61008, unproxied=False)
    assert all("external" not in e for e in entries)
    assert [e["external_tls_proxy"] for e in entries] == [61008, 61009]
    assert json.loads(cf_instance_ports_json(entries)) == entries


def test_without_proxy_only_plain_mappings():
    assert instance_ports([8080], None, 61008) == [{"internal": 8080, "external": 61008}]


def test_duplicates_are_removed_and_61443_is_refused():
    assert pairs(proxy_ports([9090, 9090])) == [(9090, 61001)]
    with pytest.raises(ValueError, match="61443"):
        proxy_ports([8080, C2C_TLS_PORT])


def test_admin_skips_app_ports():
    pp = proxy_ports([61002, 61003])
    assert pairs(pp) == [(61002, 61001), (61003, 61004)]
    assert pp.admin == 61005


app_ports = st.lists(
    st.one_of(st.integers(1, 65535), st.integers(61000, 61010), st.just(8080)), max_size=20
).filter(lambda ps: C2C_TLS_PORT not in ps)


@given(app_ports)
def test_allocation_invariants(ports):
    pp = proxy_ports(ports)
    proxies = [m.proxy for m in pp.mappings]
    assert len(proxies) == len(set(proxies)), "proxy ports are distinct"
    assert all(PROXY_PORT_START <= p < PROXY_PORT_END for p in proxies)
    for m in pp.mappings:
        assert m.proxy not in ports
        assert m.proxy != C2C_TLS_PORT or m.app == 8080
    assert [m.app for m in pp.mappings if m.proxy != C2C_TLS_PORT] == list(dict.fromkeys(ports))
    assert pp.admin not in set(ports) | set(proxies) and pp.admin != C2C_TLS_PORT
    assert proxy_ports(ports) == pp, "stable for the same input"


@given(st.integers(0, 40))
def test_range_exhaustion_is_a_clear_error(spare):
    usable = PROXY_PORT_END - PROXY_PORT_START - 1  # minus 61443
    # n app ports outside the range need n proxy ports + 1 admin port.
    n = usable - spare
    ports = list(range(1, n + 1))
    if n + 1 > usable:
        with pytest.raises(PortRangeExhausted, match="no free proxy port"):
            proxy_ports(ports)
    else:
        assert proxy_ports(ports).admin < PROXY_PORT_END
