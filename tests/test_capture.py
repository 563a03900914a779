"""Capture-rule generators: Istio's istio-iptables reproduced against its own golden files,
the BOSH prototype's VIP rule, and Garden's NetIn rules with the Diego host-side view."""

from __future__ import annotations

import difflib
import ipaddress
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simnet.errors import SimnetError
from simnet.model.capture import (
    BOSH_VIP_CIDR,
    BUILT_IN,
    IstioCapture,
    IstioConfig,
    bosh_vip_rules,
    boshy_vips,
    diego_host_view,
    diego_netin_rules,
    garden_instance_id,
    istio_capture,
)
from simnet.scenario.istio_config import load_istio_config
from simnet.model.deployment import derive
from simnet.model.istio_config import split
from simnet.scenario.load import load_scenario, load_text
from simnet.strategies.capture import istio_config_mappings, istio_configs
from simnet.strategies.scenarios import scenarios

REPO = Path(__file__).resolve().parents[1]
# Istio's golden files: a copy in the repository if there is one, else the shared peer data.
GOLDEN = next((p for p in (REPO / "tests" / "data" / "istio-capture-golden",
                           REPO.parent / "shared" / "peers" / "istio-capture-golden") if p.is_dir()),
              REPO / "tests" / "data" / "istio-capture-golden")
CASES = json.loads((GOLDEN / "cases.json").read_text()) if GOLDEN.is_dir() else {"defaults": {}, "cases": []}
SCENARIOS = REPO / "scenarios"

