"""The report's figures: plain matplotlib, Agg only, one function per figure.

Every function takes a :class:`~simnet.sim.metrics.Metrics` and returns a new
:class:`matplotlib.figure.Figure` drawn on its own Agg canvas: no pyplot, so no display, no
global figure registry, nothing to close, and the caller's backend (a notebook's) untouched.
Sizes, DPI, fonts and style are fixed and :func:`save_png` writes no timestamp or software
tag, so the same metrics give byte-identical PNGs run to run. Empty data (no requests, no
instances, proxy disabled) gives a figure that says so instead of an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import matplotlib
import numpy as np  # matplotlib depends on numpy
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from simnet.model.deployment import Deployment
from simnet.model.memory import Footprint
from simnet.sim.metrics import InstanceSeries, Metrics

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 4.0, 110
TOP_N = 8  # instances drawn and named one by one; the rest are summarised
OTHERS_AS_LINES = 20  # up to this many "other" instances are drawn as thin grey lines
CDF_POINTS = 3000  # a CDF of 10^6 latencies is drawn through this many quantiles

OK_COLOUR = "#2b8a3e"
ERROR_COLOUR = "#c92a2a"
QUOTA_COLOUR = "#495057"
OTHER_COLOUR = "#adb5bd"
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
           "#2ca02c", "#7f7f7f", "#d62728")

STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e9ecef",
    "grid.linewidth": 0.8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "svg.hashsalt": "simnet",
    "axes.axisbelow": True,
    "path.simplify": True,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}

PNG_METADATA = {"Software": None}  # Agg would otherwise stamp the matplotlib version


@contextmanager
def style() -> Iterator[None]:
    """The fixed style; figures are built and saved inside it."""
    with matplotlib.rc_context(STYLE):
        yield


def figure(height_in: float = HEIGHT_IN) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def empty(ax, message: str, *, keep_axes: bool = False) -> None:
    """Say there is nothing to draw; the axes go too, unless they still mean something."""
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center",
            color="#868e96", fontsize=10)
    if keep_axes:
        return
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def ms_tick(v: float, _pos=None) -> str:
    """Axis tick label for a latency in ms."""
    if v >= 1000:
        return f"{v / 1000:g} s"
    return f"{v:g}"


def fmt_ms(v: float) -> str:
    """A latency for people: three significant figures, seconds from 1000 ms up."""
    if v >= 1000:
        return f"{v / 1000:.3g} s"
    if v >= 100:
        return f"{v:.0f} ms"
    return f"{v:.3g} ms"


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _label(inst: InstanceSeries) -> str:
    return f"{_short(inst.app)}/{inst.index} {inst.guid[:8]}"


def bin_edges(metrics: Metrics) -> np.ndarray:
    """Time-bin edges in seconds; the last bin ends at the run's duration (it may be short)."""
    edges = np.arange(metrics.bins + 1, dtype=float) * metrics.bin_s
    edges[-1] = max(metrics.duration_s, edges[-2] + 1e-9)
    return edges


def _series(values: Sequence[float], n: int) -> np.ndarray:
    """A per-bin series padded (or cut) to n bins, so a short list never breaks a plot."""
    out = np.zeros(n, dtype=float)
    v = np.asarray(values[:n], dtype=float)
    out[: len(v)] = v
    return out


# --- latency -----------------------------------------------------------------------------


def nearest_rank(ordered: np.ndarray, q: float) -> float:
    """Nearest-rank percentile of sorted values: the same rule as ``Metrics.summary``."""
    return float(ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1])


def latency_cdf(metrics: Metrics) -> Figure:
    """Cumulative distribution of request latency, log-scale x, with p50/p95/p99 marked."""
    with style():
        fig = figure()
        ax = fig.add_subplot()
        lat = np.sort(np.frombuffer(metrics.latencies_ms, dtype=float)) \
            if len(metrics.latencies_ms) else np.zeros(0)
        n = len(lat)
        ax.set_title(f"Latency, client to client ({n:,} completed requests)")
        if n == 0:
            empty(ax, "no completed requests")
            return fig
        frac = np.arange(1, n + 1, dtype=float) / n
        if n > CDF_POINTS:  # every quantile of the body, and the tail in finer steps
            idx = np.unique(np.concatenate([
                np.linspace(0, n - 1, CDF_POINTS * 2 // 3),
                np.linspace(int(n * 0.99), n - 1, CDF_POINTS // 3),
            ]).astype(int))
            x, y = lat[idx], frac[idx]
        else:
            x, y = lat, frac
        positive = lat[lat > 0]
        log = len(positive) > 0
        if log:
            floor = positive[0]
            x = np.maximum(x, floor)  # a 0 ms latency sits at the left edge of a log axis
        # A CDF is a step function: it jumps at each observed value.
        ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0.0], y]), where="post",
                color="#1c7ed6", linewidth=1.6, label="_cdf")
        marks = [(50, "p50", "#2b8a3e", (0, (4, 2))), (95, "p95", "#e67700", (0, (4, 2))),
                 (99, "p99", "#c92a2a", (0, (4, 2)))]
        for q, name, colour, dash in marks:
            v = nearest_rank(lat, q)
            xv = max(v, floor) if log else v
            ax.axvline(xv, color=colour, linestyle=dash, linewidth=1.1,
                       label=f"{name} = {fmt_ms(v)}")
            ax.plot([xv], [q / 100], marker="o", markersize=4, color=colour, label="_mark")
        lo, hi = float(x[0]), float(lat[-1] if not log else max(lat[-1], floor))
        if log:
            ax.set_xscale("log")
            if hi / lo < 1.5:  # (nearly) constant latency: give the step room either side
                lo, hi = lo / 1.5, hi * 1.5
            else:
                lo, hi = lo / 1.15, hi * 1.15
            ax.set_xlim(lo, hi)
            decades = math.log10(hi / lo)
            subs = (1.0, 2.0, 5.0) if decades > 1.2 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
            if decades < 0.4:
                subs = tuple(float(s) for s in range(1, 10))
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.xaxis.set_major_formatter(FuncFormatter(ms_tick))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("latency (ms, log scale)")
        else:
            ax.set_xlim(-1, 1)
            ax.set_xlabel("latency (ms)")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        ax.set_ylabel("requests answered within x")
        ax.legend(loc="lower right")
        return fig


