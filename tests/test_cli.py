"""The `simnet` command, run as a user runs it (a subprocess)."""

import json
import subprocess
import sys

import pytest

from simnet.scenario.load import BUNDLED, load_scenario


def simnet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simnet", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_ports_json_matches_the_seed():
    out = simnet("ports", "8080,9999,2222", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["mappings"][:2] == [{"app_port": 8080, "proxy_port": 61001},
                                    {"app_port": 8080, "proxy_port": 61443}]
    assert data["admin"] == {"address": "127.0.0.1", "port": 61004}
    assert json.loads(data["CF_INSTANCE_PORTS_env"]) == data["CF_INSTANCE_PORTS"]
    assert all("external" in e for e in data["CF_INSTANCE_PORTS"])
    out = simnet("ports", "8080,9999,2222", "--no-unproxied", "--json")
    assert all("external" not in e for e in json.loads(out.stdout)["CF_INSTANCE_PORTS"])


@pytest.mark.parametrize("arg, message", [
    ("8080,61443", "PORTS: app port 61443 is reserved"),
    ("8080,http", "PORTS[1]: 'http' is not a port number"),
    ("70000", "PORTS[0]: '70000' is not a port number"),
])
def test_bad_ports_exit_2_without_traceback(arg, message):
    out = simnet("ports", arg)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_schema_is_json_schema_for_scenarios():
    out = simnet("schema")
    schema = json.loads(out.stdout)
    assert schema["title"] == "Scenario"
    assert schema["additionalProperties"] is False
    assert {"apps", "cells", "routes", "faults"} <= set(schema["properties"])


def test_bad_scenario_lists_every_problem_with_exit_2(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\ncells: {count: 1, memory_mb: 1024}\napps:\n"
                 "  - {name: a, ports: [8080, 61443]}\n  - {name: b, ports: [99999]}\n"
                 "colour: blue\n")
    before = tmp_path / "reports" / "bad" / "keep.txt"
    before.parent.mkdir(parents=True)
    before.write_text("earlier results")
    out = simnet("run", str(f), "--reports", str(tmp_path / "reports"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert f"{f}:4: apps.0.ports.1: port 61443 is reserved for container-to-container TLS" in lines
    assert any(line.startswith(f"{f}:5: apps.1.ports.0: ") for line in lines)
    assert f"{f}:6: colour: unknown key" in lines
    assert before.read_text() == "earlier results"


def test_missing_scenario_file_is_exit_2(tmp_path):
    out = simnet("run", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr and "Traceback" not in out.stderr


def test_run_writes_the_report(tmp_path):
    scenario = tmp_path / "small.yaml"
    scenario.write_text((BUNDLED / "diego-route-integrity.yaml").read_text())
    out = simnet("run", str(scenario), "--reports", str(tmp_path / "reports"))
    assert out.returncode == 0, out.stderr
    report = tmp_path / "reports" / load_scenario(scenario)[0].name
    for f in ("report.html", "summary.json", "latency_cdf.png", "throughput.png", "memory.png",
              "connections.png"):
        assert (report / f).stat().st_size > 0, f
    summary = json.loads((report / "summary.json").read_text())
    assert summary["requests"]["issued"] > 0
    assert "p99" in out.stdout and "status 200" in out.stdout
    first = (report / "summary.json").read_bytes()
    simnet("run", str(scenario), "--reports", str(tmp_path / "reports"))
    assert (report / "summary.json").read_bytes() == first, "same scenario and seed, same bytes"


def test_published_schema_is_current():
    """docs/scenario.schema.json (for editors) is what `simnet schema` prints today."""
    from pathlib import Path

    published = Path(__file__).parent.parent / "docs" / "scenario.schema.json"
    assert published.read_text() == simnet("schema").stdout, "run: simnet schema -o " + str(published)


GOLDEN = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "peers" / "istio-capture-golden"


def test_iptables_trace_json_follows_the_rules():
    out = simnet("iptables", "trace", str(GOLDEN / "ipnets.golden"), "--direction", "outbound",
                 "--proto", "tcp", "--src", "198.18.0.1", "--dst", "10.1.2.3", "--dport", "80",
                 "--uid", "1000", "--gid", "1000", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "verdict": "ACCEPT", "destination": "127.0.0.1:15001", "local": True, "mark": 0,
        "path": ["nat/OUTPUT#1", "nat/ISTIO_OUTPUT#9", "nat/ISTIO_REDIRECT#1"]}
    out = simnet("iptables", "trace", str(GOLDEN / "inbound-ports-include.golden"), "--direction",
                 "inbound", "--src", "198.18.0.2", "--dst", "198.18.0.1", "--dport", "31000",
                 "--in-if", "eth0", "--json")
    assert json.loads(out.stdout)["destination"] == "198.18.0.1:15006"


def test_iptables_trace_bad_input_exit_2(tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("*nat\n-A OUTPUT -p tcp --tcp-flags SYN SYN -j ACCEPT\nCOMMIT\n")
    out = simnet("iptables", "trace", str(rules), "--src", "198.18.0.1", "--dst", "9.9.9.9", "--dport", "80")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{rules}:2: --tcp-flags: option not modelled" in out.stderr
    out = simnet("iptables", "trace", str(rules), "--src", "nowhere", "--dst", "9.9.9.9", "--dport", "80")
    assert out.returncode == 2 and "--src: 'nowhere' is not an IP address" in out.stderr
    out = simnet("iptables", "trace", str(tmp_path / "missing"), "--src", "198.18.0.1", "--dst", "9.9.9.9",
                 "--dport", "80")
    assert out.returncode == 2 and "missing" in out.stderr and "Traceback" not in out.stderr


def test_iptables_generate_istio_reproduces_a_golden(tmp_path):
    cases = json.loads((GOLDEN / "cases.json").read_text())["cases"]
    case = next(c for c in cases if c["name"] == "tproxy")
    path = tmp_path / "tproxy.json"
    path.write_text(json.dumps(case))
    out = simnet("iptables", "generate", "istio", "--config", str(path), "--dry-run-form")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (GOLDEN / "tproxy.golden").read_text()
    restore = simnet("iptables", "generate", "istio", "--config", str(path)).stdout
    assert restore.count("COMMIT") == (GOLDEN / "tproxy.golden").read_text().count("COMMIT")
    path.write_text('{"ProxyPort": "15001",\n "InboundPortz": "*"}')
    out = simnet("iptables", "generate", "istio", "--config", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{path}:2: InboundPortz" in out.stderr


def test_compare_needs_two_scenarios_and_reports_bad_ones(tmp_path):
    out = simnet("compare", "diego-route-integrity")
    assert out.returncode == 2 and "give at least two scenarios" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ncells: {count: 1, memory_mb: 64}\napps: [{name: a, memory_mb: 128}]\n")
    out = simnet("compare", "diego-route-integrity", str(bad), "--reports", str(tmp_path / "r"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and f"{bad}:" in out.stderr
    assert not (tmp_path / "r").exists()  # nothing ran: every scenario is checked first


@pytest.mark.parametrize("args, line", [
    (["analyze", "diego-route-integrity", "--format", "xml"],
     "<command line>: --format: 'xml' is not one of text, json, yaml"),
    (["sweep", "diego-route-integrity", "--executor", "spark"],
     "<command line>: --executor: must be local or dask"),
    (["iptables", "trace", "rules.txt", "--dport", "0"],
     "<command line>: --dport: Input should be greater than or equal to 1"),
    (["memory", "estimate"], "<command line>: --connections: is required"),
    (["ports"], "<command line>: PORTS: is required"),
])
def test_typer_refusals_are_problems_in_the_same_form(args, line):
    """A value typer itself refuses (a choice, a range, a missing option) is reported like every
    other problem: one located line, exit 2, no usage box and no traceback."""
    out = simnet(*args)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [line]
