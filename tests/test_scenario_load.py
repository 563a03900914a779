"""Scenario loading: the bundled scenarios load, and bad input is reported all at once.

Every bad-input test writes its YAML inline; the first line of each text is line 1, so the
expected ``FILE:LINE: field.path: message`` lines can be checked by counting.
"""

from __future__ import annotations

import string
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from simnet.errors import SimnetError
from simnet.scenario.load import BUNDLED, DEFAULT_SCENARIO, bundled, load_scenario, load_text
from simnet.scenario.schema import Scenario
from tests.fuzzing import FUZZED

FILE = "bad.yaml"

BUNDLED_NAMES = {
    "diego-route-integrity", "diego-route-integrity-legacy",
    "sidecar-patches",
    "cf-for-k8s",
    "bosh-istio",
    "sidecar-buildpack",
    "capacity-planning",
}


def problems(text: str) -> list[str]:
    """The problems loading ``text`` reports, as the CLI prints them."""
    with pytest.raises(SimnetError) as info:
        load_text(textwrap.dedent(text).lstrip("\n"), FILE)
    for p in info.value.problems:
        assert p.file == FILE
    return [str(p) for p in info.value.problems]


def loads(text: str) -> Scenario:
    scenario, _ = load_text(textwrap.dedent(text).lstrip("\n"), FILE)
    return scenario


# --- bundled scenarios ----------------------------------------------------------------------


def test_the_bundled_scenarios_are_there():
    assert {p.stem for p in BUNDLED.glob("*.yaml")} == BUNDLED_NAMES
    assert bundled().name == f"{DEFAULT_SCENARIO}.yaml"
    assert bundled().is_file()


@pytest.mark.parametrize("name", sorted(BUNDLED_NAMES))
def test_bundled_scenario_loads(name):
    path = bundled(name)
    scenario, source = load_scenario(path)
    assert scenario.name == name
    assert source.file == str(path)
    # A short run: 10-30 s simulated.
    assert 10 <= scenario.duration_s <= 30
    # Every line the source map points at exists in the file.
    n_lines = len(path.read_text().splitlines())
    assert 1 <= source.line(("apps", 0, "ports")) <= n_lines


@pytest.mark.parametrize("name", sorted(BUNDLED_NAMES))
def test_bundled_scenario_is_commented_and_names_its_seed(name):
    text = bundled(name).read_text()
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 10
    assert "seed 00" in text.lower() or "default" in text.lower()


def test_default_scenario_models_route_integrity():
    s, _ = load_scenario(bundled())
    assert s.platform == "diego" and s.proxy.enabled
    assert s.routers.count == 2 and s.routers.backends.enabled
    first, second = s.apps[0], s.apps[1]
    assert first.ports == [8080, 9999, 2222]
    kinds = {f.kind: f for f in s.faults}
    assert kinds["move"].app == first.name and kinds["move"].reused_by == second.name
    assert kinds["kill"].restart_after_s is not None


def test_seed_specific_details():
    patches, _ = load_scenario(bundled("sidecar-patches"))
    assert patches.apps[0].ports == [8080, 10000]
    assert [r.port for r in patches.routes] == [10000]
    assert patches.routers.backends.enabled

    k8s, _ = load_scenario(bundled("cf-for-k8s"))
    assert k8s.platform == "istio" and k8s.ingress.kind == "istio_gateway"
    assert len(k8s.apps) == 2 and len({r.host for r in k8s.routes}) == 3
    assert len({r.host for r in k8s.routes if r.app == k8s.apps[1].name}) == 3  # incl. the split
    assert sorted(r.weight for r in k8s.routes if r.weight) == [20, 80]

    bosh, _ = load_scenario(bundled("bosh-istio"))
    assert bosh.platform == "bosh"
    assert all(r.host.endswith(".boshy") for r in bosh.routes)
    assert any(r.host == "example-httpbin.banana.sample-deployment.boshy" and r.port == 9002
               for r in bosh.routes)

    bp, _ = load_scenario(bundled("sidecar-buildpack"))
    app = bp.app("app-using-config-server")
    assert app.env["CONFIG_SERVER_PORT"] == 8082
    assert app.sidecars[0].name == "config-server" and app.sidecars[0].ports == [8082]
    assert [r.port for r in bp.routes] == [8080]