# --- throughput --------------------------------------------------------------------------


def throughput(metrics: Metrics) -> Figure:
    """Responses and error responses per second, per time bin (errors on their own scale)."""
    with style():
        fig = figure(HEIGHT_IN + 0.6)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
        edges = bin_edges(metrics)
        width = np.diff(edges)
        n = metrics.bins
        req = _series(metrics.requests_per_bin, n)
        err = _series(metrics.errors_per_bin, n)
        ok_rate, err_rate = (req - err) / width, err / width
        top.set_title(f"Throughput (responses per second, {metrics.bin_s:g} s bins, "
                      "by completion time)")
        if req.sum() == 0:
            top.stairs(req / width, edges, baseline=None, color=OK_COLOUR, linewidth=1.0)
            top.set_ylim(0, 1)
            top.set_yticks([0, 1])
            top.set_ylabel("responses/s")
            empty(top, "no responses", keep_axes=True)
        else:
            top.stairs(req / width, edges, fill=True, color=OK_COLOUR, alpha=0.18,
                       label="_total")
            top.stairs(req / width, edges, baseline=None, color=OK_COLOUR, linewidth=1.3,
                       label="all responses/s")
            offered = _series(metrics.issued_per_bin, n) / width
            if offered.any():
                top.stairs(offered, edges, baseline=None, color=QUOTA_COLOUR, linewidth=1.0,
                           linestyle="--", label="offered (sent)/s")
            if err.sum():
                top.stairs(ok_rate, edges, baseline=None, color=OK_COLOUR, linewidth=0.8,
                           linestyle=":", label="200 OK/s")
            top.set_ylim(0, max(1.0, float((req / width).max()), float(offered.max())) * 1.12)
            top.set_ylabel("responses/s")
            top.yaxis.set_major_locator(MaxNLocator(5))
            top.legend(loc="lower right", ncols=2)
        if err.sum() == 0:
            bottom.stairs(err_rate, edges, baseline=None, color=ERROR_COLOUR, linewidth=1.0)
            bottom.set_ylim(0, 1)
            bottom.set_yticks([0, 1])
            empty(bottom, "no error responses", keep_axes=True)
        else:
            bottom.stairs(err_rate, edges, fill=True, color=ERROR_COLOUR, alpha=0.85)
            bottom.set_ylim(0, float(err_rate.max()) * 1.45)  # room for the total
            bottom.yaxis.set_major_locator(MaxNLocator(3))
            total = int(err.sum())
            bottom.text(0.995, 0.92, f"{total:,} error responses in all", ha="right",
                        va="top", transform=bottom.transAxes, color=ERROR_COLOUR, fontsize=8)
        bottom.set_ylabel("errors/s")
        bottom.set_xlabel("time (s)")
        bottom.set_xlim(0, edges[-1])
        return fig


# --- per-instance figures ----------------------------------------------------------------


def _rank(instances: Sequence[InstanceSeries], peaks: Sequence[float],
          top_n: int) -> tuple[list[InstanceSeries], list[InstanceSeries]]:
    """The instances to name, highest first, and the rest in run order.

    Instances that were OOM-killed come first whatever their peak (a kill resets Envoy, so
    its peak may look modest), then the highest ``peaks``; ties keep the run's order.
    """
    order = sorted(range(len(instances)),
                   key=lambda i: (-(instances[i].oom_kills > 0), -peaks[i], i))
    chosen = set(order[:top_n])
    return [instances[i] for i in order[:top_n]], [inst for i, inst in enumerate(instances)
                                                   if i not in chosen]