# Targets that are extensions, not chains: never declared with -N.
EXTENSION_TARGETS = {"REDIRECT", "TPROXY", "MARK", "CONNMARK", "CT", "DNAT", "ACCEPT", "RETURN", "DROP"}
# Built-in chains per table (what iptables-restore accepts as -A/-I targets without -N).
TABLE_CHAINS = {
    "nat": {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
    "mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
    "raw": {"PREROUTING", "OUTPUT"},
    "filter": {"INPUT", "FORWARD", "OUTPUT"},
}


def parse_restore(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(table, declared chains, rules as word lists) per ``* table ... COMMIT`` block, checking
    that blocks are balanced and nothing stands outside them."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("* "):
            assert current is None, f"table opened inside another: {line}"
            current = (line[2:], [], [])
        elif line == "COMMIT":
            assert current is not None, "COMMIT without a table"
            blocks.append(current)
            current = None
        else:
            assert current is not None, f"line outside a table: {line}"
            words = line.split()
            if words[0] == "-N":
                current[1].append(words[1])
            else:
                current[2].append(words)
    assert current is None, "table not committed"
    return blocks


def chain_rules(text: str, table: str, chain: str) -> list[str]:
    return [" ".join(w) for t, _, rules in parse_restore(text) if t == table
            for w in rules if w[1] == chain]


def families(cap: IstioCapture) -> list[str]:
    return [cap.v4] + ([cap.v6] if cap.v6 is not None else [])


# --- Istio: the golden files -------------------------------------------------------------

@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["name"])
def test_istio_golden_is_reproduced(case):
    config = IstioConfig.from_mapping({**CASES["defaults"], **case["config"]}, case["name"])
    expected = (GOLDEN / f"{case['name']}.golden").read_text()
    got = istio_capture(config).golden()
    assert got == expected, "".join(difflib.unified_diff(
        expected.splitlines(keepends=True), got.splitlines(keepends=True),
        f"{case['name']}.golden", "simnet"))


def test_all_27_golden_cases_are_present():
    assert len(CASES["cases"]) == 27
    assert {c["name"] for c in CASES["cases"]} == {p.stem for p in GOLDEN.glob("*.golden")}


def test_a_case_object_file_loads_like_its_mapping(tmp_path):
    case = next(c for c in CASES["cases"] if c["name"] == "tproxy")
    f = tmp_path / "tproxy.json"
    f.write_text(json.dumps({"name": case["name"], "config": {**CASES["defaults"], **case["config"]}}, indent=1))
    assert load_istio_config(f) == IstioConfig.from_mapping({**CASES["defaults"], **case["config"]})
    assert istio_capture(load_istio_config(f)).golden() == (GOLDEN / "tproxy.golden").read_text()


# --- Istio: behaviour the goldens do not show ----------------------------------------------

def test_defaults_are_istios():
    c = IstioConfig()
    assert (c.ProxyPort, c.InboundCapturePort, c.InboundTunnelPort) == ("15001", "15006", "15008")
    assert (c.ProxyUID, c.ProxyGID, c.InboundTProxyMark, c.InboundTProxyRouteTable) == ("1337", "1337", "1337", "133")
    assert (c.OwnerGroupsInclude, c.HostIPv4LoopbackCidr) == ("*", "127.0.0.1/32")
    assert IstioConfig.from_mapping(CASES["defaults"]) == c


def test_proxy_gid_follows_the_uid_when_not_given():
    assert IstioConfig.from_mapping({"ProxyUID": "42"}).ProxyGID == "42"
    assert IstioConfig.from_mapping({"ProxyUID": "42", "ProxyGID": "7"}).ProxyGID == "7"
    assert IstioConfig.from_mapping({"ProxyUID": 42}).ProxyUID == "42"


def test_redirect_dns_without_servers_captures_no_dns():
    cap = istio_capture(IstioConfig(RedirectDNS=True, EnableIPv6=True))
    assert all("ISTIO_OUTPUT_DNS" not in text and "15053" not in text for text in families(cap))


def test_capture_all_dns_redirects_port_53_to_any_server():
    cap = istio_capture(IstioConfig(RedirectDNS=True, CaptureAllDNS=True))
    dns = chain_rules(cap.v4, "nat", "ISTIO_OUTPUT_DNS")
    assert dns == ["-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
                   "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053"]
    assert "-A PREROUTING -j ISTIO_INBOUND" in chain_rules(cap.v4, "raw", "PREROUTING")


def test_empty_owner_group_include_list_captures_no_outbound_traffic():
    rules = chain_rules(istio_capture(IstioConfig(OwnerGroupsInclude="")).v4, "nat", "ISTIO_OUTPUT")
    assert "-A ISTIO_OUTPUT -j RETURN" in rules


def test_outbound_port_exclusions_come_before_everything_in_istio_output():
    rules = chain_rules(istio_capture(IstioConfig(OutboundPortsExclude="25,465")).v4, "nat", "ISTIO_OUTPUT")
    assert rules[:4] == [f"-A ISTIO_OUTPUT -p {p} --dport {port} -j RETURN"
                         for port in ("25", "465") for p in ("tcp", "udp")]


def test_ipv6_ranges_print_as_go_does():
    cap = istio_capture(IstioConfig(EnableIPv6=True, OutboundIPRangesInclude="2001:DB8:0:0::1/64,::ffff:10.0.0.0/104"))
    assert chain_rules(cap.v6, "nat", "ISTIO_OUTPUT")[-2:] == [
        "-A ISTIO_OUTPUT -d 2001:db8::1/64 -j ISTIO_REDIRECT",
        "-A ISTIO_OUTPUT -d ::ffff:10.0.0.0/104 -j ISTIO_REDIRECT"]


# --- Istio: bad input --------------------------------------------------------------------

def problems_of(excinfo) -> dict[str, str]:
    return {p.field: p.message for p in excinfo.value.problems}


def test_unknown_fields_and_wrong_types_are_all_reported():
    with pytest.raises(SimnetError) as e:
        IstioConfig.from_mapping({"ProxyPrt": "1", "EnableIPv6": "yes", "DNSServersV4": "1.1.1.1",
                                  "Reconcile": True, "ProxyPort": 15001.5}, "c.json")
    found = problems_of(e)
    assert "did you mean 'ProxyPort'" in found["ProxyPrt"]
    assert found["EnableIPv6"] == "expected true or false, found a string"
    assert found["DNSServersV4"] == "expected a list of strings, found a string"
    assert "not modelled" in found["Reconcile"]
    assert "found a number" in found["ProxyPort"]
    assert {p.file for p in e.value.problems} == {"c.json"}


@pytest.mark.parametrize("field, value, words", [
    ("ProxyPort", "70000", "not a port"),
    ("ProxyPort", "15001,15002", "not a port"),
    ("InboundPortsInclude", "80,http", "'http' is not a port"),
    ("InboundPortsExclude", "90:80", "port range"),
    ("OutboundIPRangesExclude", "*", "OUTBOUND_IP_RANGES_EXCLUDE"),
    ("OutboundIPRangesInclude", "10.0.0.0", "no '/'"),
    ("OutboundIPRangesInclude", "10.0.0.0/08", "bad prefix length"),
    ("OutboundIPRangesInclude", "10.0.0.0/33", "bad prefix length"),
    ("HostIPv4LoopbackCidr", "10.0.0.1/32", "expected valid IPv4 loopback"),
    ("HostIPv4LoopbackCidr", "127.0.0.1/7", "mask in range [8, 32]"),
    ("OwnerGroupsInclude", ",".join(str(i) for i in range(65)), "cannot exceed 64"),
    ("ExcludeInterfaces", "averyveryverylongname", "interface name"),
    ("InboundInterceptionMode", "tproxy", "interception mode"),
    ("ProxyUID", ",", "at least one"),
    ("DNSServersV6", ["127.0.0.53"], "not an IPv6 address"),
])
def test_bad_values_are_problems_naming_the_field(field, value, words):
    with pytest.raises(SimnetError) as e:
        IstioConfig.from_mapping({field: value})
    assert words in problems_of(e)[field]
    with pytest.raises(SimnetError):
        istio_capture(IstioConfig(**{field: tuple(value) if isinstance(value, list) else value}))


def test_config_file_problems_carry_their_line(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{\n  "name": "x",\n  "config": {\n    "ProxyPort": "15001",\n    "EnableIPv6": 1\n  }\n}\n')
    with pytest.raises(SimnetError) as e:
        load_istio_config(f)
    (p,) = e.value.problems
    assert (p.file, p.line, p.field) == (str(f), 5, "EnableIPv6")


def test_bad_json_names_file_and_line(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{\n  "ProxyPort": "15001",\n  "EnableIPv6": tru\n}\n')
    with pytest.raises(SimnetError) as e:
        load_istio_config(f)
    (p,) = e.value.problems
    assert (p.file, p.line) == (str(f), 3) and "not JSON" in p.message


def test_missing_file_and_non_mapping_are_problems(tmp_path):
    with pytest.raises(SimnetError, match="cannot read"):
        load_istio_config(tmp_path / "absent.json")
    f = tmp_path / "list.json"
    f.write_text("[1, 2]")
    with pytest.raises(SimnetError, match="expected a mapping"):
        load_istio_config(f)


# --- Istio: properties over the configuration space -----------------------------------------

@given(istio_configs())
def test_every_table_is_balanced_and_every_chain_declared(config):
    for text in families(istio_capture(config)):
        blocks = parse_restore(text)
        assert [t for t, _, _ in blocks] == sorted({t for t, _, _ in blocks})
        for table, declared, rules in blocks:
            assert len(declared) == len(set(declared)), f"chain declared twice in {table}"
            assert not set(declared) & BUILT_IN
            length: dict[str, int] = {}
            for words in rules:
                op, chain = words[0], words[1]
                assert chain in declared or chain in TABLE_CHAINS[table], f"{table}: {chain} undeclared"
                if op == "-I":
                    assert int(words[2]) <= length.get(chain, 0) + 1, "insert position past the chain's end"
                length[chain] = length.get(chain, 0) + 1
                target = words[words.index("-j") + 1]
                assert target in declared or target in EXTENSION_TARGETS, f"{table}: jump to {target}"


@given(istio_configs())
def test_proxy_traffic_is_exempt_before_any_outbound_redirect(config):
    for text in families(istio_capture(config)):
        rules = chain_rules(text, "nat", "ISTIO_OUTPUT")
        first_redirect = next((i for i, r in enumerate(rules) if r.endswith("-j ISTIO_REDIRECT")), len(rules))
        for owner, ids in (("--uid-owner", config.ProxyUID), ("--gid-owner", config.ProxyGID)):
            for i in split(ids):
                exempt = f"-A ISTIO_OUTPUT -m owner {owner} {i} -j RETURN"
                assert exempt in rules and rules.index(exempt) < first_redirect


@given(istio_configs())
def test_ipv6_rules_only_when_enabled_and_families_never_mix(config):
    cap = istio_capture(config)
    assert (cap.v6 is not None) == config.EnableIPv6
    golden = cap.golden().splitlines()
    assert golden.count("ip6tables-save") == (2 if config.EnableIPv6 else 1)
    assert golden == ["iptables-save", "ip6tables-save", *cap.v4.splitlines(),
                      *(cap.v6.splitlines() if cap.v6 else []), "iptables-save",
                      *(["ip6tables-save"] if config.EnableIPv6 else [])]
    for version, text in ((4, cap.v4), (6, cap.v6 or "")):
        for _, _, rules in parse_restore(text):
            for words in rules:
                for flag in ("-s", "-d"):
                    if flag in words:
                        addr = words[words.index(flag) + 1]
                        assert ipaddress.ip_network(addr, strict=False).version == version, addr


@given(istio_configs())
def test_inbound_capture_follows_the_interception_mode(config):
    cap = istio_capture(config)
    nat = chain_rules(cap.v4, "nat", "PREROUTING")
    mangle = chain_rules(cap.v4, "mangle", "PREROUTING")
    jump = "-A PREROUTING -p tcp -j ISTIO_INBOUND"
    if not config.InboundPortsInclude:
        assert jump not in nat and jump not in mangle
    elif config.tproxy:
        assert jump in mangle and jump not in nat and "TPROXY" in cap.v4
    else:
        assert jump in nat and jump not in mangle and "TPROXY" not in cap.v4


@given(istio_config_mappings())
def test_configs_round_trip_through_their_mapping(data):
    config = IstioConfig.from_mapping(data)
    again = IstioConfig.from_mapping(json.loads(json.dumps(asdict(config))))  # as a JSON file
    assert again == config
    assert istio_capture(again) == istio_capture(config)


# --- BOSH + Istio prototype -----------------------------------------------------------------

def bosh_names() -> list[str]:
    s, _ = load_scenario(SCENARIOS / "bosh-istio.yaml")
    return [r.host for r in s.routes]


def test_the_seed_names_resolve_into_the_vip_range():
    vips = boshy_vips(bosh_names())
    net = ipaddress.ip_network(BOSH_VIP_CIDR)
    assert "example-httpbin.banana.sample-deployment.boshy" in vips  # the seed's curl target
    assert all(ipaddress.ip_address(ip) in net for ip in vips.values())
    assert len(set(vips.values())) == len(vips)


@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True), max_size=20))
def test_vips_are_deterministic_unique_and_usable(names):
    vips = boshy_vips(names)
    assert vips == boshy_vips(list(reversed(names)))
    assert list(vips) == sorted(vips) and all(n.endswith(".boshy") for n in vips)
    net = ipaddress.ip_network(BOSH_VIP_CIDR)
    addresses = [ipaddress.ip_address(ip) for ip in vips.values()]
    assert len(set(addresses)) == len(addresses)
    assert all(a in net and a not in (net.network_address, net.broadcast_address) for a in addresses)
    assert boshy_vips([n + ".boshy" for n in names]) == vips