# --- bad input, every problem in one pass -------------------------------------------------


def test_unknown_keys_top_level_and_nested():
    assert problems("""
        name: x
        colour: blue
        cells:
          count: 1
          memory_mb: 1024
          memroy_mb: 2048
        apps:
          - name: a
            instance: 2
        routers:
          backends:
            client_cert: {ca: c, sans: [x]}
    """) == [
        "bad.yaml:2: colour: unknown key",
        "bad.yaml:6: cells.memroy_mb: unknown key (did you mean 'memory_mb'?)",
        "bad.yaml:9: apps.0.instance: unknown key (did you mean 'instances'?)",
        "bad.yaml:12: routers.backends.client_cert.sans: unknown key (did you mean 'san'?)",
    ]


def test_unknown_key_in_a_fault_names_the_fault_kinds_fields():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps: [{name: a}]
        faults:
          - kind: kill
            at_s: 1
            app: a
            restart_after: 3
    """) == [
        "bad.yaml:8: faults.0.restart_after: unknown key (did you mean 'restart_after_s'?)",
    ]


def test_wrong_types():
    assert problems("""
        name: x
        cells:
          count: "3"
          memory_mb: 1024
        proxy: [enabled, true]
        apps:
          - name: a
            ports:
              - 8080
              - "9090"
            sidecars: {name: s}
        routes:
          - host: h
            app: a
            port: eighty
        routers:
          count: 2.5
          keep_alive_to_backends: yes
    """) == [
        "bad.yaml:3: cells.count: expected an integer, got the string '3'",
        "bad.yaml:5: proxy: expected a mapping, got a list",
        "bad.yaml:10: apps.0.ports.1: expected an integer, got the string '9090'",
        "bad.yaml:11: apps.0.sidecars: expected a list, got a mapping",
        "bad.yaml:15: routes.0.port: expected an integer, got the string 'eighty'",
        "bad.yaml:17: routers.count: expected an integer, got the number 2.5",
        # YAML 1.2: `yes` is a string, not a boolean.
        "bad.yaml:18: routers.keep_alive_to_backends: expected true or false, "
        "got the string 'yes'",
    ]


def test_plain_union_gives_one_problem_naming_every_alternative():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        proxy:
          additional_memory_allocation_mb: lots
        apps:
          - name: a
            env:
              PORT: [8080]
    """) == [
        "bad.yaml:4: proxy.additional_memory_allocation_mb: expected an integer or auto, "
        "got the string 'lots'",
        "bad.yaml:8: apps.0.env.PORT: expected a string or an integer, got a list",
    ]


def test_missing_required_fields_and_literals():
    assert problems("""
        name: bad name
        platform: kubernetes
        cells:
          count: 1
        apps:
          - instances: 1
    """) == [
        "bad.yaml:1: name: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$, got 'bad name'",
        "bad.yaml:2: platform: expected diego, istio or bosh, got the string 'kubernetes'",
        "bad.yaml:3: cells.memory_mb: required field is missing",
        "bad.yaml:6: apps.0.name: required field is missing",
    ]


def test_duplicate_keys_are_all_reported_with_the_other_problems():
    assert problems("""
        name: x
        cells:
          count: 1
          memory_mb: 1024
          count: 2
        apps:
          - name: a
            ports: [8080]
            name: b
        name: y
        routes:
          - {host: h, app: nope}
    """) == [
        "bad.yaml:5: cells.count: duplicate key (first on line 3)",
        "bad.yaml:9: apps.0.name: duplicate key (first on line 7)",
        "bad.yaml:10: name: duplicate key (first on line 1)",
        "bad.yaml:12: routes.0.app: no app named 'nope'",
    ]