def _others(ax, rest: Sequence[InstanceSeries], values: Callable[[InstanceSeries], np.ndarray],
            edges: np.ndarray, what: str) -> None:
    """The instances not named: thin grey lines, or their min-max band and mean when many.

    The band is accumulated one instance at a time: 10^5 instances never become one array.
    """
    if not rest:
        return
    several = "s" if len(rest) > 1 else ""
    if len(rest) <= OTHERS_AS_LINES:
        series = [values(i) for i in rest]
        peak = max(float(v.max()) for v in series)
        label = f"{len(rest):,} other instance{several} (peak ≤ {peak:g}{what})"
        for k, v in enumerate(series):
            ax.stairs(v, edges, baseline=None, color=OTHER_COLOUR, linewidth=0.8, alpha=0.8,
                      label=label if k == 0 else "_other", zorder=1)
        return
    lo = hi = total = None
    for inst in rest:
        v = values(inst)
        if lo is None:
            lo, hi, total = v.copy(), v.copy(), v.copy()
        else:
            np.minimum(lo, v, out=lo)
            np.maximum(hi, v, out=hi)
            total += v
    label = f"{len(rest):,} other instance{several} (range, peak ≤ {float(hi.max()):g}{what})"
    ax.stairs(hi, edges, baseline=lo, fill=True, color=OTHER_COLOUR, alpha=0.45, label=label,
              zorder=1)
    ax.stairs(total / len(rest), edges, baseline=None, color="#868e96", linewidth=0.8,
              linestyle="--", label="their mean", zorder=1)


def _legend(fig: Figure) -> None:
    """The instances' legend, right of the plot; OOM-killed instances in red."""
    legend = fig.legend(loc="outside right upper")
    for text in legend.get_texts():
        if "OOM kill" in text.get_text():
            text.set_color(ERROR_COLOUR)


def _oom_note(inst: InstanceSeries) -> str:
    return f", {inst.oom_kills} OOM kill{'s' if inst.oom_kills != 1 else ''}" \
        if inst.oom_kills else ""


def memory(metrics: Metrics, top_n: int = TOP_N) -> Figure:
    """Envoy memory per instance over time (MB), with the container quotas dashed.

    Envoy's footprint is usually a few percent of the container quota; when the quota is far
    above it the y axis is broken so both the growth and the quota stay readable.
    """
    insts = metrics.instances
    with style():
        fig = figure(HEIGHT_IN + 0.4)
        title = "Envoy sidecar memory (high-water mark, MB)"
        n = metrics.bins
        if not insts:
            ax = fig.add_subplot()
            ax.set_title(title)
            empty(ax, "no app instances")
            return fig

        def mem(i: InstanceSeries) -> np.ndarray:
            return _series(i.memory_mb, n)

        peaks = [max(i.memory_mb[:n], default=0.0) for i in insts]
        peak = float(max(peaks))
        if peak <= 0:
            ax = fig.add_subplot()
            ax.set_title(title)
            empty(ax, "no sidecar memory recorded (proxy disabled?)")
            return fig
        edges = bin_edges(metrics)
        low = float(min(min(i.memory_mb[:n], default=0.0) if len(i.memory_mb) >= n else 0.0
                        for i in insts))
        # The line that matters is where Envoy's memory OOM-kills the container: the quota
        # minus what the app and its sidecar processes use (the quota itself without it).
        quotas: dict[float, list[str]] = {}
        limited = any(i.envoy_limit_mb is not None for i in insts)
        for i in insts:
            line = i.quota_mb if i.envoy_limit_mb is None else i.envoy_limit_mb
            apps = quotas.setdefault(float(line), [])
            if i.app not in apps:
                apps.append(i.app)
        qmin, qmax = min(quotas), max(quotas)
        broken = qmax > 4 * peak
        if broken:
            qax, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 4])
            qax.set_title(title)
            span = max(qmax - qmin, 0.0)
            pad = max(span * 0.15, qmax * 0.04)
            qax.set_ylim(max(0.0, qmin - pad), qmax + pad)
            qax.spines["bottom"].set_visible(False)
            qax.tick_params(axis="x", bottom=False, labelbottom=False)
            qax.yaxis.set_major_locator(MaxNLocator(2 if span else 1))
            qax.set_yticks(sorted(quotas))
            ax.spines["top"].set_visible(True)
            ax.spines["top"].set_linestyle((0, (2, 2)))
            ax.spines["top"].set_color("#adb5bd")
            # the break marks, on the left spine of both axes
            kw = dict(marker=[(-1, -0.5), (1, 0.5)], markersize=9, linestyle="none",
                      color="k", mec="k", mew=1, clip_on=False)
            qax.plot([0], [0], transform=qax.transAxes, **kw)
            ax.plot([0], [1], transform=ax.transAxes, **kw)
            spread = peak - low
            lo = 0.0 if low < 0.5 * peak else max(0.0, low - max(spread * 0.25, peak * 0.02))
            ax.set_ylim(lo, peak + max(spread * 0.25, peak * 0.02))
            quota_axes = qax
        else:
            ax = fig.add_subplot()
            ax.set_title(title)
            ax.set_ylim(0, max(qmax, peak) * 1.1)
            quota_axes = ax
        for q, apps in sorted(quotas.items()):
            quota_axes.axhline(q, color=QUOTA_COLOUR, linestyle=(0, (5, 3)), linewidth=1.1,
                               label="_quota")
            names = ", ".join(apps[:4]) + (f" and {len(apps) - 4} more" if len(apps) > 4 else "")
            what = "OOM line (quota minus app)" if limited else "container quota"
            quota_axes.annotate(f"{what} {q:g} MB: {names}", (0.005, q),
                                xycoords=("axes fraction", "data"), xytext=(0, 2),
                                textcoords="offset points", va="bottom", ha="left",
                                fontsize=7.5, color=QUOTA_COLOUR)
        top, rest = _rank(insts, peaks, top_n)
        for k, inst in enumerate(top):
            m = mem(inst)
            share = float(m.max(initial=0)) / inst.quota_mb if inst.quota_mb else 0.0
            ax.stairs(m, edges, baseline=None, color=PALETTE[k % len(PALETTE)],
                      linewidth=1.5, zorder=3,
                      label=f"{_label(inst)}: {m.max(initial=0):.4g} MB, {share:.1%} of quota"
                            f"{_oom_note(inst)}")
        _others(ax, rest, mem, edges, " MB")
        ax.set_ylabel("MB")
        ax.set_xlabel("time (s)")
        ax.set_xlim(0, edges[-1])
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        _legend(fig)
        return fig


