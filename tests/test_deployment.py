"""Derive: placement without overcommit, addresses, routes and the fault timeline."""

from collections import Counter

import pytest
from hypothesis import given

from simnet.errors import PortRangeExhausted, SimnetError
from simnet.model.deployment import DeriveError, derive
from simnet.model.memory import recommended_allocation_mb, seed_rule_mb
from simnet.model.placement import Cells
from simnet.lenses import load_and_derive
from simnet.scenario.load import load_text
from simnet.strategies.scenarios import scenarios


def test_auto_additional_memory_follows_the_memory_model():
    """``auto`` sizes the allocation for expected_peak_connections: the seed's 10 + 0.03*N
    with the seed's memory model, the calibrated Envoy's memory at N plus 10% otherwise."""
    assert seed_rule_mb(0) == 10 and seed_rule_mb(1000) == 40 and seed_rule_mb(150) == 15
    text = """
name: t
cells: {count: 1, memory_mb: 1024}
proxy: {additional_memory_allocation_mb: auto, expected_peak_connections: 500%s}
apps: [{name: a, memory_mb: 256}]
"""
    seed = derive(load_text(text % ", memory: {model: seed}")[0])
    assert seed.additional_mb == 25 and seed.instances[0].quota_mb == 256 + 25
    calibrated = derive(load_text(text % "")[0])
    fp = calibrated.instances[0].envoy  # 8080 has two mappings (61001 and the C2C 61443)
    assert calibrated.additional_mb == recommended_allocation_mb(fp, 500)
    assert calibrated.instances[0].quota_mb == 256 + calibrated.additional_mb


@given(scenarios())
def test_cells_are_never_overcommitted(scenario):
    d = derive(scenario)
    used = Counter()
    for guid in d.running:
        inst = d.instance(guid)
        used[inst.cell] += inst.quota_mb
    assert all(mb <= scenario.cells.memory_mb for mb in used.values())
    # Every running address belongs to exactly one instance.
    addresses = [a for g in d.running for a, _ in d.listeners[g]]
    assert len(addresses) == len(set(addresses))


def test_the_auction_spreads_an_apps_instances_before_it_fills_free_memory():
    """cloudfoundry/auction auctionrunner/cell.go ScoreForLRP: 1000 per instance of the same
    process already on the cell, plus the share of the cell used: big's one instance leaves
    cell 0 with less free memory, yet small's second instance goes there, not beside its
    first on the emptier cell 1 (most-free-memory alone would put both on cell 1)."""
    s, _ = load_text("""
name: t
cells: {count: 2, memory_mb: 4096}
proxy: {enabled: false}
apps:
  - {name: big, instances: 1, memory_mb: 2048}
  - {name: small, instances: 2, memory_mb: 256}
""")
    cells = {(i.app, i.index): i.cell for i in derive(s).instances}
    assert cells == {("big", 0): 0, ("small", 0): 1, ("small", 1): 0}