def test_ports_outside_1_to_65535():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: a
            ports:
              - 0
              - 8080
              - 65536
            sidecars:
              - name: s
                ports: [70000]
        routes:
          - host: h
            app: a
            port: -1
    """) == [
        "bad.yaml:6: apps.0.ports.0: must be at least 1, got 0",
        "bad.yaml:8: apps.0.ports.2: must be at most 65535, got 65536",
        "bad.yaml:11: apps.0.sidecars.0.ports.0: must be at most 65535, got 70000",
        "bad.yaml:15: routes.0.port: must be at least 1, got -1",
    ]


def test_app_asking_for_the_c2c_tls_port_points_at_the_port():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: a
            ports:
              - 8080
              - 61443
          - name: b
            ports: []
    """) == [
        # The path is the field whose rule failed; the line is the offending item's.
        "bad.yaml:7: apps.0.ports.1: port 61443 is reserved for container-to-container TLS",
        "bad.yaml:9: apps.1.ports: needs at least 1 item",
    ]


def test_route_to_unknown_app_or_unlistened_port():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: web
            ports: [8080, 9090]
        routes:
          - host: a.example.com
            app: wbe
          - host: b.example.com
            app: web
            port: 9999
          - host: c.example.com
            app: web
            port: 9090
    """) == [
        "bad.yaml:8: routes.0.app: no app named 'wbe'",
        "bad.yaml:11: routes.1.port: app 'web' does not listen on 9999 (its ports: [8080, 9090])",
    ]


def test_client_host_with_no_route():
    assert problems("""
        name: x
        duration_s: 10
        cells: {count: 1, memory_mb: 1024}
        apps: [{name: web}]
        routes:
          - {host: web.example.com, app: web}
        clients:
          - host: web.example.com
            rate_per_s: 10
          - host: wbe.example.com
            rate_per_s: 10
          - host: web.example.com
            rate_per_s: 10
            start_s: 10
    """) == [
        "bad.yaml:10: clients.1.host: no route for host 'wbe.example.com' "
        "(routes: web.example.com)",
        "bad.yaml:14: clients.2.start_s: at or after the end of the run (10 s): "
        "this client never sends",
    ]


def test_fault_on_a_missing_instance_or_app():
    assert problems("""
        name: x
        duration_s: 20
        cells: {count: 2, memory_mb: 4096}
        apps:
          - {name: web, instances: 2}
          - {name: api}
        faults:
          - kind: kill
            at_s: 5
            app: web
            instance: 2
          - kind: move
            at_s: 25
            app: ghost
            reused_by: phantom
          - kind: move
            at_s: 6
            app: web
            reused_by: web
    """) == [
        "bad.yaml:11: faults.0.instance: app 'web' has 2 instance(s) (0-1); "
        "index 2 does not exist",
        "bad.yaml:13: faults.1.at_s: after the end of the run (20 s)",
        "bad.yaml:14: faults.1.app: no app named 'ghost'",
        "bad.yaml:15: faults.1.reused_by: no app named 'phantom'",
        "bad.yaml:19: faults.2.reused_by: must be another app: the move fault tests that a "
        "stale route to the old address never reaches a different app",
    ]


def test_fault_kind_missing_or_unknown():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps: [{name: a}]
        faults:
          - at_s: 1
            app: a
          - kind: partition
            at_s: 1
            app: a
    """) == [
        "bad.yaml:5: faults.0: needs 'kind': one of kill, stop, move, expire_certificate, "
        "restart_router, latency_spike",
        "bad.yaml:7: faults.1: unknown kind 'partition': expected one of kill, stop, move, "
        "expire_certificate, restart_router, latency_spike",
    ]


