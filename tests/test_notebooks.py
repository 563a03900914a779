"""The notebooks (jupytext py:percent under notebooks/) run top to bottom in a Jupyter kernel,
as nbmake runs them, and show what they say they show.

Each notebook is converted to .ipynb in a temporary folder with a probe cell appended that
prints, as JSON, the values the notebook computed; the checks below read them back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbmake.nb_run import NotebookRun

from simnet import planning
from simnet.model.memory import instances_that_fit

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.py"))
CELL_TIMEOUT_S = 300
PROBE_MARK = "PROBE "


def execute(path: Path, tmp_path: Path, probe: str) -> tuple[nbformat.NotebookNode, dict]:
    """Run the notebook with ``probe`` (an expression) evaluated at the end; its outputs and
    the probe's value."""
    nb = jupytext.read(path)
    nb.cells.append(nbformat.v4.new_code_cell(
        f"import json as _json\nprint({PROBE_MARK!r} + _json.dumps({probe}))"))
    target = tmp_path / f"{path.stem}.ipynb"
    nbformat.write(nb, target)
    result = NotebookRun(target, CELL_TIMEOUT_S, kernel="python3").execute()
    if result.error is not None:
        trace = re.sub(r"\x1b\[[0-9;]*m", "", result.error.trace)  # the kernel's colours
        pytest.fail(f"{path.name}: cell {result.error.failing_cell_index} failed:\n{trace}",
                    pytrace=False)
    probed = [line[len(PROBE_MARK):] for line in stdout(result.nb).splitlines()
              if line.startswith(PROBE_MARK)]
    assert len(probed) == 1, "the probe cell printed its value once"
    return result.nb, json.loads(probed[0])


def stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def check_explore(nb, probe: dict) -> None:
    assert probe["completed"] > 0 and probe["completed"] == sum(probe["outcomes"].values())
    delays = [line for line in stdout(nb).splitlines() if line.startswith("delay")]
    assert len(delays) == 3 and all("outcomes {" in line for line in delays)
    assert images(nb) == 1  # the sidecar memory over time


def check_capacity(nb, probe: dict) -> None:
    text = stdout(nb)
    assert images(nb) == 5
    # 3: the table at the chosen N is the calibrated model's, and says where the seed is short
    expected = planning.compare_rules(probe["peak"])
    assert probe["rules"] == [[r.kind, r.recommended_mb, r.seed_rule_mb] for r in expected]
    chosen = next(r for r in expected if r.kind == probe["kind"])
    row = next(line for line in text.splitlines() if line.startswith(f"{chosen.kind} ")
               and f"{chosen.predicted_mb:.1f}" in line)
    assert str(chosen.recommended_mb) in row and str(chosen.seed_rule_mb) in row
    short = row.split()[-1]  # MB the seed's rule lacks, or "-"
    assert (short != "-") == chosen.seed_too_small
    # 4: the cost is the allocation times the instances, and the cells never overcommit
    cells, cell_mb, instances, quota = probe["foundation"]
    for name, mb in (("seed rule", chosen.seed_rule_mb), ("recommended", chosen.recommended_mb)):
        extra_gb, fit = probe["costs"][name]
        assert extra_gb == pytest.approx(mb * instances / 1024)
        assert fit == instances_that_fit(cells, cell_mb, quota, mb) <= probe["costs"]["none"][1]
    # 5: the simulation agrees with the model: OOM kills fall as the allocation grows, the
    # seed's rule for the peak the load reaches is too small, the recommendation is enough
    sweep = {mb: (kills, rate) for mb, kills, rate in probe["sweep"]}
    kills = [sweep[mb][0] for mb in sorted(sweep)]
    assert kills == sorted(kills, reverse=True) and kills[0] > 0
    seed_mb, recommended_mb = probe["run_rule"]
    assert sweep[seed_mb][0] > 0 and sweep[seed_mb][1] > 0
    assert sweep[recommended_mb] == (0, 0.0)
    assert f"peak {probe['run_n']} connections" in text