def test_more_names_than_vips_is_an_error():
    with pytest.raises(SimnetError, match="only 2 virtual IPs"):
        boshy_vips(["a", "b", "c"], vip_cidr="10.0.0.0/30")
    with pytest.raises(SimnetError, match="not a lowercase DNS name"):
        boshy_vips(["Not A Name"])


@given(st.integers(1, 65535))
def test_vip_rule_is_the_prototypes_flush_then_redirect(port):
    """rosenhouse/boshy-istio-release jobs/bosh-envoy/templates/pre-start.sh.erb:
    ``iptables -t nat -F OUTPUT`` then ``-A OUTPUT -d <vip cidr> -p tcp -j REDIRECT
    --to-port 15001``: no chain of its own, no uid exception."""
    text = bosh_vip_rules(port)
    (block,) = parse_restore(text)
    table, declared, rules = block
    assert table == "nat" and not declared
    assert [" ".join(w) for w in rules] == [
        "-F OUTPUT", f"-A OUTPUT -d {BOSH_VIP_CIDR} -p tcp -j REDIRECT --to-ports {port}"]


def test_the_vip_rule_flushes_what_else_nat_output_held():
    """Loaded over a VM whose nat OUTPUT already has a rule, the flush leaves only the VIP
    redirect, as the prototype's pre-start does to the VM."""
    from simnet.model.netfilter.parse import load, parse
    from simnet.model.netfilter.ruleset import Ruleset

    before = load("* nat\n-A OUTPUT -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 9\nCOMMIT\n")
    after = Ruleset.from_script(parse(bosh_vip_rules()), base=before)
    assert [" ".join(r.tokens()) for r in after.chain("nat", "OUTPUT").rules] == [
        f"-d {BOSH_VIP_CIDR} -p tcp -j REDIRECT --to-ports 15001"]
    assert len(before.chain("nat", "OUTPUT").rules) == 1