def connections(metrics: Metrics, top_n: int = TOP_N) -> Figure:
    """Concurrent router connections per sidecar over time (maximum in each bin)."""
    insts = metrics.instances
    with style():
        fig = figure()
        ax = fig.add_subplot()
        ax.set_title("Concurrent connections per sidecar (maximum per time bin)")
        if not insts:
            empty(ax, "no app instances")
            return fig
        n = metrics.bins
        edges = bin_edges(metrics)

        def conns(i: InstanceSeries) -> np.ndarray:
            return _series(i.conns_max, n)

        peaks = [max(i.conns_max[:n], default=0) for i in insts]
        top, rest = _rank(insts, peaks, top_n)
        for k, inst in enumerate(top):
            c = conns(inst)
            ax.stairs(c, edges, baseline=None, color=PALETTE[k % len(PALETTE)],
                      linewidth=1.5, zorder=3,
                      label=f"{_label(inst)}: peak {int(c.max(initial=0))}{_oom_note(inst)}")
        _others(ax, rest, conns, edges, "")
        peak = float(max(max(peaks), 0))
        ax.set_ylim(0, max(peak, 1.0) * 1.12)
        ax.yaxis.set_major_locator(MaxNLocator(6, integer=True))
        ax.set_ylabel("open connections")
        ax.set_xlabel("time (s)")
        ax.set_xlim(0, edges[-1])
        _legend(fig)
        return fig


def load(metrics: Metrics, top_n: int = TOP_N) -> Figure:
    """Busy share and queue over time: each instance's app workers (the busiest named) and
    each router's cores, per time bin."""
    insts, routers = metrics.instances, [r for r in metrics.routers if r.utilisation_per_bin]
    with style():
        fig = figure(HEIGHT_IN + 1.2)
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.set_title("Load over time: share of workers busy (top) and requests waiting (bottom)")
        if not insts and not routers:
            empty(top, "no app instances and no router cores")
            return fig
        n = metrics.bins
        edges = bin_edges(metrics)
        ranked, rest = _rank(insts, [i.utilisation for i in insts], top_n)
        for k, inst in enumerate(ranked):
            colour = PALETTE[k % len(PALETTE)]
            top.stairs(_series(inst.utilisation_per_bin, n), edges, baseline=None, color=colour,
                       linewidth=1.4, label=f"{_label(inst)} app: {inst.utilisation:.0%} busy, "
                       f"peak queue {inst.peak_queue:,}")
            bottom.stairs(_series(inst.queue_per_bin, n), edges, baseline=None, color=colour,
                          linewidth=1.4)
        _others(top, rest, lambda i: _series(i.utilisation_per_bin, n), edges, "")
        _others(bottom, rest, lambda i: _series(i.queue_per_bin, n), edges, "")
        for r in routers:
            top.stairs(_series(r.utilisation_per_bin, n), edges, baseline=None, color=QUOTA_COLOUR,
                       linewidth=1.1, linestyle="--",
                       label=f"router {r.index} cores: {r.utilisation:.0%} busy, "
                       f"peak queue {r.peak_queue:,}")
            bottom.stairs(_series(r.queue_per_bin, n), edges, baseline=None, color=QUOTA_COLOUR,
                          linewidth=1.1, linestyle="--")
        top.set_ylim(0, 1.08)
        top.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        top.set_ylabel("busy")
        bottom.set_ylabel("waiting (mean)")
        waiting = [max(i.queue_per_bin, default=0.0) for i in insts]
        waiting += [max(r.queue_per_bin, default=0.0) for r in routers]
        bottom.set_ylim(0, max(1.0, max(waiting, default=0.0) * 1.12))
        bottom.set_xlabel("time (s)")
        bottom.set_xlim(0, edges[-1])
        _legend(fig)
        return fig