def test_sidecar_port_equal_to_an_app_port():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: a
            ports: [8080]
            sidecars:
              - name: config-server
                ports:
                  - 8082
                  - 8080
              - name: other
                ports: [8082, 61443]
    """) == [
        "bad.yaml:10: apps.0.sidecars.0.ports.1: port 8080 is already the app's port: "
        "sidecars share the network namespace, so two processes cannot listen on it",
        "bad.yaml:12: apps.0.sidecars.1.ports.0: port 8082 is already sidecar "
        "'config-server''s: sidecars share the network namespace, so two processes cannot "
        "listen on it",
        "bad.yaml:12: apps.0.sidecars.1.ports.1: port 61443 is reserved for "
        "container-to-container TLS",
    ]


def test_cross_references_are_checked_even_when_the_schema_fails():
    # The schema problems (bad type, unknown key) do not hide the reference problems, and
    # an app with an unrelated mistake still counts as existing for references.
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: web
            ports: [8080]
          - name: broken
            instances: many
        routes:
          - {host: h, app: web, port: 9090}
          - {host: b, app: broken}
          - {host: g, app: ghost}
        clients:
          - {host: nowhere, rate_per_s: 1}
        faults:
          - {kind: kill, at_s: 1, app: web, instance: 3, extra: 1}
          - {kind: kill, at_s: 1, app: web, instance: 3}
    """) == [
        "bad.yaml:7: apps.1.instances: expected an integer, got the string 'many'",
        "bad.yaml:9: routes.0.port: app 'web' does not listen on 9090 (its ports: [8080])",
        "bad.yaml:11: routes.2.app: no app named 'ghost'",
        "bad.yaml:13: clients.0.host: no route for host 'nowhere' (routes: b, g, h)",
        "bad.yaml:15: faults.0.extra: unknown key",
        "bad.yaml:16: faults.1.instance: app 'web' has 1 instance(s) (0-0); "
        "index 3 does not exist",
    ]


