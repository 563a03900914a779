"""Write a run's report folder: report.html, summary.json and the figures as PNG.

``write_report`` renders everything into a fresh directory beside the target and only then
swaps it into place, so a run that fails half-way leaves the previous report as it was.

summary.json is for machines and for diffs: ``Metrics.summary()`` plus the scenario's name,
platform, seed and duration and the derived deployment ``facts``, with sorted keys -- the same
scenario and seed give the same bytes. Facts that depend on the wall clock (``wall_s``,
``generated_at``, ... see :func:`is_volatile`) are shown in the HTML only.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from simnet import __version__
from simnet.files import staged
from simnet.report import figures
from simnet.model.deployment import Deployment
from simnet.report.format import ENV, ms, rate
from simnet.scenario.schema import Scenario
from simnet.sim.metrics import Metrics

# --- what the report says about status codes ---------------------------------------------

STATUS_MEANINGS: dict[int, tuple[str, str]] = {
    200: ("OK", "the app answered"),
    404: ("unknown route", "gorouter has no route for the requested host"),
    496: ("client certificate rejected",
          "the backend (Envoy with mTLS on) rejected the router's client certificate"),
    502: ("bad gateway", "dial failure: nothing listening at the endpoint, connection "
          "refused, or the instance died mid-request"),
    503: ("no endpoint / route integrity",
          "no endpoint left for the route, or the backend certificate's SAN is not the "
          "instance the route names (stale route caught; endpoint pruned)"),
    525: ("TLS handshake failure", "router and sidecar could not complete a TLS handshake "
          "(e.g. no cipher suite in common)"),
    526: ("unknown authority", "the backend certificate is signed by a CA the router "
          "does not trust"),
}
"""Status -> (short name, what gorouter means by it)."""

FIGURE_FILES: tuple[tuple[str, str, str, str], ...] = (
    ("latency_cdf.png", "latency_cdf", "Latency",
     "Share of requests answered within a given time, client to client, including "
     "handshakes on new connections and retries. Dashed lines mark p50, p95 and p99."),
    ("throughput.png", "throughput", "Throughput and errors",
     "Responses per second in each time bin, counted when they complete, beside the offered "
     "load (requests sent per second, dashed): a gap between them that grows is a queue, a "
     "plateau below it is capacity; below, the non-200 responses on their own scale."),
    ("memory.png", "memory", "Sidecar memory",
     "Envoy's resident memory per instance: it follows the high-water mark of concurrent "
     "connections and is not given back. The dashed lines are each container's OOM line for "
     "Envoy: the quota (app quota plus the additional allocation) minus what the app and its "
     "sidecar processes use. Envoy crossing it gets the container OOM-killed."),
    ("connections.png", "connections", "Connections per sidecar",
     "Concurrent router connections each sidecar holds (maximum in each time bin); idle "
     "keep-alive connections count."),
    ("load.png", "load", "Load over time",
     "Per time bin, the share of each instance's app workers that were busy and the mean "
     "number of requests waiting for one (the busiest instances named), and the same for "
     "each router's cores (dashed). A worker share pinned at 100% with a growing queue is "
     "saturation."),
)
"""(file, function in :mod:`simnet.report.figures`, heading, caption), in report order.
Functions are looked up when the report is written, so tests can replace one."""

REACH_FIGURE = (
    "reachability.png", "reachability", "Who can open a connection, and with what",
    "One running instance per app (every instance of an app is configured alike): for each "
    "socket in the container (app ports, sidecar process ports, Envoy's listeners and admin "
    "API) and each source, what the easiest connection from that source needs. Red: plain "
    "TCP; yellow: TLS without a client certificate; green: a client certificate from the CAs "
    "the sidecar trusts; blue: from inside the container only; grey: no path. Hatched: more "
    "opens (the second line) once the platform grants a container-to-container network policy "
    "or an application security group, which a scenario cannot. For an external client the "
    "connection that needs this is the router's. simnet reach lists every path.")
"""Drawn from the derived deployment (``write_report(..., reach=...)``), after the others."""

MODEL_FIGURE = (
    "envoy_memory_model.png", "envoy_memory_model", "Envoy memory model",
    "The model behind the sidecar memory figure, for the listener kind this scenario's "
    "sidecars use (mtls when the proxy requires client certificates, else tls): the private "
    "memory the real Envoy took at each number of concurrent connections (dots), the fitted "
    "line (dashed past the measured range), what Envoy still held after closing them all "
    "(hollow dot), seed 002's 2017 Envoy (grey band and dashed line), and each sidecar's peak "
    "in this run (green diamonds; red crosses were OOM-killed). A scenario with "
    "memory.model seed or manual is simulated with that model's line (black). The dashed "
    "horizontal line is the containers' OOM line for Envoy, when it fits the axes.")
"""Drawn from the deployment (its sidecars' footprints) and the run, after the sidecar memory figure."""

REPORT_FILES = ("report.html", "summary.json") + tuple(f[0] for f in FIGURE_FILES) \
    + (MODEL_FIGURE[0],)
"""The files every report has; a report given a reachability matrix adds ``reachability.png``."""

_AFTER_MEMORY = [f[0] for f in FIGURE_FILES].index("memory.png") + 1
SHOWN_FIGURES = (*FIGURE_FILES[:_AFTER_MEMORY], MODEL_FIGURE, *FIGURE_FILES[_AFTER_MEMORY:],
                 REACH_FIGURE)
"""Every figure, in the order the report shows them."""

VOLATILE_FACTS = frozenset({
    "wall_s", "wall_time", "wall_time_s", "wall_clock_s", "elapsed_s", "generated_at",
    "started_at", "finished_at", "timestamp", "hostname",
})
MAX_ROWS = 200  # longer lists (10^5 instances) are cut in the HTML; summary.json has them all

# --- summary.json ------------------------------------------------------------------------


def is_volatile(key: str) -> bool:
    """A fact that changes from run to run of the same scenario (wall time...): HTML only."""
    k = str(key).lower()
    return k in VOLATILE_FACTS or k.startswith("wall")


def jsonable(value: Any) -> Any:
    """Plain JSON values (dict with str keys, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "model_dump"):  # pydantic
        return jsonable(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def summary(scenario: Scenario, metrics: Metrics, facts: Mapping | None = None, *,
            numbers: dict | None = None) -> dict:
    """What summary.json holds: no wall-clock values, so equal runs give equal bytes."""
    out = dict(numbers if numbers is not None else metrics.summary())
    out.update({
        "scenario": scenario.name,
        "platform": scenario.platform,
        "seed": scenario.seed,
        "duration_s": scenario.duration_s,
        "facts": {k: v for k, v in jsonable(dict(facts or {})).items() if not is_volatile(k)},
    })
    return out


def summary_json(scenario: Scenario, metrics: Metrics, facts: Mapping | None = None, *,
                 numbers: dict | None = None) -> str:
    return json.dumps(summary(scenario, metrics, facts, numbers=numbers), sort_keys=True,
                      indent=2, allow_nan=False) + "\n"


# --- the HTML ----------------------------------------------------------------------------


def _node(value: Any, depth: int = 0) -> dict:
    """A plain JSON value as a tree the template draws: scalar, kv table, table or list."""
    if isinstance(value, dict):
        if not value:
            return {"kind": "scalar", "text": "—", "code": False}
        if isinstance(value.get("dist"), str) and all(
                not isinstance(v, (dict, list)) for v in value.values()):
            # a latency distribution reads best on one line: "lognormal: median_ms 10, sigma 0.4"
            rest = ", ".join(f"{k} {_scalar(v)}" for k, v in value.items() if k != "dist")
            return {"kind": "scalar", "text": f"{value['dist']}: {rest}" if rest
                    else value["dist"], "code": False}
        return {"kind": "kv", "rows": [(k, _node(v, depth + 1)) for k, v in value.items()]}
    if isinstance(value, list):
        if not value:
            return {"kind": "scalar", "text": "—", "code": False}
        shown, more = value[:MAX_ROWS], max(0, len(value) - MAX_ROWS)
        if all(isinstance(v, dict) for v in shown) and depth < 4:
            cols: list[str] = []
            for row in shown:
                cols.extend(k for k in row if k not in cols)
            return {"kind": "table", "cols": cols, "more": more,
                    "rows": [[_node(row[c], depth + 1) if c in row else _blank()
                              for c in cols] for row in shown]}
        if all(not isinstance(v, (dict, list)) for v in shown):
            texts = [_scalar(v) for v in shown]
            if sum(len(t) for t in texts) <= 80 and not more:
                return {"kind": "scalar", "text": ", ".join(texts), "code": False}
            return {"kind": "list", "entries": [_node(v, depth + 1) for v in shown], "more": more}
        return {"kind": "list", "entries": [_node(v, depth + 1) for v in shown], "more": more}
    if isinstance(value, str) and value[:1] in "[{" and len(value) > 20:
        return {"kind": "scalar", "text": _json_lines(value), "code": True}
    return {"kind": "scalar", "text": _scalar(value), "code": False}


def _json_lines(text: str) -> str:
    """A JSON array kept verbatim (compact) but one element per line, for reading."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    if not isinstance(parsed, list) or len(parsed) < 2:
        return text
    return "[" + ",\n ".join(json.dumps(v, separators=(",", ":")) for v in parsed) + "]"


def _blank() -> dict:
    return {"kind": "scalar", "text": "", "code": False}


def _scalar(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


HOP_MEANINGS = {
    "network": "on the wire: client to load balancer to router to sidecar to app and back",
    "connect": "TCP and TLS handshakes of new connections (client and backend), on the wire "
               "and on CPU",
    "queueing": "waiting for a server: an app worker, an Envoy worker thread, a router core",
    "cpu": "Envoy's and the router's CPU per request",
    "service": "the app serving the request (its service_time)",
}


def _breakdown(parts: Mapping[str, float]) -> list[tuple[str, str, str, str]]:
    """(hop, mean ms, share, what it is) per part of a request's time."""
    total = sum(parts.values())
    return [(hop, ms(v), rate(v, total) if total else "—", HOP_MEANINGS[hop])
            for hop, v in parts.items()]


def _instances(metrics: Metrics) -> tuple[list[dict], int]:
    rows = []
    for i in metrics.instances:
        share = i.peak_memory_mb / i.quota_mb if i.quota_mb else 0.0
        reported = i.reported_peak_mb
        rows.append({
            "label": f"{i.app}/{i.index}", "guid": i.guid, "cell": i.cell,
            "peak_connections": i.peak_connections,
            "connections_opened": i.connections_opened,
            "peak_memory": f"{i.peak_memory_mb:.4g}", "quota": f"{i.quota_mb:g}",
            "share": share, "share_text": f"{share:.1%}" if share >= 0.001 or not share
            else "< 0.1%",
            "bar": max(0.0, min(100.0, share * 100)), "oom_kills": i.oom_kills,
            "reported": "—" if reported is None else f"{reported:.4g} MB",
            "reported_of": "" if reported is None else f"of {i.app_quota_mb:g} MB",
            "utilisation": f"{i.utilisation:.1%}", "mean_queue": f"{i.mean_queue:.3g}",
            "peak_queue": i.peak_queue, "refused": i.refused,
            "envoy_utilisation": f"{i.envoy_utilisation:.1%}", "overflow": i.overflow,
        })
    if len(rows) <= MAX_ROWS:
        return rows, 0
    ranked = sorted(range(len(rows)), key=lambda k: (-rows[k]["oom_kills"], -rows[k]["share"],
                                                     -rows[k]["peak_connections"], k))
    return [rows[k] for k in sorted(ranked[:MAX_ROWS])], len(rows) - MAX_ROWS


def context(scenario: Scenario, metrics: Metrics, pngs: Mapping[str, bytes],
            facts: Mapping | None = None, *, numbers: dict | None = None) -> dict:
    """Everything the template shows, already formatted (``numbers``: metrics.summary())."""
    s = numbers if numbers is not None else metrics.summary()
    req, lat = s["requests"], s["latency_ms"]
    completed, outcomes = req["completed"], metrics.outcomes
    ok = outcomes.get(200, 0)
    statuses = []
    for code in sorted(outcomes):
        name, meaning = STATUS_MEANINGS.get(code, ("", ""))
        count = outcomes[code]
        statuses.append({"code": code, "count": count, "name": name, "meaning": meaning,
                         "share": f"{100 * count / completed:.2f} %" if completed else "—",
                         "error": code != 200})
    instances, instances_cut = _instances(metrics)
    oom = sum(i.oom_kills for i in metrics.instances)
    scenario_dump = scenario.model_dump(mode="json")
    for k in ("name", "description"):
        scenario_dump.pop(k, None)
    facts = jsonable(dict(facts or {}))
    return {
        "title": f"simnet report: {scenario.name}",
        "scenario": scenario, "version": __version__,
        "headline": [
            ("requests", f"{req['issued']:,}",
             f"{completed:,} completed" + (f", {req['timed_out']:,} timed out"
                                           if req["timed_out"] else "")
             + (f", {req['in_flight']:,} still in flight at the end" if req["in_flight"] else "")),
            ("success rate", rate(ok, completed), f"{ok:,} answered 200"),
            ("p50", ms(lat["p50"]), "median latency"),
            ("p95", ms(lat["p95"]), ""),
            ("p99", ms(lat["p99"]), f"max {ms(lat['max'])}"),
            ("errors", f"{completed - ok:,}", f"{req['retries']:,} retries, "
                                               f"{s['endpoints_pruned']:,} endpoints pruned"),
        ],
        "secondary": [
            ("connections opened to sidecars", f"{s['connections_opened']:,}"),
            ("TLS handshakes", f"{s['tls_handshakes']:,}"),
            ("instances", f"{len(metrics.instances):,}"),
            ("OOM kills", f"{oom:,}"),
        ],
        "errors": completed - ok,
        "statuses": statuses,
        "misdelivered": req["misdelivered"],
        "oom": oom, "oom_instances": sum(1 for i in metrics.instances if i.oom_kills),
        "figures": [
            {"file": file, "heading": heading, "caption": caption,
             "src": "data:image/png;base64," + base64.b64encode(pngs[file]).decode("ascii")}
            for file, _fn, heading, caption in SHOWN_FIGURES if file in pngs
        ],
        "instances": instances, "instances_cut": instances_cut,
        "causes": [(cause, f"{n:,}", rate(n, req["issued"])) for cause, n in
                   sorted(s["errors_by_cause"].items(), key=lambda kv: (-kv[1], kv[0]))],
        "breakdown": _breakdown(s["time_breakdown_ms"]),
        "routers": [{**r, "utilisation": f"{r['utilisation']:.1%}",
                     "mean_in_progress": f"{r['mean_in_progress']:.3g}",
                     "mean_time": ms(r["mean_time_ms"])} for r in s["routers"]],
        "changes": facts.get("control_plane_changes", []),
        "facts": _node(stable) if (stable := {k: v for k, v in facts.items()
                                              if not is_volatile(k)}) else None,
        "volatile": [(k, _scalar(v)) for k, v in facts.items() if is_volatile(k)],
        "scenario_tree": _node(scenario_dump),
    }


def render_html(scenario: Scenario, metrics: Metrics, pngs: Mapping[str, bytes],
                facts: Mapping | None = None, *, numbers: dict | None = None) -> str:
    """report.html as a string; ``pngs`` maps each figure's file name to its PNG bytes."""
    return ENV.get_template("report.html.j2").render(
        context(scenario, metrics, pngs, facts, numbers=numbers))


# --- writing the folder ------------------------------------------------------------------


def write_report(deployment: Deployment, metrics: Metrics, outdir: Path, *,
                 facts: dict | None = None, reach: Any = None,
                 calibration: Any = None) -> list[Path]:
    """Write report.html, summary.json and the figures of a run of ``deployment`` into
    ``outdir``; return their paths.

    ``reach`` (a ``simnet.model.reachability.ReachMatrix``) adds the reachability figure;
    ``calibration`` (a ``simnet.model.memory.Calibration``, default the packaged one) is the
    one the memory model figure draws.

    Everything is rendered into a new directory beside ``outdir`` first; only when all of it
    is written does it replace ``outdir`` (the old one is removed afterwards). An exception
    on the way leaves an existing ``outdir`` untouched and no temporary directory behind.
    """
    scenario = deployment.scenario
    with staged(outdir) as staging:
        numbers = metrics.summary()  # sorts every latency: once is enough
        pngs: dict[str, bytes] = {}
        for file, fn, _heading, _caption in FIGURE_FILES:
            fig = getattr(figures, fn)(metrics)
            pngs[file] = figures.png_bytes(fig)
            (staging / file).write_bytes(pngs[file])
        file, fn = MODEL_FIGURE[:2]
        pngs[file] = figures.png_bytes(getattr(figures, fn)(deployment, metrics, calibration))
        (staging / file).write_bytes(pngs[file])
        if reach is not None:
            file, fn = REACH_FIGURE[:2]
            pngs[file] = figures.png_bytes(getattr(figures, fn)(reach))
            (staging / file).write_bytes(pngs[file])
        (staging / "summary.json").write_text(
            summary_json(scenario, metrics, facts, numbers=numbers), encoding="utf-8")
        (staging / "report.html").write_text(
            render_html(scenario, metrics, pngs, facts, numbers=numbers), encoding="utf-8")
    extra = (REACH_FIGURE[0],) if reach is not None else ()
    return [Path(outdir) / f for f in REPORT_FILES + extra]


