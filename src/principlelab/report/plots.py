"""The campaign report's figures (matplotlib, Agg canvas, no pyplot state).

Every function returns PNG bytes. Figures are drawn on their own :class:`~matplotlib.figure.Figure`
with a :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, so the report neither needs nor
changes an interactive backend.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from principlelab.report.data import PromotedPoint, Promotion, mean_curve, pareto_front
from principlelab.report.importance import Importances, StudyImportance

DPI = 100
RHO, TAU = "\u03c1", "\u03c4"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters; a trailing recipe key (``[4ce6e1]``) is kept, since it is
    what tells two recipes with the same leading principles apart."""
    if len(text) <= limit:
        return text
    head, key = (text[:-9], text[-9:]) if re.search(r" \[[0-9a-f]{6}\]$", text) else (text, "")
    return head[: limit - len(key) - 1] + "…" + key


# ------------------------------------------------------------------------------------- leaderboard


def leaderboard_bars(rows: Sequence[dict[str, Any]], labels: Sequence[str], title: str, ylabel: str) -> bytes:
    """Horizontal bars of mean test accuracy (best on top) with the std over seeds as error bars."""
    return png(leaderboard_figure(rows, labels, title, ylabel))


def leaderboard_figure(rows: Sequence[dict[str, Any]], labels: Sequence[str], title: str, ylabel: str) -> Figure:
    """The figure of :func:`leaderboard_bars`."""
    n = len(rows)
    fig = new_figure(10, 1.6 + 0.42 * n)
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    means = [r["mean"] or 0.0 for r in rows]
    stds = [r["std"] or 0.0 for r in rows]
    ax.barh(ys, means, xerr=stds, color=[color(0)] * n, alpha=0.85, capsize=4,
            error_kw={"ecolor": "#333", "elinewidth": 1.2}, label="mean test accuracy")
    for y, mean, std, row in zip(ys, means, stds, rows):
        spread = "" if row["std"] is None else f" ± {std:.3f}"
        ax.text(min(mean + std, 1.0) + 0.01, y, f"{mean:.3f}{spread} (n={row['count']})", va="center", fontsize=8)
    ax.set_yticks(ys, [shorten(lbl, 70) for lbl in labels], fontsize=8)
    # the label reads above the recipe names: rotated beside a few bars, it was longer than the axis and clipped
    ax.annotate(ylabel, xy=(0, 1), xycoords="axes fraction", xytext=(-4, 6), textcoords="offset points",
                ha="right", va="bottom", fontsize=9)
    ax.set_xlim(0, 1.25)
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel("test accuracy (fraction correct; bar = mean over seeds, whisker = ± 1 std)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


# -------------------------------------------------------------------------------------- importance


def _importance_bars(ax: Any, imp: Importances, bar_color: str, rows: int = 0) -> None:
    """Bars best on top; ``rows`` (>= the bar count) keeps bar thickness equal across panels of a row."""
    names = list(imp.values)[::-1]
    values = [imp.values[k] for k in names]
    ax.barh(range(len(names)), values, color=bar_color, alpha=0.85, height=0.7)
    if rows:
        ax.set_ylim(len(names) - rows - 0.5, len(names) - 0.5)
    ax.set_yticks(range(len(names)), [shorten(n, 28) for n in names], fontsize=8)
    ax.set_xlim(0, max(1.0, max(values, default=0) * 1.05))
    ax.grid(axis="x", alpha=0.3)


def slot_importance(imp: StudyImportance, title: str) -> bytes:
    fig = new_figure(8, 1.4 + 0.45 * max(1, len(imp.slots.values)))
    ax = fig.add_subplot()
    _importance_bars(ax, imp.slots, color(0))
    ax.set_xlabel("importance for the objective (fANOVA, fraction of variance; sums to 1)")
    ax.set_ylabel("slot")
    ax.set_title(f"{title}: which slot's choice mattered ({imp.slots.n_trials} complete trials)")
    return png(fig)


def principle_importance(items: Sequence[Importances], colors: Callable[[str], str], title: str) -> bytes:
    """One panel per principle: the importance of its own parameters over the trials that chose it."""
    cols = 2 if len(items) > 1 else 1
    rows = math.ceil(len(items) / cols)
    heights = [max(len(it.values) for it in items[r * cols:(r + 1) * cols]) for r in range(rows)]
    fig = new_figure(11 if cols == 2 else 7, 1.0 + sum(0.75 + 0.26 * h for h in heights))
    grid = fig.add_gridspec(rows, cols, height_ratios=heights)
    for i, item in enumerate(items):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        _importance_bars(ax, item, colors(item.title.split("=")[0]), heights[i // cols])
        ax.set_title(f"{item.title} ({item.n_trials} trials)", fontsize=10)
        ax.set_xlabel("importance (fraction of variance)", fontsize=8)
    fig.suptitle(title)
    return png(fig)


# ----------------------------------------------------------------------------------- coarse vs fine


def promotion_scatter(items: Sequence[Promotion], title: str) -> bytes:
    """Per level pair: each promoted recipe's lower-level value vs its mean objective at the upper level."""
    fig = new_figure(6.5 * len(items), 5.2)
    for i, item in enumerate(items):
        ax = fig.add_subplot(1, len(items), i + 1)
        corr = item.corr
        stats = (f"Spearman {RHO} = {corr.spearman:.3f} (p = {corr.spearman_p:.3g})\n"
                 f"Kendall {TAU} = {corr.kendall:.3f} (p = {corr.kendall_p:.3g}), n = {corr.n}"
                 if corr.spearman == corr.spearman else f"{RHO}, {TAU} undefined (n = {corr.n})")
        pts: Sequence[PromotedPoint] = item.points
        ax.errorbar([p.coarse for p in pts], [p.fine_mean for p in pts], yerr=[p.fine_std for p in pts],
                    fmt="o", color=color(i), ecolor="#555", capsize=4, ms=7, label=f"promoted recipe\n{stats}")
        seen: dict[tuple[float, float], int] = {}
        for p in pts:
            where = (round(p.coarse, 4), round(p.fine_mean, 4))
            seen[where] = seen.get(where, -1) + 1  # stack the labels of coinciding points
            ax.annotate(p.recipe_key[:6], (p.coarse, p.fine_mean), textcoords="offset points",
                        xytext=(6, 4 + 9 * seen[where]), fontsize=7, color="#333")
        ax.set_xlabel(f"{item.lower}: objective when promoted (validation accuracy, fraction)")
        ax.set_ylabel(f"{item.upper}: mean objective over seeds (validation accuracy)")
        ax.set_title(f"{item.lower} → {item.upper}: {RHO} = {corr.spearman:.2f}, {TAU} = {corr.kendall:.2f}"
                     if corr.spearman == corr.spearman else f"{item.lower} → {item.upper}: {RHO}, {TAU} undefined")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.margins(0.15)
    fig.suptitle(title)
    return png(fig)


# --------------------------------------------------------------------------------------- pareto


def accuracy_vs_cost(levels: Sequence[tuple[str, list[tuple[float, float, float]]]], title: str) -> bytes:
    """Two panels (parameters; MACs spent in training and evaluation): every complete run per level, its
    Pareto front as a line.

    ``levels``: ``(level, [(params, macs, test accuracy), ...])``.
    """
    fig = new_figure(12, 5)
    panels = (("params", "final parameters (count, log scale)"),
              ("MACs", "compute: training + evaluation MACs (log scale)"))
    for col, (what, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, (level, points) in enumerate(levels):
            pts = [(p[col], p[2]) for p in points if p[col] and p[col] > 0]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color=color(i), alpha=0.45,
                       label=f"{level}: {len(pts)} complete runs")
            front = pareto_front(pts)
            runs = f"{len(front)} run" + "s" * (len(front) != 1)
            ax.plot([p[0] for p in front], [p[1] for p in front], drawstyle="steps-post", color=color(i), lw=1.8,
                    marker="D", ms=6, mec="black", label=f"{level}: Pareto front ({runs})")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (fraction correct)")
        ax.set_title(f"accuracy vs {what}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return png(fig)


# -------------------------------------------------------------------------------- learning curves


def learning_curves(groups: Sequence[tuple[str, list[Any]]], title: str) -> bytes:
    """Validation accuracy and loss per epoch, one line per recipe (mean over its seeds, band ± std)."""
    fig = new_figure(12, 5.2)
    panels = (("val_accuracy", "validation accuracy (fraction)"),
              ("val_loss", "validation loss (each recipe's own loss)"))
    for col, (key, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, (label, runs) in enumerate(groups):
            epochs, mean, std = mean_curve(runs, key)
            if not epochs:
                continue
            ax.plot(epochs, mean, color=color(i), lw=1.8, marker="o" if len(epochs) <= 12 else None, ms=3,
                    label=f"{shorten(label, 48)} (n={len(runs)})")
            if any(std):
                ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=color(i), alpha=0.15)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" (")[0] + " per epoch")
        ax.grid(alpha=0.3)
        if key == "val_loss":
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    return png(fig)


__all__ = ["PALETTE", "accuracy_vs_cost", "color", "leaderboard_bars", "learning_curves", "new_figure", "png",
           "principle_importance", "promotion_scatter", "shorten", "slot_importance"]
