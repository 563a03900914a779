"""`simnet analyze`: every code has a deliberately broken scenario (tests/analyze/simNNNN-*.yaml)
that reports exactly that code at the line of the element it is about; the clean bases and the
bundled scenarios report what they are meant to; the catalogue and docs/analyze.md agree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from simnet.analysis import LEVELS, LOADER_CODES, analyze, catalogue
from simnet.errors import SimnetError
from simnet.scenario.load import BUNDLED, bundled
from simnet.scenario.references import ProblemKind

HERE = Path(__file__).parent / "analyze"
BROKEN = sorted(HERE.glob("sim*.yaml"))
ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs" / "analyze.md"

# What each bundled scenario is meant to show (the comments in the scenario files say why).
BUNDLED_FINDINGS = {
    "diego-route-integrity": {"SIM0013"},  # Diego's default: unproxied mappings on
    "diego-route-integrity-legacy": {"SIM0007"},  # plain HTTP to backends, on purpose
    "cf-for-k8s": set(),
    # the add-on's pre-start flushes nat OUTPUT; its admin API listens on 0.0.0.0:8001
    "bosh-istio": {"SIM0017", "SIM0018"},
    "sidecar-buildpack": {"SIM0006", "SIM0013"},  # the seed's 16 MB rule is short today
    "sidecar-patches": {"SIM0006", "SIM0013"},  # 2017: no additional memory at all
    # 7 instances: within capacity (5 would be SIM0014), but near enough it that gorouter's
    # retries could push a burst past it
    "capacity-planning": {"SIM0016"},
}


def codes(path: Path, **kw) -> set[str]:
    return {f.code for f in analyze(path, **kw).findings}


def test_every_kind_of_problem_the_loader_sets_apart_has_its_own_code():
    """The loader names kinds (``ProblemKind``); the SIM codes are the analyzer's alone."""
    assert set(LOADER_CODES) == set(ProblemKind)
    assert len(set(LOADER_CODES.values())) == len(LOADER_CODES)
    assert set(LOADER_CODES.values()) <= set(catalogue())


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_each_broken_scenario_reports_exactly_its_code_at_its_element(path):
    code = path.stem.split("-")[0].upper()
    result = analyze(path)
    lines = path.read_text().splitlines()
    also = {c for line in lines if line.startswith("# also reports:")
            for c in line.split(":", 1)[1].split("(")[0].split(",")}
    assert {f.code for f in result.findings} == {code} | {c.strip() for c in also}
    for f in result.findings:
        assert f.file == str(path) and f.line is not None and f.field
        # the element's own key, or its nearest ancestor written in the file (a default)
        text = path.read_text()
        key = next(k for k in reversed(f.field.split(".")) if not k.isdigit() and k in text)
        assert key in lines[f.line - 1], f"{f}: line {f.line} is {lines[f.line - 1]!r}"
        assert f.level == catalogue()[f.code].level and f.docs.endswith(catalogue()[f.code].anchor)


def test_every_code_has_a_broken_scenario():
    assert {p.stem.split("-")[0].upper() for p in BROKEN} == set(catalogue())


@pytest.mark.parametrize("name", ["clean-diego", "clean-istio"])
def test_the_bases_of_the_broken_scenarios_are_clean(name):
    assert analyze(HERE / f"{name}.yaml").findings == ()


@pytest.mark.parametrize("name", sorted(BUNDLED_FINDINGS))
def test_bundled_scenarios_show_the_findings_they_are_meant_to(name):
    assert codes(bundled(name)) == BUNDLED_FINDINGS[name]


def test_every_bundled_scenario_is_listed():
    assert {p.stem for p in BUNDLED.glob("*.yaml")} == set(BUNDLED_FINDINGS)


def test_findings_with_errors_from_the_loader_skip_the_derived_checks_and_say_so():
    result = analyze(HERE / "sim0009-route-weights.yaml")
    assert result.not_checked and "fix the errors" in result.not_checked[0]
    assert analyze(HERE / "sim0006-memory-below-need.yaml").not_checked == ()


def test_the_loader_still_rejects_what_analyze_reports_as_an_error():
    """simnet run refuses a scenario with a coded loader problem; analyze reports it."""
    from simnet.scenario.load import load_scenario

    with pytest.raises(SimnetError, match="sum to 90, not 100"):
        load_scenario(HERE / "sim0009-route-weights.yaml")