@pytest.mark.parametrize("args", [(0,), (True,), (15001, "fe80::/64"), (70000,)])
def test_bad_vip_rule_arguments_are_problems(args):
    with pytest.raises(SimnetError):
        bosh_vip_rules(*args)


# --- Diego: Garden NetIn and the host-side view ------------------------------------------------

SEED_002 = """
name: seed-002
cells: {{count: 1, memory_mb: 4096}}
proxy: {{enable_unproxied_port_mappings: {unproxied}}}
routers: {{backends: {{enabled: true}}}}
apps:
  - name: web
    ports: [8080, 9999, 2222]
    sidecars: [{{name: helper, ports: [8082]}}]
"""


def seed_instance(unproxied: bool):
    s, _ = load_text(SEED_002.format(unproxied=str(unproxied).lower()))
    (inst,) = derive(s).instances
    return inst, [p for sc in s.app(inst.app).sidecars for p in sc.ports]


@pytest.mark.parametrize("unproxied", [True, False])
def test_host_view_agrees_with_cf_instance_ports(unproxied):
    inst, sidecar_ports = seed_instance(unproxied)
    view = diego_host_view(inst, sidecar_ports)
    by_kind = {}
    for v in view:
        by_kind.setdefault(v.kind, []).append(v)
    for entry in inst.cf_instance_ports:  # the executor's own record of the mappings
        if entry["internal_tls_proxy"] == 61443:  # the C2C mapping: no host port (below)
            assert "external_tls_proxy" not in entry
            continue
        tls = next(v for v in by_kind["tls-proxy"] if v.app_port == entry["internal"])
        assert (tls.container_port, tls.host_port) == (entry["internal_tls_proxy"], entry["external_tls_proxy"])
        app = next(v for v in by_kind["unproxied-app"] if v.app_port == entry["internal"])
        assert app.host_port == entry.get("external")
        assert app.reachable == unproxied
        assert unproxied or "enable_unproxied_port_mappings" in app.reason
    (c2c,) = by_kind["c2c-tls"]
    assert (c2c.container_port, c2c.app_port, c2c.reachable) == (61443, 8080, False)
    (admin,) = by_kind["envoy-admin"]
    assert admin.container_port == inst.proxy.admin and not admin.reachable
    assert [(v.container_port, v.reachable) for v in by_kind["sidecar"]] == [(8082, False)]
    assert all(v.reason for v in view if not v.reachable)
    assert {v.container_port: v.host_port for v in view if v.reachable} == inst.host_ports


