"""Diego proxy port allocation: the seed's examples and its invariants."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet.errors import PortRangeExhausted
from simnet.model.ports import (
    C2C_TLS_PORT, PROXY_PORT_END, PROXY_PORT_START, cf_instance_ports_json, instance_env,
    instance_ports, proxy_ports,
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
    # The seed's `echo $CF_INSTANCE_PORTS | jq .` output, field for field, and today's entry
    # for the C2C mapping, which the seed predates (cloudfoundry/executor 2d5aae41 reserved
    # 61443, 2021-11-11; d0eafcd6 put it in CF_INSTANCE_PORTS: one entry per mapping, with no
    # host port for 61443, depot/containerstore/storenode.go portMappingFromContainerInfo)
    entries = instance_ports(pp.app_ports, pp, 61008)
    assert entries == [
        {"internal": 8080, "external": 61008, "internal_tls_proxy": 61001, "external_tls_proxy": 61011},
        {"internal": 8080, "external": 61008, "internal_tls_proxy": 61443},
        {"internal": 9999, "external": 61009, "internal_tls_proxy": 61002, "external_tls_proxy": 61012},
        {"internal": 2222, "external": 61010, "internal_tls_proxy": 61003, "external_tls_proxy": 61013},
    ]
    # the executor's key order (its struct's, depot/steps/run_step.go), absent keys left out
    assert cf_instance_ports_json(entries[:2]) == (
        '[{"external":61008,"internal":8080,"external_tls_proxy":61011,"internal_tls_proxy":61001},'
        '{"external":61008,"internal":8080,"internal_tls_proxy":61443}]')


def test_instance_env_is_the_executors():
    """depot/steps/run_step.go: CF_INSTANCE_PORT and CF_INSTANCE_ADDR from the first mapping's
    host port when it has one, nothing of them without (unproxied mappings off); all empty
    without mappings."""
    pp = proxy_ports([8080])
    env = instance_env(instance_ports(pp.app_ports, pp, 61008), "10.0.16.4")
    assert (env["CF_INSTANCE_PORT"], env["CF_INSTANCE_ADDR"]) == ("61008", "10.0.16.4:61008")
    assert len(json.loads(env["CF_INSTANCE_PORTS"])) == 2
    off = instance_env(instance_ports(pp.app_ports, pp, 61008, unproxied=False), "10.0.16.4")
    assert set(off) == {"CF_INSTANCE_PORTS"}
    assert instance_env([], "10.0.16.4") == {"CF_INSTANCE_PORT": "", "CF_INSTANCE_ADDR": "",
                                             "CF_INSTANCE_PORTS": "[]"}


def test_without_unproxied_mappings_external_disappears():
    pp = proxy_ports([8080, 9999])
    entries = instance_ports(pp.app_ports, pp, 61008, unproxied=False)
    assert all("external" not in e for e in entries)
    assert [e.get("external_tls_proxy") for e in entries] == [61008, None, 61009]
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


def test_admin_takes_61443_when_no_mapping_uses_it():
    """cloudfoundry/executor envoyconfig: ``AssignProxyPorts`` never hands out 61443 as a
    proxy port, but ``GetAvailablePort`` (the admin port) skips only the ports the mappings
    use, and 61443 is one of them only when the app has 8080."""
    without = proxy_ports(range(1, 443))  # proxy ports 61001..61442
    assert without.mappings[-1].proxy == 61442 and without.admin == C2C_TLS_PORT
    with_8080 = proxy_ports([8080, *range(1, 442)])  # 8080 also holds 61443
    assert with_8080.mappings[-1].proxy == 61442 and with_8080.admin == 61444


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
    assert pp.admin not in set(ports) | set(proxies)
    assert pp.admin != C2C_TLS_PORT or 8080 not in ports
    assert proxy_ports(ports) == pp, "stable for the same input"


@given(st.integers(-5, 40))
def test_range_exhaustion_is_a_clear_error(spare):
    usable = PROXY_PORT_END - PROXY_PORT_START - 1  # proxy ports: minus 61443
    # n app ports outside the range (8080 not among them) need n proxy ports + 1 admin port,
    # which may be 61443
    n = usable - spare
    ports = list(range(1, n + 1))
    assert 8080 not in ports
    if n > usable:
        with pytest.raises(PortRangeExhausted, match="no free proxy port"):
            proxy_ports(ports)
    else:
        # the proxy ports went past 61442 and no 8080 holds 61443: the admin's first free port
        assert proxy_ports(ports).admin == C2C_TLS_PORT