# --- reachability ------------------------------------------------------------------------

REACH_ROWS = 40  # sockets drawn; longer matrices are cut (summary.json has every row)
REACH_COLOURS = {  # what a connection from the source needs at its easiest, one colour each
    "none": ("#f1f3f5", "no path"),
    "loopback": ("#a5d8ff", "from inside the container only"),
    "plain": ("#ff8787", "plain TCP"),
    "tls": ("#ffd43b", "TLS, no client certificate"),
    "mtls": ("#69db7c", "mTLS: client certificate"),
}
REACH_SOURCE_NAMES = {"external": "external client\n(via a route)", "router": "router\n(directly)",
                      "peer": "another\ncontainer", "local": "same\ncontainer"}


def _reach_category(cell) -> str:
    if cell.level == "none":
        return "none"
    return "loopback" if cell.loopback else cell.level


def _reach_text(cell) -> str:
    short = {"plain": "plain", "tls": "TLS", "mtls": "mTLS"}
    text = "—" if cell.level == "none" else short[cell.level]
    if cell.granted:
        text += f"\n{short[cell.granted]} with {'+'.join(cell.grants)}"
    return text


def reachability(matrix) -> Figure:
    """Sources x sockets of one instance per app (a ``ReachMatrix``): each cell coloured by
    what the easiest connection from that source needs; a hatched cell is a path that exists
    only once the platform grants a network policy or security group."""
    from matplotlib.patches import Patch, Rectangle

    rows = list(matrix.rows[:REACH_ROWS])
    sources = list(REACH_SOURCE_NAMES)
    with style():
        fig = figure(max(2.6, 1.9 + 0.3 * len(rows)))
        ax = fig.add_subplot()
        ax.set_title(f"Who can open a connection, and with what ({matrix.platform})", pad=32)
        if not rows:
            empty(ax, "no running instances")
            return fig
        ax.grid(False)
        for y, row in enumerate(rows):
            for x, cell in enumerate(row.cells):
                colour = REACH_COLOURS[_reach_category(cell)][0]
                ax.add_patch(Rectangle((x, y), 1, 1, facecolor=colour, edgecolor="white",
                                       linewidth=1.5, hatch="///" if cell.granted else None))
                ax.text(x + 0.5, y + 0.5, _reach_text(cell), ha="center", va="center",
                        fontsize=7 if cell.granted else 8, color="#212529")
        for y in range(1, len(rows)):
            if rows[y].app != rows[y - 1].app:
                ax.axhline(y, color="#495057", linewidth=1.2)
        ax.set_xlim(0, len(sources))
        ax.set_ylim(len(rows), 0)
        ax.set_xticks([x + 0.5 for x in range(len(sources))],
                      [REACH_SOURCE_NAMES[s] for s in sources])
        ax.xaxis.tick_top()
        ax.set_yticks([y + 0.5 for y in range(len(rows))],
                      [f"{_short(r.app)}: {r.label}" for r in rows])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        handles = [Patch(facecolor=c, edgecolor="#adb5bd", label=label)
                   for c, label in REACH_COLOURS.values()]
        handles.append(Patch(facecolor="white", edgecolor="#495057", hatch="///",
                             label="hatched: more opens with a network policy / security group"))
        if len(matrix.rows) > len(rows):
            handles.append(Patch(facecolor="white", edgecolor="white",
                                 label=f"{len(matrix.rows) - len(rows)} more sockets in summary.json"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3)
        return fig


# --- the Envoy memory model -------------------------------------------------------------

SEED_COLOUR = "#868e96"
KIND_COLOURS = {"tcp": "#1f77b4", "tls": "#ff7f0e", "mtls": "#9467bd", "http1": "#17becf",
                "http2": "#8c564b"}


def _draw_seed(ax, xmax: float, *, ours: bool = False, rule: bool = False) -> None:
    """Seed 002's Envoy (5-10 MB + 30 KB per connection) as a band with its midline; ``rule``
    adds its allocation rule, 10 + 0.03*N MB."""
    from simnet.model.memory import KB_PER_MB, SEED, SEED_RULE

    x = np.array([0.0, xmax])
    per_mb = SEED.per_connection_kb / KB_PER_MB
    ax.fill_between(x, 5 + per_mb * x, 10 + per_mb * x, color=SEED_COLOUR, alpha=0.15,
                    linewidth=0, label="_seed band")
    ax.plot(x, SEED.base_mb + per_mb * x, color="#212529" if ours else SEED_COLOUR,
            linewidth=1.6 if ours else 1.1, linestyle="solid" if ours else (0, (6, 3)),
            label="seed 002 (2017 Envoy): 5-10 MB + 30 KB/connection"
                  + (": this scenario's model" if ours else ""))
    if rule:
        ax.plot(x, [SEED_RULE.memory_mb(n) for n in x], color="#212529", linewidth=1.1, linestyle=(0, (1, 2)),
                label="seed's rule: additional allocation 10 + 0.03*N MB")


def _draw_kind(ax, calibration, kind: str, xmax: float, colour: str, *,
               label_prefix: str = "", after_close: bool = True,
               label_points: bool = True) -> None:
    """A listener kind's measured points, its fitted line (dashed where it extrapolates past
    the measured range) and the reading after closing every connection."""
    k = calibration.kinds[kind]
    fp = calibration.footprint(kind)
    measured_to = max((n for n, _ in k.points), default=0)
    solid_to = min(xmax, measured_to) if measured_to else xmax
    ax.plot([0, solid_to], [fp.memory_mb(0), fp.memory_mb(solid_to)], color=colour,
            linewidth=1.5, label=f"{label_prefix}{kind} model: {fp.base_mb:.1f} MB + "
                                 f"{fp.per_connection_kb:.1f} KB/connection")
    if xmax > solid_to:
        ax.plot([solid_to, xmax], [fp.memory_mb(solid_to), fp.memory_mb(xmax)], color=colour,
                linewidth=1.2, linestyle=(0, (2, 2)), label="_extrapolated")
    if k.points:
        ax.plot([n for n, _ in k.points], [mb for _, mb in k.points], linestyle="none",
                marker="o", markersize=4.5, color=colour,
                label=f"{label_prefix}{kind} measured (private memory)" if label_points
                else "_measured")
    if after_close and k.after_close_mb is not None and measured_to:
        ax.plot([measured_to], [k.after_close_mb], linestyle="none", marker="o", markersize=7,
                markerfacecolor="white", markeredgecolor=colour, markeredgewidth=1.3,
                label=f"{kind} after closing all {measured_to:,}: "
                      f"{k.retained_fraction:.0%} of their memory kept", zorder=2)


def memory_calibration(calibration=None, kinds: Sequence[str] | None = None, *,
                       seed_rule: bool = True) -> Figure:
    """Measured vs modelled Envoy private memory per listener kind (the calibration's readings
    and fitted lines), with seed 002's 2017 figures and, optionally, its allocation rule."""
    from simnet.model.memory import packaged_calibration

    cal = calibration or packaged_calibration()
    kinds = list(kinds or cal.kinds)
    xmax = float(max((n for k in kinds for n, _ in cal.kinds[k].points), default=1000))
    with style():
        fig = figure(HEIGHT_IN + 0.8)
        ax = fig.add_subplot()
        ax.set_title(f"Envoy {cal.envoy_version} private memory vs concurrent connections "
                     f"(measured {cal.measured_on})")
        _draw_seed(ax, xmax, rule=seed_rule)
        for n, kind in enumerate(kinds):
            _draw_kind(ax, cal, kind, xmax, KIND_COLOURS.get(kind, PALETTE[n % len(PALETTE)]),
                       after_close=False, label_points=False)
        ax.plot([], [], linestyle="none", marker="o", markersize=4.5, color=SEED_COLOUR,
                label="dots: measured on the real Envoy")
        ax.set_xlim(0, xmax * 1.02)
        ax.set_ylim(0, None)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
        ax.set_xlabel("concurrent connections (the high-water mark)")
        ax.set_ylabel("private memory (MB)")
        ax.legend(loc="upper left")
        return fig


def _draw_peaks(ax, insts: Sequence[InstanceSeries], *, label: bool = True) -> None:
    """Each sidecar's peak (connections, MB), once per distinct point; OOM-killed in red."""
    pairs = sorted({(i.peak_connections, round(i.peak_memory_mb, 3), i.oom_kills > 0)
                    for i in insts})
    ok = [(n, mb) for n, mb, killed in pairs if not killed]
    killed = [(n, mb) for n, mb, k in pairs if k]
    if ok:
        ax.plot([n for n, _ in ok], [mb for _, mb in ok], linestyle="none", marker="D",
                markersize=6, color=OK_COLOUR, markeredgecolor="white", zorder=4,
                label=f"this run: each sidecar's peak ({len(insts):,} instances)" if label
                else "_peak")
    if killed:
        ax.plot([n for n, _ in killed], [mb for _, mb in killed], linestyle="none", marker="X",
                markersize=8, color=ERROR_COLOUR, markeredgecolor="white", zorder=5,
                label="this run: peak of an OOM-killed sidecar" if label else "_killed")


def _scenario_line(ax, memory, xmax: float) -> None:
    """A ``manual`` memory model's own line (the seed's is drawn by :func:`_draw_seed`)."""
    if memory.model == "manual":
        base, per = memory.base_mb, memory.per_connection_kb
        ax.plot([0, xmax], [base, base + per * xmax / 1000], color="#212529", linewidth=1.6,
                label=f"this scenario's model (manual): {base:g} MB + {per:g} KB/connection")


def sidecar_footprints(deployment: Deployment) -> dict[Footprint, int]:
    """Each distinct Envoy footprint of the deployment's sidecars, with its port mappings."""
    return {i.envoy: len(i.proxy.mappings) for i in deployment.instances if i.proxy is not None}


def envoy_memory_model(deployment: Deployment, metrics: Metrics, calibration=None) -> Figure:
    """The memory model behind a run: for the listener kind its sidecars use, the
    calibration's measured points and fitted line, seed 002's line, the scenario's own model
    when it is ``seed`` or ``manual``, each sidecar's own footprint (its port mappings add to
    the one-mapping line) as the Deployment derived it, each sidecar's peak connections and
    peak memory, and the containers' OOM line for Envoy when it fits the axes. When the run's
    peaks are far below the measured range an inset shows them up close."""
    from matplotlib.lines import Line2D

    from simnet.model.memory import packaged_calibration

    cal = calibration or packaged_calibration()
    proxy = deployment.scenario.proxy
    kind = deployment.listener_kind
    own = sidecar_footprints(deployment)
    with style():
        fig = figure(HEIGHT_IN + 0.8)
        ax = fig.add_subplot()
        ax.set_title(f"Envoy memory model: {kind} listener, Envoy {cal.envoy_version} "
                     f"(measured {cal.measured_on})")
        if not proxy.enabled:
            empty(ax, "proxy disabled: no Envoy sidecar")
            return fig
        if kind not in cal.kinds:
            empty(ax, f"the calibration has no {kind} listener")
            return fig
        insts = metrics.instances
        colour = KIND_COLOURS.get(kind, PALETTE[0])
        model = proxy.memory.model
        measured_to = max((n for n, _ in cal.kinds[kind].points), default=0)
        peak_n = max((i.peak_connections for i in insts), default=0)
        xmax = float(max(measured_to, peak_n, 100)) * 1.04
        _draw_seed(ax, xmax, ours=model == "seed")
        _draw_kind(ax, cal, kind, xmax, colour,
                   label_prefix="" if model == "calibrated" else "calibrated ")
        if model == "calibrated":
            _draw_footprints(ax, own, xmax, colour)
        _draw_peaks(ax, insts)
        # the axes fit the calibration, the seed and the run; a steep manual line is cut off
        top = max([float(np.max(line.get_ydata())) for line in ax.get_lines()]
                  + [i.peak_memory_mb for i in insts])
        _scenario_line(ax, proxy.memory, xmax)
        ylim = top * 1.08
        limits = sorted({float(i.quota_mb if i.envoy_limit_mb is None else i.envoy_limit_mb)
                         for i in insts})
        for q in (q for q in limits if 0 < q <= ylim):
            ax.axhline(q, color=QUOTA_COLOUR, linestyle=(0, (5, 3)), linewidth=1.1,
                       label="_oom")
            ax.annotate(f"OOM line for Envoy {q:g} MB", (0.005, q),
                        xycoords=("axes fraction", "data"), xytext=(0, 2),
                        textcoords="offset points", va="bottom", ha="left", fontsize=7.5,
                        color=QUOTA_COLOUR)
        handles, labels = ax.get_legend_handles_labels()
        hidden = [q for q in limits if q > ylim]
        if hidden:
            handles.append(Line2D([], [], color=QUOTA_COLOUR, linestyle=(0, (5, 3))))
            labels.append("OOM line for Envoy above the chart: "
                          + ", ".join(f"{q:g}" for q in hidden[:4]) + " MB"
                          + (" and more" if len(hidden) > 4 else ""))
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, ylim)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
        ax.set_xlabel("concurrent connections (the high-water mark)")
        ax.set_ylabel("Envoy private memory (MB)")
        ax.legend(handles, labels, loc="upper left")
        if insts and peak_n < xmax / 10:
            _run_inset(ax, own, colour, proxy.memory, insts, peak_n, limits)
        return fig