def test_too_many_instances_is_an_error_naming_the_line(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("""name: big
cells:
  count: 2
  memory_mb: 1024
proxy:
  additional_memory_allocation_mb: 32
apps:
  - name: small
    instances: 2
  - name: huge
    memory_mb: 512
    instances: 3
""")
    with pytest.raises(SimnetError) as e:
        load_and_derive(f)
    (p,) = e.value.problems
    assert (p.file, p.line, p.field) == (str(f), 12, "apps.1.instances")
    assert "only 2 of 3 instances fit" in p.message and "544 MB" in p.message


def test_unroutable_plain_backends_without_unproxied_mappings(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("""name: s
cells: {count: 1, memory_mb: 1024}
proxy: {enable_unproxied_port_mappings: false}
apps: [{name: a}]
routers:
  backends:
    enabled: false
""")
    with pytest.raises(SimnetError) as e:
        load_and_derive(f)
    assert str(e.value.problems[0]).startswith(f"{f}:7: routers.backends.enabled: backend TLS is off")


def test_routes_point_at_the_tls_proxy_host_port():
    s, _ = load_text("""
name: t
cells: {count: 1, memory_mb: 1024}
apps: [{name: a, ports: [8080, 9999, 2222]}]
routes: [{host: a.example.com, app: a, port: 9999}]
""")
    d = derive(s)
    inst = d.instances[0]
    (ep,) = d.routes["a.example.com"]
    assert ep.tls and ep.guid == inst.guid
    assert ep.address == (inst.cell_ip, inst.host_ports[61002])  # 9999 -> proxy 61002
    (entry,) = [e for e in inst.cf_instance_ports if e["internal"] == 9999]
    assert entry["internal_tls_proxy"] == 61002 and entry["external_tls_proxy"] == ep.address[1]


MOVED = """
name: t
cells: {count: 2, memory_mb: 2048}
apps: [{name: a, instances: 2}, {name: b}]
routes: [{host: a.example.com, app: a}, {host: b.example.com, app: b}]
routers: {route_propagation_delay_s: 2}
faults: [{kind: move, at_s: 1, app: a, instance: 0, reused_by: b, reuse_address: %s}]
"""


def test_a_moved_instances_place_goes_to_a_newcomer_with_the_pools_next_address():
    """Garden's port pool is FIFO (guardian kawasaki/ports/pool.go: Acquire takes the front,
    Release appends), and silk's host-local IPAM goes on from the last reserved address
    (containernetworking/plugins allocator.go GetIter): the newcomer in the victim's place
    gets ports and an address never used, and nothing listens at the victim's old address."""
    d = derive(load_text(MOVED % "false")[0])
    victim = d.routes["a.example.com"][0]
    old = d.instance(victim.guid)
    newcomer = d.instance(d.events[1].guid)
    assert newcomer.app == "b" and newcomer.cell == old.cell
    assert newcomer.container_ip != old.container_ip
    assert not set(newcomer.host_ports.values()) & set(old.host_ports.values())
    on_cell = [i for i in d.instances if i.cell == old.cell and i is not newcomer]
    assert min(newcomer.host_ports.values()) > max(p for i in on_cell for p in i.host_ports.values())
    assert victim.address not in dict(d.listeners[newcomer.guid])
    entries = {e["external_tls_proxy"] for e in newcomer.cf_instance_ports if "external_tls_proxy" in e}
    assert entries <= set(newcomer.host_ports.values())


def test_garden_hands_out_released_host_ports_after_the_never_used_ones():
    cells = Cells(1, 1024)
    first = cells.host_ports(0, 3)
    assert first == [61001, 61002, 61003]
    cells.release(0, [61002])
    assert cells.host_ports(0, 4531) == list(range(61004, 61001 + 4534))
    cells.release(0, [61001])
    assert cells.host_ports(0, 2) == [61002, 61001]  # the order they went back in
    with pytest.raises(PortRangeExhausted, match="4534"):
        cells.host_ports(0, 1)


def test_move_reuses_the_address_for_another_app():
    d = derive(load_text(MOVED % "true")[0])
    victim = d.routes["a.example.com"][0]
    kinds = [(e.at_s, e.kind) for e in d.events]
    assert kinds == [(1, "stop"), (1, "start"), (1, "start"), (3, "routes")]
    newcomer = d.instance(d.events[1].guid)
    assert newcomer.app == "b"
    served = dict(d.listeners[newcomer.guid])
    assert served[victim.address].guid == newcomer.guid and served[victim.address].tls
    new_a = dict(d.events[3].routes)["a.example.com"]
    assert victim not in new_a and len(new_a) == 2


def test_sidecar_processes_share_the_quota_of_the_process_types_they_name():
    """Seeds 000/004: a sidecar runs inside the app container, so its memory comes out of the
    same quota -- but only beside the process types it names (a `worker` sidecar does not run
    in the `web` container)."""
    s, _ = load_text("""
name: sc
cells: {count: 1, memory_mb: 4096}
apps:
  - name: web-app
    memory_mb: 512
    memory_used_mb: 100
    sidecars:
      - {name: config-server, ports: [8082], memory_mb: 40}
      - {name: queue-drainer, process_types: [worker], memory_mb: 70}
""", "sc.yaml")
    (inst,) = derive(s).instances
    assert inst.quota_mb == 512
    assert inst.base_used_mb == 100 + 40


def test_app_port_and_ingress_port_are_separate():
    """Seed 000's "Improvements": the port the app listens on ($PORT, CF_INSTANCE_PORTS
    internal) and the port ingress lands on (the TLS proxy's) differ, with no change to the
    app's ports or route mappings; without the proxy they are one and the same."""
    text = """
name: sep
cells: {{count: 1, memory_mb: 4096}}
proxy: {{enabled: {proxy}}}
apps: [{{name: a, ports: [8080]}}]
routes: [{{host: a.example.com, app: a, port: 8080}}]
routers: {{backends: {{enabled: {proxy}}}}}
"""
    with_proxy = derive(load_text(text.format(proxy="true"), "p.yaml")[0])
    (inst,) = with_proxy.instances
    (ep,) = with_proxy.routes["a.example.com"]
    landing = next(p for p, h in inst.host_ports.items() if h == ep.address[1])
    assert landing == inst.proxy.proxy_for(8080) == 61001 and ep.tls
    assert inst.cf_instance_ports[0]["internal"] == 8080
    without = derive(load_text(text.format(proxy="false"), "n.yaml")[0])
    (inst,) = without.instances
    (ep,) = without.routes["a.example.com"]
    assert next(p for p, h in inst.host_ports.items() if h == ep.address[1]) == 8080


def test_each_platform_answers_what_differs():
    """The platform objects (model.platform) hold what string branches used to: the empty-pool
    rule (gorouter and the BOSH pilot drop a host with no instances, 404; Istio keeps the
    VirtualService, 503), the default uid (vcap 2000 in a cflinuxfs container, 1000 on a
    stemcell), whose address a job has, and who dials."""
    from simnet.model.platform import PLATFORMS, Bosh, Diego, Istio, platform_of
    from simnet.scenario.schema import App

    assert {p: PLATFORMS[p].keeps_empty_routes for p in PLATFORMS} == {
        "diego": False, "istio": True, "bosh": False}
    app, own = App(name="a"), App(name="b", uid=4242)
    assert [PLATFORMS[p].uid(app) for p in ("diego", "istio", "bosh")] == [2000, 2000, 1000]
    assert all(p.uid(own) == 4242 for p in PLATFORMS.values())
    for text, kind, host in (("platform: diego", Diego, "a.example.com"),
                             ("platform: istio", Istio, "a.example.com"),
                             ("platform: bosh", Bosh, "a.web.dep.boshy")):
        s, _ = load_text(f"name: p\n{text}\ncells: {{count: 1, memory_mb: 4096}}\n"
                         f"apps: [{{name: a}}]\nroutes: [{{host: {host}, app: a}}]\n")
        d = derive(s)
        assert isinstance(d.platform, kind) and platform_of(s) is d.platform
        inst = d.instances[0]
        assert d.platform.own_address(inst) == (inst.cell_ip if kind is Bosh else inst.container_ip)
        [ep] = d.routes[host]
        assert ep == d.platform.endpoint(s, inst, s.routes[0].port, ep.service)
        assert ep.tls == (kind is not Bosh)  # the BOSH prototype dials in plain TCP


def test_a_bosh_route_to_a_name_that_is_not_boshy_is_a_located_error():
    """Found by the platform test: such a host crashed derive with a KeyError."""
    s, _ = load_text("name: p\nplatform: bosh\ncells: {count: 1, memory_mb: 4096}\n"
                     "apps: [{name: a}]\nroutes: [{host: a.example.com, app: a}]\n")
    with pytest.raises(DeriveError) as e:
        derive(s)
    [(loc, message)] = e.value.problems
    assert loc == ("routes", 0, "host") and ".boshy" in message


STOPPED = """
name: t
cells: {count: 2, memory_mb: 2048}
proxy: {envoy_config_reload_duration_s: 4}
apps: [{name: a, instances: 2}]
routes: [{host: a.example.com, app: a}]
routers: {route_propagation_delay_s: 1}
faults: [{kind: stop, at_s: 2, app: a, instance: 1, evacuate: %s}]
"""


def test_a_graceful_stop_writes_a_guidless_identity_and_stops_after_the_reload():
    """The rep's credential manager, signalled, writes the identity without the instance guid
    and sleeps envoy_config_reload_duration before the container goes (cloudfoundry/executor
    depot/containerstore/credmanager.go Runner, proxy_config_handler.go Close); the route is
    withdrawn meanwhile."""
    d = derive(load_text(STOPPED % "false")[0])
    victim = next(i for i in d.instances if i.index == 1)
    assert [(e.at_s, e.kind, getattr(e, "guid", None)) for e in d.events] == [
        (2, "cert_without_guid", victim.guid), (3, "routes", None), (6, "stop", victim.guid)]
    assert [ep.guid for ep in dict(d.events[1].routes)["a.example.com"]] == [
        i.guid for i in d.instances if i.index == 0]


def test_an_evacuation_starts_the_replacement_elsewhere_before_the_stop():
    d = derive(load_text(STOPPED % "true")[0])
    victim = next(i for i in d.instances if i.index == 1)
    start = next(e for e in d.events if e.kind == "start")
    replacement = d.instance(start.guid)
    assert start.at_s == 2 and replacement.cell != victim.cell and replacement.index == 1
    routed = {ep.guid for ep in dict(next(e for e in d.events if e.kind == "routes").routes)[
        "a.example.com"]}
    assert replacement.guid in routed and victim.guid not in routed
    assert [e.at_s for e in d.events if e.kind == "stop"] == [6]


def test_a_fault_on_a_stopped_instance_is_located():
    text = STOPPED % "false" + "  - {kind: kill, at_s: 3, app: a, instance: 1}\n"
    text = text.replace("evacuate: false}]\n", "evacuate: false}\n").replace(
        "faults: [{", "faults:\n  - {")
    with pytest.raises(DeriveError, match="not running at 3 s") as e:
        derive(load_text(text)[0])
    assert e.value.problems[0][0] == ("faults", 1, "instance")


def test_stop_is_refused_off_diego():
    text = (STOPPED % "false").replace("name: t\n", "name: t\nplatform: istio\n")
    with pytest.raises(DeriveError, match="on istio use kill"):
        derive(load_text(text)[0])
