"""A sweep report's figures, in the report's fixed style (see ``simnet.report.figures``).

Each takes the sweep's points (``simnet.report.sweep.PointResult``) and returns a new Figure.
A parameter whose values are all numbers gets a numeric axis; any other (a ``choice`` of
names, booleans) gets one category per value, in the order the sweep ran them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from simnet.report.figures import (
    ERROR_COLOUR,
    OK_COLOUR,
    PALETTE,
    empty,
    figure,
    ms_tick,
    style,
)

MAX_HEAT_BINS = 8  # a continuous parameter is cut into this many equal bins in a heat map
MAX_PAIRS = 3  # heat maps drawn: the first parameter pairs


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _axis(points, name: str) -> tuple[list[float], list[str] | None]:
    """Each point's x for ``name``; category labels when the parameter is not numeric."""
    raw = [p.params[name] for p in points]
    if _numeric(raw):
        return [float(v) for v in raw], None
    labels = list(dict.fromkeys(repr(v) for v in raw))
    return [float(labels.index(repr(v))) for v in raw], labels


def _runs(points, xs, metric: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(x, v) for p, x in zip(points, xs) for v in p.values(metric)]
    return np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])


def _mean_line(ax, x: np.ndarray, y: np.ndarray, colour: str) -> None:
    levels = np.unique(x)
    if len(levels) < len(x):  # values repeat (a grid, replications): their mean as a line
        ax.plot(levels, [y[x == v].mean() for v in levels], color=colour, linewidth=1.6,
                marker="o", markersize=3, label="mean")


def metrics_vs(points, name: str) -> Figure:
    """Error rate (left) and p99 latency (right) of every run against one parameter."""
    with style():
        fig = figure()
        left, right = fig.subplots(1, 2)
        xs, labels = _axis(points, name)
        for ax, metric, colour, title in ((left, "error_rate", ERROR_COLOUR, "Error rate"),
                                          (right, "p99_ms", PALETTE[0], "p99 latency")):
            ax.set_title(f"{title} vs {name}")
            x, y = _runs(points, xs, metric)
            if not len(x):
                empty(ax, "no finished runs")
                continue
            ax.scatter(x, y, s=14, color=colour, alpha=0.45, linewidths=0, label="run")
            _mean_line(ax, x, y, colour)
            ax.set_xlabel(name)
            if labels:
                ax.set_xticks(range(len(labels)), labels)
            elif all(isinstance(p.params[name], int) for p in points):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if metric == "error_rate":
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
                ax.set_ylim(bottom=0)
            else:
                ax.yaxis.set_major_formatter(FuncFormatter(ms_tick))
                ax.set_ylabel("ms")
                ax.set_ylim(bottom=0)
            ax.legend(loc="best")
        return fig


def throughput_vs(points, name: str) -> Figure:
    """Offered and achieved throughput (requests/s answered 200) of every run against one
    parameter: where they part, the deployment is saturated."""
    with style():
        fig = figure()
        ax = fig.add_subplot()
        ax.set_title(f"Offered vs achieved throughput vs {name}")
        xs, labels = _axis(points, name)
        drawn = False
        for metric, colour, label in (("offered_per_s", PALETTE[1], "offered"),
                                      ("throughput_per_s", PALETTE[0], "achieved (200)")):
            x, y = _runs(points, xs, metric)
            if not len(x):
                continue
            ax.scatter(x, y, s=14, color=colour, alpha=0.45, linewidths=0, label=label)
            _mean_line(ax, x, y, colour)
            drawn = True
        if not drawn:
            empty(ax, "no finished runs")
            return fig
        ax.set_xlabel(name)
        if labels:
            ax.set_xticks(range(len(labels)), labels)
        elif all(isinstance(p.params[name], int) for p in points):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("requests/s")
        ax.set_ylim(bottom=0)
        ax.legend(loc="best")
        return fig


def headroom(points) -> Figure:
    """Per run: the least Envoy memory headroom against the additional allocation."""
    with style():
        fig = figure()
        ax = fig.add_subplot()
        ax.set_title("Envoy memory headroom vs additional memory allocation")
        pairs = [(r["additional_memory_mb"], r["memory_headroom_mb"], r.get("oom_kills") or 0)
                 for p in points for r in p.runs if r.get("memory_headroom_mb") is not None]
        if not pairs:
            empty(ax, "no Envoy memory in these runs (proxy disabled, or no finished run)")
            return fig
        x, y, oom = (np.array(v, dtype=float) for v in zip(*pairs))
        ax.axhline(0, color=ERROR_COLOUR, linewidth=1, linestyle=(0, (4, 2)))
        ax.scatter(x[oom == 0], y[oom == 0], s=16, color=OK_COLOUR, alpha=0.6, linewidths=0,
                   label="no OOM kill")
        if (oom > 0).any():
            ax.scatter(x[oom > 0], y[oom > 0], s=22, color=ERROR_COLOUR, marker="x",
                       label="an Envoy was OOM-killed")
        ax.set_xlabel("additional memory allocation per instance (MB)")
        ax.set_ylabel("least headroom at peak (MB)")
        ax.legend(loc="best")
        return fig


def pairs(points, names: Sequence[str]) -> list[tuple[str, str]]:
    """Parameter pairs worth a heat map: both take more than one value."""
    varied = [n for n in names if len({repr(p.params[n]) for p in points}) > 1]
    return list(combinations(varied, 2))[:MAX_PAIRS]


def _bins(values: list[float], labels: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Cell index per value, and the cells' labels: one cell per distinct value when few."""
    levels = sorted(set(values))
    if labels is not None or len(levels) <= MAX_HEAT_BINS:
        names = labels if labels is not None else [f"{v:g}" for v in levels]
        return np.array([levels.index(v) for v in values]), names
    edges = np.linspace(levels[0], levels[-1], MAX_HEAT_BINS + 1)
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, MAX_HEAT_BINS - 1)
    return idx, [f"{a:.3g}–{b:.3g}" for a, b in zip(edges[:-1], edges[1:])]


def heatmap(points, a: str, b: str, metric: str) -> Figure:
    """Mean ``metric`` of the runs in each (a, b) cell."""
    with style():
        fig = figure()
        ax = fig.add_subplot()
        ax.set_title(f"Mean {metric} over {a} and {b}")
        xa, la = _axis(points, a)
        xb, lb = _axis(points, b)
        ia, na = _bins(xa, la)
        ib, nb = _bins(xb, lb)
        sums, counts = np.zeros((len(nb), len(na))), np.zeros((len(nb), len(na)))
        for p, i, j in zip(points, ia, ib):
            for v in p.values(metric):
                sums[j, i] += v
                counts[j, i] += 1
        if not counts.any():
            empty(ax, "no finished runs")
            return fig
        grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="Reds",
                          vmin=0, vmax=max(float(np.nanmax(grid)), 1e-9))
        ax.grid(False)
        ax.set_xticks(range(len(na)), na, rotation=30 if len(na) > 5 else 0)
        ax.set_yticks(range(len(nb)), nb)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        for j in range(len(nb)):
            for i in range(len(na)):
                if counts[j, i]:
                    ax.text(i, j, f"{grid[j, i]:.3g}", ha="center", va="center", fontsize=7,
                            color="white" if grid[j, i] > 0.6 * np.nanmax(grid) else "#212529")
        fig.colorbar(image, ax=ax, label=metric)
        return fig