@pytest.mark.parametrize("unproxied", [True, False])
def test_netin_rules_dnat_each_published_port_and_nothing_else(unproxied):
    inst, sidecar_ports = seed_instance(unproxied)
    text = diego_netin_rules(inst)
    ((table, declared, rules),) = parse_restore(text)
    assert table == "nat"
    prerouting, chain = declared
    assert prerouting == "w--prerouting" and chain.startswith("w--instance-") and len(chain) <= 28
    assert ["-A", "PREROUTING", "-j", prerouting] in rules
    assert ["-A", "OUTPUT", "-o", "lo", "-j", prerouting] in rules
    assert [w[-1] for w in rules if w[1] == prerouting] == [chain]
    dnat = [w for w in rules if w[1] == chain]
    published = {(w[w.index("-d") + 1], int(w[w.index("--dport") + 1])): w[-1] for w in dnat}
    expected = {(f"{inst.cell_ip}/32", v.host_port): f"{inst.container_ip}:{v.container_port}"
                for v in diego_host_view(inst, sidecar_ports) if v.reachable}
    assert published == expected
    assert all(w[w.index("--comment") + 1] == inst.guid for w in dnat)
    assert ":61443" not in text and f":{inst.proxy.admin}" not in text


def test_netin_rules_without_global_chains_only_add_the_container():
    inst, _ = seed_instance(True)
    ((_, declared, rules),) = parse_restore(diego_netin_rules(inst, global_chains=False, instance_id="0000000000a"))
    assert declared == ["w--instance-0000000000a"]
    assert {w[1] for w in rules} == {"w--prerouting", "w--instance-0000000000a"}