def test_certificate_validity_follows_the_moment_the_run_starts():
    path = HERE / "sim0011-certificate-expires.yaml"
    before = datetime(2026, 3, 1, tzinfo=UTC)
    after = datetime(2026, 7, 1, tzinfo=UTC)
    assert codes(path, at=before) == set()
    [late] = analyze(path, at=after).findings
    assert "expired at 2026-06-01T00:00:05+00:00, before the run starts" in late.message
    [during] = analyze(path).findings  # starts_at: 5 s before the end of its validity
    assert "5 s into the run" in during.message


def test_analysis_is_deterministic():
    path = HERE / "sim0011-certificate-expires.yaml"
    assert analyze(path).to_json() == analyze(path).to_json()


def test_unreadable_input_is_an_input_error_not_a_finding(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncells: {count: 1, memory_mb: 4096}\napps: [{name: a}]\n"
                   "routes: [{host: h, app: nobody}]\n")
    with pytest.raises(SimnetError, match="no app named 'nobody'"):
        analyze(bad)


# --- the catalogue and its docs ---------------------------------------------------------------


def test_catalogue_entries_are_complete_and_stable():
    raw = YAML(typ="safe").load((ROOT / "simnet" / "analysis" / "catalogue.yaml").read_text())
    assert list(raw) == sorted(raw)
    for code, m in catalogue().items():
        assert re.fullmatch(r"SIM\d{4}", code) and m.level in LEVELS
        assert m.anchor == f"{code.lower()}-{m.name.lower()}"
    names = [m.name for m in catalogue().values()]
    assert len(set(names)) == len(names)


def test_every_code_the_checks_emit_is_in_the_catalogue():
    sources = [ROOT / "simnet" / "analysis" / "checks.py", ROOT / "simnet" / "scenario" / "load.py"]
    emitted = {c for p in sources for c in re.findall(r'"(SIM\d{4})"', p.read_text())}
    assert emitted and emitted <= set(catalogue())


def test_docs_list_every_code_with_its_level():
    text = DOCS.read_text()
    headings = re.findall(r"^### (SIM\d{4}) (\w+)$", text, re.MULTILINE)
    assert [c for c, _ in headings] == list(catalogue())
    for code, name in headings:
        m = catalogue()[code]
        assert name == m.name
        section = text.split(f"### {code} {name}", 1)[1].split("\n### ", 1)[0]
        assert f"Level: **{m.level}**" in section
        assert _github_anchor(f"{code} {name}") == m.anchor


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


# --- the command ------------------------------------------------------------------------------


def simnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simnet", "analyze", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, check=False)


def test_exit_code_follows_the_failure_threshold():
    warning = str(HERE / "sim0003-port-in-proxy-range.yaml")
    assert simnet(warning).returncode == 0
    assert simnet(warning, "--failure-threshold", "warning").returncode == 1
    assert simnet(str(HERE / "sim0006-memory-below-need.yaml")).returncode == 1
    assert simnet(str(HERE / "clean-diego.yaml"), "--failure-threshold", "info").returncode == 0


def test_text_json_and_yaml_say_the_same():
    path = str(HERE / "sim0006-memory-below-need.yaml")
    text = simnet(path).stdout
    as_json = json.loads(simnet(path, "--format", "json").stdout)
    as_yaml = YAML(typ="safe").load(simnet(path, "--format", "yaml").stdout)
    assert as_json == as_yaml
    [f] = as_json["findings"]
    assert f["code"] == "SIM0006" and f["line"] == 6 and as_json["counts"]["error"] == 1
    assert f"{path}:6: proxy.additional_memory_allocation_mb: error SIM0006" in text
    assert "18 MB fits" in f["message"]


def test_bad_input_exits_2_without_a_traceback(tmp_path):
    missing = simnet(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_at = simnet(str(HERE / "clean-diego.yaml"), "--at", "yesterday")
    assert bad_at.returncode == 2 and "--at" in bad_at.stderr and "Traceback" not in bad_at.stderr
    bad_format = simnet(str(HERE / "clean-diego.yaml"), "--format", "xml")
    assert bad_format.returncode == 2 and "Traceback" not in bad_format.stderr


def test_certificate_files_must_hold_certificates(tmp_path):
    """A missing, unreadable or certificate-less file is an input error at the scenario's
    line, carrying the PEM file's own problem (never read: a device such as /dev/zero)."""
    text = (HERE / "sim0011-certificate-expires.yaml").read_text()
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    for name, words in (("missing.pem", "cannot read"), ("garbage.pem", "garbage.pem"),
                        ("/dev/zero", "not a regular file")):
        scenario = tmp_path / "s.yaml"
        scenario.write_text(text.replace("sim0011-router-client.pem", name))
        with pytest.raises(SimnetError) as e:
            analyze(scenario)
        message = str(e.value)
        assert message.startswith(f"{scenario}:8: certificates.0.file: ") and words in message