def test_model_level_rules_point_at_their_section():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        proxy:
          enabled: false
          enable_unproxied_port_mappings: false
        apps: [{name: a}]
        routes: [{host: h, app: a}]
        clients:
          - host: h
            model: closed
    """) == [
        "bad.yaml:3: proxy: enable_unproxied_port_mappings: false requires the proxy to be "
        "enabled",
        "bad.yaml:9: clients.0: a closed-loop client needs users",
    ]


@pytest.mark.parametrize("text, expected", [
    ("name: x\ncells: {count: 1\napps: []\n",
     "bad.yaml:3: invalid YAML: expected ',' or '}', but got ':' "
     "(while parsing a flow mapping at line 2)"),
    ("name: x\ncells:\n  count: 1\n   memory_mb: 2\n",
     "bad.yaml:4: invalid YAML: mapping values are not allowed here"),
    ("name: x\n\tcells: 1\n",
     "bad.yaml:2: invalid YAML: found character '\\t' that cannot start any token "
     "(while scanning for the next token)"),
    ("name: 'x\n", "bad.yaml:2: invalid YAML: found unexpected end of stream "
     "(while scanning a quoted scalar at line 1)"),
    ("name: x\n---\nname: y\n",
     "bad.yaml:2: invalid YAML: expected a single document in the stream but found another "
     "document"),
    ("name: *nowhere\n", "bad.yaml:1: invalid YAML: found undefined alias 'nowhere'"),
    ("name: x\x07\n", "bad.yaml:1: invalid YAML: unacceptable character #x0007: "
     "special characters are not allowed"),
    # ruamel resolves "._" as a float and its constructor raises ValueError (found by fuzzing)
    ("name: x\ncells: {count: 1}\napps: [._]\n",
     "bad.yaml:3: invalid YAML: '._' reads as a number and is not one (quote it for a string)"),
])
def test_invalid_yaml_syntax(text, expected):
    assert problems(text) == [expected]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text):
    assert problems(text) == [
        "bad.yaml:1: the file is empty: a scenario is a YAML mapping with at least name, "
        "cells and apps"
    ]


@pytest.mark.parametrize("text, got", [
    ("- name: x\n- cells: 1\n", "a list"),
    ("just a sentence\n", "the string 'just a sentence'"),
    ("42\n", "the integer 42"),
])
def test_non_mapping_top_level(text, got):
    assert problems(text) == [
        f"bad.yaml:1: a scenario must be a YAML mapping (key: value lines), got {got}"
    ]


def test_latency_distributions_with_bad_parameters():
    found = problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: a
            service_time:
              dist: lognormal
              median_ms: 0
              sigma: 9
        latency:
          client_to_ingress: {dist: exponential, mean_ms: -2}
          ingress_to_router: {dist: uniform, low_ms: 5, high_ms: 1}
          router_to_sidecar: {dist: constant, value_ms: 1, mean_ms: 2}
          sidecar_to_app: {dist: gamma, shape: 2}
          tcp_connect: {value_ms: 0.3}
          tls_handshake: {dist: constant}
    """)
    assert found == [
        "bad.yaml:7: apps.0.service_time.median_ms: must be greater than 0, got 0",
        "bad.yaml:8: apps.0.service_time.sigma: must be at most 5, got 9",
        "bad.yaml:10: latency.client_to_ingress.mean_ms: must be greater than 0, got -2",
        "bad.yaml:11: latency.ingress_to_router: high_ms must be >= low_ms",
        "bad.yaml:12: latency.router_to_sidecar.mean_ms: unknown key",
        "bad.yaml:13: latency.sidecar_to_app: unknown dist 'gamma': expected one of constant, "
        "exponential, lognormal, uniform",
        "bad.yaml:14: latency.tcp_connect: needs 'dist': one of constant, exponential, "
        "lognormal, uniform",
        "bad.yaml:15: latency.tls_handshake.value_ms: required field is missing",
    ]
    # The union tag pydantic puts in its locations never reaches the user.
    for line in found:
        path = line.split(": ")[1]
        for tag in ("constant", "exponential", "lognormal", "uniform", "function-after"):
            assert tag not in path.split("."), line


def test_numbers_must_be_finite():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        apps:
          - name: a
            service_time: {dist: constant, value_ms: .inf}
        routes: [{host: h, app: a}]
        clients:
          - host: h
            rate_per_s: .nan
    """) == [
        "bad.yaml:5: apps.0.service_time.value_ms: must be a finite number, got .inf",
        "bad.yaml:9: clients.0.rate_per_s: must be a finite number, got .nan",
    ]


def test_negative_additional_memory_is_rejected():
    assert problems("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        proxy: {additional_memory_allocation_mb: -5}
        apps: [{name: a, instances: -1}]
    """) == [
        "bad.yaml:3: proxy.additional_memory_allocation_mb: must be at least 0, got -5 (or auto)",
        "bad.yaml:4: apps.0.instances: must be at least 0, got -1",
    ]


def test_source_map_points_later_stages_at_the_right_line():
    # derive() reports problems by path; the source map turns them into file lines.
    path = bundled()
    lines = path.read_text().splitlines()
    _, source = load_scenario(path)
    for loc, text in [
        (("faults", 0, "reused_by"), "reused_by:"),
        (("apps", 0, "ports"), "ports: [8080, 9999, 2222]"),
        (("routers", "backends", "enabled"), "enabled: true"),
        (("apps", 1, "name"), "- name: billing"),
    ]:
        problem = source.problem(loc, "m")
        assert text in lines[problem.line - 1], (loc, lines[problem.line - 1])
        assert problem.field == ".".join(map(str, loc))
    # A path into a default (absent from the file) stays at the deepest present parent.
    assert source.line(("routers", "backends", "client_cert", "ca")) == \
        source.line(("routers", "backends"))