def _draw_footprints(ax, own: dict[Footprint, int], xmax: float, colour: str, *,
                     label: bool = True) -> None:
    """The sidecars' own footprints, one line each (``own``: footprint -> port mappings)."""
    for fp, mappings in sorted(own.items(), key=lambda kv: kv[1]):
        ax.plot([0, xmax], [fp.memory_mb(0), fp.memory_mb(xmax)], color=colour, linewidth=0.9,
                linestyle=(0, (1, 1)),
                label=(f"this run's sidecars, {mappings} port mapping{'s' if mappings > 1 else ''}: "
                       f"{fp.base_mb:.2f} MB + {fp.per_connection_kb:.1f} KB/connection")
                if label else "_footprint")


def _run_inset(ax, own: dict[Footprint, int], colour: str, memory,
               insts: Sequence[InstanceSeries], peak_n: int, limits: Sequence[float]) -> None:
    """The run's own range up close: each sidecar's own footprint, the seed's and the
    scenario's model lines, each sidecar's peak, and the OOM lines that fall in it."""
    inset = ax.inset_axes([0.64, 0.07, 0.34, 0.36])
    xmax = max(peak_n * 1.3, 10.0)
    _draw_seed(inset, xmax, ours=memory.model == "seed")
    for fp in own:
        inset.plot([0, xmax], [fp.memory_mb(0), fp.memory_mb(xmax)], color=colour, linewidth=1.5,
                   label="_footprint")
    _scenario_line(inset, memory, xmax)
    _draw_peaks(inset, insts, label=False)
    lows = [float(np.min(line.get_ydata())) for line in inset.get_lines()]
    highs = [float(np.max(line.get_ydata())) for line in inset.get_lines()]
    span = max(highs) - min(lows)
    lo, hi = max(0.0, min(lows) - 0.15 * span - 0.5), max(highs) + 0.15 * span + 0.5
    for q in (q for q in limits if lo < q < hi):
        inset.axhline(q, color=QUOTA_COLOUR, linestyle=(0, (5, 3)), linewidth=1.0)
    inset.set_xlim(0, xmax)
    inset.set_ylim(lo, hi)
    inset.set_title("this run's range", fontsize=8, fontweight="normal",
                    bbox=dict(facecolor="white", edgecolor="none", pad=1))
    inset.tick_params(labelsize=7)
    inset.set_facecolor("white")
    for side in ("top", "right"):
        inset.spines[side].set_visible(True)