def test_without_a_proxy_app_ports_are_published_directly():
    s, _ = load_text("name: t\ncells: {count: 1, memory_mb: 1024}\nproxy: {enabled: false}\n"
                     "apps: [{name: a, ports: [8080, 3000]}]\n")
    (inst,) = derive(s).instances
    view = diego_host_view(inst)
    assert [(v.kind, v.container_port, v.reachable) for v in view] == [
        ("unproxied-app", 8080, True), ("unproxied-app", 3000, True)]


def test_sidecar_buildpack_config_server_is_not_reachable_from_the_host():
    s, _ = load_scenario(SCENARIOS / "sidecar-buildpack.yaml")
    d = derive(s)
    for inst in d.instances:
        sidecar_ports = [p for sc in s.app(inst.app).sidecars for p in sc.ports]
        view = diego_host_view(inst, sidecar_ports)
        assert sidecar_ports and all(not v.reachable for v in view if v.container_port in sidecar_ports)
        ((_, _, rules),) = parse_restore(diego_netin_rules(inst))
        targets = {int(w[-1].rpartition(":")[2]) for w in rules if "DNAT" in w}
        assert targets and not targets & set(sidecar_ports)


@given(scenarios())
def test_every_published_port_has_exactly_one_dnat_rule(scenario):
    for inst in derive(scenario).instances:
        view = diego_host_view(inst)
        reachable = [v for v in view if v.reachable]
        assert {v.container_port: v.host_port for v in reachable} == inst.host_ports
        ((_, _, rules),) = parse_restore(diego_netin_rules(inst))
        assert sum(1 for w in rules if "DNAT" in w) == len(inst.host_ports)


@given(st.integers(0, 2**64))
def test_garden_ids_are_11_base32_digits_of_the_low_55_bits(n):
    gid = garden_instance_id(n)
    assert len(gid) == 11 and int(gid, 32) == n & (2**55 - 1)