def check_questions(nb, probe: dict) -> None:
    """Each seed's question got an answer that matches the model it comes from."""
    from simnet import questions as q

    # seed 000: the route's port lands on Envoy; port 8080 and 10000 are reachable around it,
    # until unproxied mappings are off, which changes reachability and nothing else
    assert probe["landing"]["captured"] and probe["landing"]["verdict"] == "ACCEPT"
    assert probe["bypasses"][0] > 0 and probe["bypasses"][1] == 0
    assert probe["changes"] and {c[0] for c in probe["changes"]} == {"reachability"}
    assert all("bypasses Envoy" in c[2] and "bypasses" not in c[3] for c in probe["changes"])
    # seed 002: the seed's 16 MB is short at 100 connections; the assert names the fix
    [h] = probe["headroom"]
    assert h["envoy_mb"] > h["additional_mb"] == 16 and not h["fits"]
    assert f"at least {h['recommended_mb']}" in probe["memory_failure"]
    # seed 001: mTLS from the gateway, inbound captured to 15006, the proxy's uid not captured
    hops = {hop["hop"]: hop for hop in probe["tls"]}
    assert hops["istio ingress gateway -> Envoy sidecar"]["tls"] == "mtls"
    assert probe["inbound"]["destination"].endswith(":15006") and probe["inbound"]["captured"]
    assert not probe["outbound_as_proxy"]["captured"]
    # seed 003: the VIP call goes into the VM's Envoy on 15001
    assert probe["boshy"]["captured"] and probe["boshy"]["destination"].endswith(":15001")
    # the duplicated exclusion is shadowed by its first copy, and nothing else is reported
    [u] = probe["shadowed"]
    assert u["reason"] == "shadowed" and u["by"] and "15090" in u["text"]
    assert q.unreachable_rules("cf-for-k8s") == ()
    # backend TLS off: the TLS hop to the sidecar disappears
    assert any(c[0] == "tls" for c in probe["legacy"])
    assert images(nb) == 0 and "AssertionError" not in stdout(nb)


PROBES = {
    "explore-a-scenario": (
        "{'completed': metrics.completed, 'outcomes': {str(k): v for k, v in metrics.outcomes.items()}}",
        check_explore),
    "capacity-planning": (
        "{'kind': KIND, 'peak': PEAK_CONNECTIONS,"
        " 'rules': [[r.kind, r.recommended_mb, r.seed_rule_mb] for r in rules],"
        " 'foundation': [CELLS, CELL_MEMORY_MB, INSTANCES, QUOTA_MB],"
        " 'costs': {name: [c.extra_gb, c.fit_with] for name, c in costs.items()},"
        " 'sweep': [[p.additional_mb, p.oom_kills, p.error_rate] for p in sweep],"
        " 'run_n': run_n, 'run_rule': [run_rule.seed_rule_mb, run_rule.recommended_mb]}",
        check_capacity),
    "asking-questions": (
        "{'landing': landing.__dict__, 'bypasses': [len(bypass), len(left_after)],"
        " 'changes': [[c.question, c.subject, c.before, c.after] for c in changes],"
        " 'headroom': headroom.to_json(), 'memory_failure': memory_failure,"
        " 'tls': tls.to_json(), 'inbound': inbound.__dict__,"
        " 'outbound_as_proxy': outbound_as_proxy.__dict__, 'boshy': boshy.__dict__,"
        " 'shadowed': shadowed.to_json(),"
        " 'legacy': [[c.question, c.subject, c.before, c.after] for c in legacy]}",
        check_questions),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_what_it_says(path, tmp_path):
    assert path.stem in PROBES, f"{path.name}: add a probe and a check for it here"
    probe, check = PROBES[path.stem]
    nb, value = execute(path, tmp_path, probe)
    check(nb, value)


def test_notebooks_are_jupytext_percent_scripts():
    assert {p.stem for p in NOTEBOOKS} >= set(PROBES)
    assert not list(NOTEBOOKS[0].parent.glob("*.ipynb")), "commit notebooks as py:percent only"
    for path in NOTEBOOKS:
        nb = jupytext.read(path)
        assert jupytext.formats.format_name_for_ext(nb.metadata, ".py") == "percent", path.name
        assert any(c.cell_type == "markdown" for c in nb.cells), path.name