FIGURES: dict[str, Callable[[Metrics], Figure]] = {
    "latency_cdf.png": latency_cdf,
    "throughput.png": throughput,
    "memory.png": memory,
    "connections.png": connections,
}
"""File name -> figure function, in the order the report shows them."""


def save_png(fig: Figure, target: str | Path | IO[bytes]) -> None:
    """Write a figure as PNG with no timestamp or version tag: same figure, same bytes."""
    with style():
        fig.savefig(target, format="png", dpi=DPI, metadata=PNG_METADATA)


def png_bytes(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    save_png(fig, buf)
    return buf.getvalue()


# --- comparing runs ----------------------------------------------------------------------


def compare_latency(runs: Sequence[tuple[str, Metrics]]) -> Figure:
    """Latency CDFs of several runs on one log axis."""
    with style():
        fig = figure()
        ax = fig.add_subplot()
        ax.set_title("Latency, client to client, per variant")
        drawn = False
        for k, (label, m) in enumerate(runs):
            lat = np.sort(np.frombuffer(m.latencies_ms, dtype=float)) if len(m.latencies_ms) \
                else np.zeros(0)
            if not len(lat):
                continue
            lat = np.maximum(lat, 1e-3)
            n = len(lat)
            idx = np.unique(np.linspace(0, n - 1, min(n, CDF_POINTS)).astype(int))
            ax.step(lat[idx], (idx + 1) / n, where="post", color=PALETTE[k % len(PALETTE)],
                    linewidth=1.5, label=f"{label}: p99 {fmt_ms(nearest_rank(lat, 99))}")
            drawn = True
        if not drawn:
            empty(ax, "no completed requests")
            return fig
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(ms_tick))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        ax.set_ylabel("requests answered within x")
        ax.legend(loc="lower right")
        return fig