def test_yaml_anchors_merges_and_odd_keys():
    # A value brought in by `<<: *anchor` is reported where the anchor defines it; a key
    # YAML reads as a boolean is shown as the user wrote it.
    assert problems("""
        name: x
        cells: &cells
          count: two
          memory_mb: 1024
        apps:
          - name: a
            true: 1
        proxy:
          <<: {enabled: true}
          enable_http2: &on true
          memory: {base_mb: *on}
    """) == [
        "bad.yaml:3: cells.count: expected an integer, got the string 'two'",
        "bad.yaml:7: apps.0.true: unknown key",
        "bad.yaml:11: proxy.memory.base_mb: expected a number, got the boolean true",
    ]


def test_anchored_booleans_stay_booleans():
    s = loads("""
        name: x
        cells: {count: 1, memory_mb: 1024}
        proxy: {enabled: &on true, enable_http2: *on}
        apps: [{name: a}]
    """)
    assert s.proxy.enabled is True and s.proxy.enable_http2 is True


def test_deep_nesting_is_a_problem_not_a_crash():
    with pytest.raises(SimnetError) as info:
        load_text("name: " + "[" * 5000, FILE)
    assert [p.file for p in info.value.problems] == [FILE]


def test_load_scenario_names_the_file_as_given(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ncells: {count: 1, memory_mb: 1024}\napps: [{name: A}]\n")
    with pytest.raises(SimnetError) as info:
        load_scenario(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:3: apps.0.name: must match ^[a-z0-9][a-z0-9-]*$, got 'A'"
    ]


def test_unreadable_and_non_utf8_files(tmp_path: Path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(SimnetError) as info:
        load_scenario(missing)
    assert [str(p) for p in info.value.problems] == [
        f"{missing}: cannot read: No such file or directory"
    ]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: x\ndescription: caf\xe9\n")
    with pytest.raises(SimnetError) as info:
        load_scenario(latin1)
    assert [str(p) for p in info.value.problems] == [f"{latin1}:2: not UTF-8 text"]


def test_byte_order_mark_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.yaml"
    path.write_text("\ufeffname: x\ncells: {count: 1, memory_mb: 1024}\napps: [{name: a}]\n",
                    encoding="utf-8")
    scenario, _ = load_scenario(path)
    assert scenario.name == "x"


# --- garbage never crashes ------------------------------------------------------------------

# Words the schema knows, so generated documents reach deep into it, not just its top level.
VOCAB = sorted({
    "name", "cells", "count", "memory_mb", "apps", "ports", "sidecars", "routes", "host",
    "app", "port", "clients", "rate_per_s", "users", "model", "faults", "kind", "kill",
    "move", "at_s", "instance", "reused_by", "latency", "dist", "lognormal", "median_ms",
    "sigma", "uniform", "low_ms", "high_ms", "constant", "value_ms", "proxy", "enabled",
    "additional_memory_allocation_mb", "auto", "routers", "backends", "client_cert", "env",
    "service_time", "think_time", "instances", "duration_s", "platform", "diego", "x",
})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-70_000, 70_000), st.floats(allow_nan=True),
    st.sampled_from(VOCAB), st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(VOCAB), inner, max_size=5),
    ),
    max_leaves=25,
)


def _dump(data) -> str:
    from io import StringIO

    out = StringIO()
    YAML(typ="safe").dump(data, out)
    return out.getvalue()


yaml_ish = st.text(alphabet=string.printable + "\x00\x07\u00e9\u2028\ufeff", max_size=200)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), yaml_ish, documents.map(_dump)))
def test_garbage_only_ever_raises_simnet_error(text):
    FUZZED["scenario YAML"] += 1
    try:
        load_text(text, "garbage.yaml")
    except SimnetError as e:
        assert e.problems
        n_lines = text.count("\n") + 2
        for p in e.problems:
            assert p.file == "garbage.yaml"
            assert p.line is None or 1 <= p.line <= n_lines
            assert str(p).startswith("garbage.yaml")
