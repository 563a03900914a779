"""The report folder: complete, self-contained, deterministic, and never half-written."""

from __future__ import annotations

import base64
import json
import random
import re
from collections import Counter
from html import escape

import pytest

from simnet.model.deployment import Deployment, derive
from simnet.report import figures, render
from simnet.report.render import REPORT_FILES, STATUS_MEANINGS, write_report
from simnet.scenario.schema import Scenario
from simnet.sim.metrics import InstanceSeries, Metrics

PNGS = ("latency_cdf.png", "throughput.png", "memory.png", "connections.png", "load.png",
        "envoy_memory_model.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scenario(**extra) -> Scenario:
    return Scenario.model_validate({
        "name": "synthetic",
        "description": "A made-up run for the report tests.",
        "seed": 42,
        "duration_s": 10,
        "cells": {"count": 2, "memory_mb": 4096},
        "apps": [{"name": "web", "instances": 2}, {"name": "api", "instances": 1}],
        "routes": [{"host": "web.example.com", "app": "web"}],
        **extra,
    })


def deployed(**extra) -> Deployment:
    return derive(scenario(**extra))


def instance(k: int, bins: int, rng: random.Random, *, quota: float = 256.0, oom: int = 0,
             base: float = 7.5) -> InstanceSeries:
    conns, high, h = [], [], 0
    for _ in range(bins):
        c = rng.randint(0, 40 + 10 * k)
        h = max(h, c)
        conns.append(c)
        high.append(h)
    memory = [round(base + 0.03 * x, 6) if base else 0.0 for x in high]
    return InstanceSeries(
        guid=f"{k:08x}-0000-4000-8000-{k:012x}", app="web" if k % 3 else "api", index=k,
        cell=k % 2, quota_mb=quota, conns_max=conns, highwater=high, memory_mb=memory,
        peak_connections=max(conns), peak_memory_mb=max(memory),
        connections_opened=sum(conns), oom_kills=oom)


def metrics(*, requests: int = 2000, instances: int = 3, duration_s: float = 10.0,
            bin_s: float = 1.0, seed: int = 1, misdelivered: int = 0, oom: int = 0,
            base_mb: float = 7.5) -> Metrics:
    rng = random.Random(seed)
    m = Metrics(duration_s=duration_s, bin_s=bin_s)
    statuses = [200] * 40 + [404, 496, 502, 503, 525, 526]
    for _ in range(requests):
        t = rng.uniform(0, duration_s)
        status = rng.choice(statuses)
        m.issued += 1
        m.outcomes[status] += 1
        m.latencies_ms.append(rng.lognormvariate(2.5, 0.6))
        b = m.bin_of(t)
        m.requests_per_bin[b] += 1
        if status != 200:
            m.errors_per_bin[b] += 1
    m.connections_opened = m.tls_handshakes = requests // 10
    m.retries = m.endpoints_pruned = 3 if requests else 0
    m.misdelivered = misdelivered
    m.instances = [instance(k, m.bins, rng, oom=oom if k == 0 else 0, base=base_mb)
                   for k in range(instances)]
    return m


FACTS = {
    "simnet_version": "0.1.0",
    "routes": {"web.example.com": ["10.0.0.1:61001 (web g0, tls)"]},
    "instances": [{"guid": "g0", "proxy_ports": {"61001": 8080},
                   "CF_INSTANCE_PORTS": '[{"internal":8080,"external":61001}]'}],
}


def files_of(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_writes_every_file(tmp_path):
    out = tmp_path / "reports" / "synthetic"
    written = write_report(deployed(), metrics(), out, facts=FACTS)
    assert [p.name for p in written] == list(REPORT_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    for p in written:
        assert p.parent == out and p.stat().st_size > 0, p
    for name in PNGS:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    # nothing left beside it: no staging or old folders
    assert [p.name for p in out.parent.iterdir()] == ["synthetic"]


def test_html_is_self_contained(tmp_path):
    out = tmp_path / "r"
    write_report(deployed(), metrics(), out, facts=FACTS)
    html = (out / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(PNGS)
    assert sorted(base64.b64decode(i) for i in images) == \
        sorted((out / n).read_bytes() for n in PNGS), "the embedded images are the PNG files"
    assert "http://" not in html and "https://" not in html
    refs = re.findall(r'\b(?:src|href|srcset|poster|data)\s*=\s*["\']?([^"\'\s>]*)', html, re.I)
    assert len(refs) >= len(PNGS)
    assert all(r.startswith(("data:", "#")) for r in refs), "only data: URIs and in-page links"
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "url(" not in html
    assert "<style>" in html


def test_html_headlines_and_status_meanings(tmp_path):
    m = metrics()
    write_report(deployed(), m, tmp_path / "r", facts=FACTS)
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert f"{m.issued:,}" in html
    for q in (50, 95, 99):
        assert figures.fmt_ms(m.percentile(q)) in html
    for code in (404, 496, 502, 503, 525, 526):
        name, meaning = STATUS_MEANINGS[code]
        assert f"<b>{name}</b>: {escape(meaning).replace('&#x27;', '&#39;')}" in html, code
    assert "unknown route" in html and "unknown authority" in html
    assert "delivered to the wrong app" not in html
    # facts are shown, nested ones too
    assert "simnet_version" in html and "61001" in html and "web.example.com" in html
    # the order a reader wants: headline, figures, instances, scenario
    positions = [html.index(s) for s in ('class="cards"', "<h2>Figures", "<h2>Instances",
                                          "<h2>Deployment", "<h2>Scenario")]
    assert positions == sorted(positions)


def test_misdelivered_requests_are_called_out(tmp_path):
    write_report(deployed(), metrics(misdelivered=7), tmp_path / "r")
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "7 requests were delivered to the wrong app" in html
    assert html.index("delivered to the wrong app") < html.index("<h2>Figures")


def test_oom_kills_are_called_out(tmp_path):
    write_report(deployed(), metrics(oom=2), tmp_path / "r")
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "2 OOM kills in 1 instance." in html


def test_html_escapes_scenario_text(tmp_path):
    write_report(deployed(description="<script>alert(1)</script> & co"), metrics(),
                 tmp_path / "r")
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html


def test_summary_json_is_metrics_summary_plus_run(tmp_path):
    m, s = metrics(misdelivered=2), scenario()
    write_report(derive(s), m, tmp_path / "r", facts=FACTS)
    raw = (tmp_path / "r" / "summary.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    expected = m.summary()
    for key, value in expected.items():
        assert data[key] == value, key
    assert data["scenario"] == "synthetic" and data["platform"] == "diego"
    assert data["seed"] == 42 and data["duration_s"] == 10.0
    assert data["facts"] == FACTS
    assert set(data) == set(expected) | {"scenario", "platform", "seed", "duration_s", "facts"}
    assert raw == json.dumps(data, sort_keys=True, indent=2) + "\n", "sorted keys, indent 2"


def test_wall_clock_facts_stay_out_of_summary_json(tmp_path):
    write_report(deployed(), metrics(), tmp_path / "a", facts={**FACTS, "wall_s": 1.25})
    write_report(deployed(), metrics(), tmp_path / "b", facts={**FACTS, "wall_s": 9.75})
    a = (tmp_path / "a" / "summary.json").read_bytes()
    assert a == (tmp_path / "b" / "summary.json").read_bytes()
    assert b"wall_s" not in a
    assert "wall_s 1.25" in (tmp_path / "a" / "report.html").read_text(encoding="utf-8")


def test_two_renders_are_byte_identical(tmp_path):
    write_report(deployed(), metrics(), tmp_path / "a", facts=FACTS)
    write_report(deployed(), metrics(), tmp_path / "b", facts=FACTS)
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    for name in ("summary.json", *PNGS):
        assert a[name] == b[name], name
    assert a["report.html"] == b["report.html"]
    # and again into the same folder, replacing it
    write_report(deployed(), metrics(), tmp_path / "a", facts=FACTS)
    assert files_of(tmp_path / "a") == a


def test_png_has_no_software_or_time_tag(tmp_path):
    write_report(deployed(), metrics(), tmp_path / "r")
    png = (tmp_path / "r" / "memory.png").read_bytes()
    assert b"matplotlib" not in png and b"tIME" not in png


@pytest.mark.parametrize("broken", ["figure", "html", "json"])
def test_failed_render_leaves_previous_report_intact(tmp_path, monkeypatch, broken):
    out = tmp_path / "reports" / "synthetic"
    write_report(deployed(), metrics(), out, facts=FACTS)
    (out / "notes.txt").write_text("earlier results")
    before = files_of(out)

    def boom(*_a, **_k):
        raise RuntimeError("render failed")

    target = {"figure": (figures, "memory"), "html": (render, "render_html"),
              "json": (render, "summary_json")}[broken]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(RuntimeError, match="render failed"):
        write_report(deployed(), metrics(seed=2), out, facts=FACTS)
    assert files_of(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["synthetic"], "no staging folder left"


def test_failed_first_render_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "latency_cdf", lambda _m: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_report(deployed(), metrics(), tmp_path / "reports" / "x")
    assert list((tmp_path / "reports").iterdir()) == []


def test_success_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    write_report(deployed(), metrics(), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)


def test_outdir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "r"
    f.write_text("not a folder")
    with pytest.raises(NotADirectoryError):
        write_report(deployed(), metrics(), f)
    assert f.read_text() == "not a folder"


@pytest.mark.parametrize("kwargs", [
    dict(requests=0, instances=0),  # nothing at all
    dict(requests=0, instances=2),  # instances, no traffic
    dict(requests=0, instances=2, base_mb=0.0),  # proxy disabled: no Envoy memory
    dict(requests=1, instances=1, duration_s=0.3, bin_s=1.0),  # one short bin
    dict(requests=50, instances=1, duration_s=2.5, bin_s=1.0),  # last bin is half a bin
])
def test_sparse_or_empty_metrics_render(tmp_path, kwargs):
    m = metrics(**kwargs)
    written = write_report(deployed(), m, tmp_path / "r")
    assert all(p.stat().st_size > 0 for p in written)
    data = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert data["requests"]["issued"] == m.issued
    if not m.issued:
        assert data["latency_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}
        assert "No request completed" in (tmp_path / "r" / "report.html").read_text()


def test_bare_metrics_object_renders(tmp_path):
    """A Metrics straight from its constructor: nothing filled in."""
    write_report(deployed(), Metrics(duration_s=10, bin_s=1), tmp_path / "r")
    assert (tmp_path / "r" / "report.html").stat().st_size > 0


def test_figures_summarise_many_instances():
    m = metrics(requests=100, instances=60, oom=1)
    for fn in (figures.memory, figures.connections):
        fig = fn(m)
        labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        assert len(labels) <= figures.TOP_N + 2, labels
        assert any(label.startswith("52 other instances") for label in labels)


def test_long_instance_lists_are_cut_in_html_not_json(tmp_path):
    m = metrics(requests=10, instances=render.MAX_ROWS + 5, oom=1)
    write_report(deployed(), m, tmp_path / "r")
    html = (tmp_path / "r" / "report.html").read_text()
    assert "5 more are in summary.json" in html
    assert html.count('class="oomrow"') == 1, "the OOM-killed instance is among those shown"
    data = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(data["instances"]) == render.MAX_ROWS + 5


def test_memory_figure_marks_each_quota():
    m = metrics(requests=10, instances=3)
    m.instances[2].quota_mb = 1024.0
    fig = figures.memory(m)
    dashed = {round(line.get_ydata()[0], 3) for ax in fig.axes for line in ax.get_lines()
              if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1}
    assert {256.0, 1024.0} <= dashed


def test_latency_percentiles_match_summary():
    m = metrics()
    ordered = sorted(m.latencies_ms)
    import numpy as np

    for q, key in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert figures.nearest_rank(np.array(ordered), q) == pytest.approx(
            m.summary()["latency_ms"][key], abs=1e-6)


def test_bin_edges_end_at_duration():
    m = Metrics(duration_s=2.5, bin_s=1.0)
    assert list(figures.bin_edges(m)) == [0.0, 1.0, 2.0, 2.5]


def test_counter_outcomes_with_unknown_status_render(tmp_path):
    m = metrics(requests=10)
    m.outcomes = Counter({200: 9, 418: 1})
    write_report(deployed(), m, tmp_path / "r")
    assert "418" in (tmp_path / "r" / "report.html").read_text()


def test_route_integrity_variants_side_by_side(tmp_path):
    """The bundled stale-route scenario: zero misdelivered with backend TLS, some without,
    and the comparison report shows both."""
    from simnet.lenses import compare
    from simnet.scenario.load import bundled

    outputs, files = compare([bundled("diego-route-integrity"), bundled("diego-route-integrity-legacy")],
                             tmp_path)
    tls, legacy = (o.metrics for o in outputs)
    assert tls.misdelivered == 0 and tls.endpoints_pruned > 0
    assert legacy.misdelivered > 0
    # misdelivery happens only while the routers hold the stale route: move at 6 s, 2 s delay
    busy = [k * legacy.bin_s for k, n in enumerate(legacy.misdelivered_per_bin) if n]
    assert busy and 6.0 <= min(busy) and max(busy) < 8.0
    html = (tmp_path / "diego-route-integrity-vs-diego-route-integrity-legacy" / "compare.html").read_text()
    assert "diego-route-integrity-legacy" in html and f"{legacy.misdelivered:,}" in html
    data = json.loads(files[1].read_text())
    assert [v["requests"]["misdelivered"] for v in data["variants"]] == [0, legacy.misdelivered]
    assert all(f.exists() for f in files)
    assert (tmp_path / "diego-route-integrity" / "report.html").exists()


# --- the Envoy memory model figure and the memory Diego reports ----------------------------


def _markers(fig, marker: str) -> set[tuple[float, float]]:
    return {(float(x), float(y)) for ax in fig.axes[:1] for line in ax.get_lines()
            if line.get_marker() == marker for x, y in zip(line.get_xdata(), line.get_ydata())}


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for leg in [ax.get_legend()] if leg
            for t in leg.get_texts()]


@pytest.mark.parametrize("mtls, kind", [(False, "tls"), (True, "mtls")])
def test_memory_model_figure_draws_the_kind_the_sidecars_use(mtls, kind):
    from simnet.model.memory import packaged_calibration

    proxy = {"require_and_verify_client_certificates": mtls,
             "trusted_ca_certificates": ["router-ca"] if mtls else []}
    m = metrics(requests=10, instances=3)
    m.instances[0].oom_kills = 1
    fig = figures.envoy_memory_model(deployed(proxy=proxy), m)
    assert f"{kind} listener" in fig.axes[0].get_title(loc="left")
    cal = packaged_calibration().kinds[kind]
    assert {(float(n), mb) for n, mb in cal.points} <= _markers(fig, "o")
    # each sidecar's peak is marked; the OOM-killed one apart
    peaks = {(float(i.peak_connections), round(i.peak_memory_mb, 3)) for i in m.instances[1:]}
    assert peaks <= _markers(fig, "D")
    killed = m.instances[0]
    assert _markers(fig, "X") == {(float(killed.peak_connections), round(killed.peak_memory_mb, 3))}
    texts = _legend_texts(fig)
    assert any(t.startswith("seed 002") for t in texts)
    assert any(t.startswith(f"{kind} model: {cal.base_mb:.1f} MB") for t in texts)


def test_memory_model_figure_draws_each_instances_own_footprint():
    """The figure draws the footprints the Deployment gave the sidecars (each with its own
    port mappings: an app with three ports has more listeners than one with one), not the
    calibration's one-mapping line: what the simulator used is what the reader sees."""
    from simnet.lenses import load_and_derive
    from simnet.scenario.load import bundled
    from simnet.sim.run import simulate

    d = derive(scenario(apps=[{"name": "web", "instances": 2, "ports": [8080]},
                              {"name": "api", "instances": 1, "ports": [8080, 9090, 7070]}]))
    own = {i.envoy for i in d.instances}
    assert len(own) == 2  # one footprint per mapping count
    m = metrics(requests=10, instances=3)
    fig = figures.envoy_memory_model(d, m)
    main = fig.axes[0]
    [inset] = main.child_axes  # the run's range up close

    def starts(ax, prefix: str = "") -> set[float]:
        return {round(float(line.get_ydata()[0]), 6) for line in ax.get_lines()
                if len(line.get_xdata()) == 2 and line.get_xdata()[0] == 0
                and line.get_label().startswith(prefix)}

    expected = {round(fp.base_mb, 6) for fp in own}
    assert expected <= starts(main, "this run's sidecars")
    assert starts(main, "this run's sidecars") == expected
    assert expected <= starts(inset)
    # the bundled default: every instance's own footprint is in the figure
    _, dep = load_and_derive(bundled())
    fig = figures.envoy_memory_model(dep, simulate(dep))
    assert {round(i.envoy.base_mb, 6) for i in dep.instances} == starts(fig.axes[0], "this run's sidecars")


def test_memory_model_figure_draws_the_oom_line_only_when_it_fits():
    m = metrics(requests=10, instances=2)
    m.instances[0].envoy_limit_mb, m.instances[1].envoy_limit_mb = 120.0, 5000.0
    fig = figures.envoy_memory_model(deployed(), m)
    ax = fig.axes[0]
    flat = {float(line.get_ydata()[0]) for line in ax.get_lines()
            if len(set(line.get_ydata())) == 1 and line.get_linestyle() == "--"}
    assert 120.0 in flat and 5000.0 not in flat
    assert ax.get_ylim()[1] < 5000
    assert "OOM line for Envoy above the chart: 5000 MB" in _legend_texts(fig)


def test_memory_model_figure_shows_a_manual_or_seed_model():
    m = metrics(requests=10, instances=1)
    manual = scenario(proxy={"memory": {"base_mb": 20, "per_connection_kb": 50}})
    fig = figures.envoy_memory_model(derive(manual), m)
    [line] = [line for line in fig.axes[0].get_lines()
              if line.get_label().startswith("this scenario's model (manual)")]
    (x0, x1), (y0, y1) = line.get_xdata(), line.get_ydata()
    assert y0 == 20 and (y1 - y0) / (x1 - x0) == pytest.approx(0.05)
    seed = figures.envoy_memory_model(deployed(proxy={"memory": {"model": "seed"}}), m)
    assert any(t.endswith("this scenario's model") for t in _legend_texts(seed))
    off = figures.envoy_memory_model(deployed(proxy={"enabled": False}), m)
    assert "proxy disabled" in " ".join(t.get_text() for t in off.axes[0].texts)


def test_report_shows_the_memory_diego_reports_rescaled_into_the_quota(tmp_path):
    from simnet.model.placement import Instance

    m = metrics(requests=10, instances=2)
    inst = m.instances[0]
    inst.quota_mb, inst.app_quota_mb, inst.envoy_limit_mb = 272.0, 256.0, 72.0  # 200 MB used
    inst.instance = Instance("g", "a", 0, 0, "198.19.0.1", "198.18.0.1", None, (), {},
                             quota_mb=272, base_used_mb=200.0, app_quota_mb=256)
    expected = (200 + inst.peak_memory_mb) * 256 / 272
    assert inst.reported_peak_mb == pytest.approx(expected)
    assert m.instances[1].reported_peak_mb is None  # a series that does not say
    write_report(deployed(), m, tmp_path / "r")
    html = (tmp_path / "r" / "report.html").read_text()
    assert "reported by Diego" in html and f"{expected:.4g} MB" in html
    data = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert data["instances"][0]["reported_memory_mb"] == round(expected, 6)
    assert data["instances"][1]["reported_memory_mb"] is None


def test_simulated_instances_report_their_rescaled_memory():
    from simnet.model.deployment import derive
    from simnet.scenario.load import load_text
    from simnet.sim.run import simulate

    scenario_, _ = load_text("""
name: t
duration_s: 3
cells: {count: 1, memory_mb: 4096}
proxy: {additional_memory_allocation_mb: 32}
apps: [{name: web, instances: 2, memory_mb: 256, memory_used_mb: 100,
        sidecars: [{name: s, memory_mb: 20}]}]
routes: [{host: web.example.com, app: web}]
clients: [{host: web.example.com, rate_per_s: 200}]
""")
    m = simulate(derive(scenario_))
    for inst in m.summary()["instances"]:
        assert inst["peak_memory_mb"] > 0
        assert inst["reported_memory_mb"] == pytest.approx(
            (100 + 20 + inst["peak_memory_mb"]) * 256 / (256 + 32), abs=1e-6)
        assert inst["reported_memory_mb"] < 100 + 20 + inst["peak_memory_mb"]