def compare_errors(runs: Sequence[tuple[str, Metrics]]) -> Figure:
    """Per variant over time: non-200 responses (top) and requests answered by the wrong app
    (bottom; they are 200s, so the top panel cannot show them)."""
    with style():
        fig = figure(HEIGHT_IN + 1.2)
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.set_title("Error responses and misdelivered requests per second, per variant")
        peaks = [0.0, 0.0]
        for k, (label, m) in enumerate(runs):
            edges = bin_edges(m)
            width = np.diff(edges)
            colour = PALETTE[k % len(PALETTE)]
            dash = (0, (4, 2)) if k % 2 else "solid"  # equal series stay visible
            for ax, series, i, what in ((top, m.errors_per_bin, 0, "errors"),
                                        (bottom, m.misdelivered_per_bin, 1, "misdelivered")):
                rate = _series(series, m.bins) / width
                peaks[i] = max(peaks[i], float(rate.max()) if len(rate) else 0.0)
                ax.stairs(rate, edges, baseline=None, color=colour, linewidth=1.4, linestyle=dash,
                          label=f"{label}: {int(sum(series)):,} {what}")
        for ax, peak, unit in ((top, peaks[0], "errors/s"), (bottom, peaks[1], "misdelivered/s")):
            ax.set_ylim(0, max(1.0, peak) * 1.2)
            ax.set_ylabel(unit)
            ax.legend(loc="upper right")
        bottom.set_xlabel("time (s)")
        return fig
