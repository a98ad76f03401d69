"""Figures of single runs: growth over training, per-epoch curves, and a drawing of the final network."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Polygon
from matplotlib.ticker import MaxNLocator

from principlelab.report.data import growth_trajectory, hidden_units_delta, is_growth_event
from principlelab.report.plots import color, new_figure, png, shorten
from principlelab.studies.db import GrowthEventRow, RunRow

MAX_UNITS_DRAWN = 64
"""Wider layers are drawn as this many evenly spaced units (the drawing says so)."""


def principle_colors(events: Sequence[GrowthEventRow]) -> dict[str, str]:
    """A color per ``slot: principle`` that made growth events, in order of first appearance."""
    names = list(dict.fromkeys(f"{e.slot}: {e.principle}" for e in events if is_growth_event(e)))
    return {name: color(i + 2) for i, name in enumerate(names)}


def _growth_axes(ax_units: Any, ax_params: Any, run: RunRow, events: Sequence[GrowthEventRow],
                 colors: dict[str, str]) -> None:
    traj = growth_trajectory(run, events)
    if traj is None:
        for ax in (ax_units, ax_params):
            ax.text(0.5, 0.5, "no per-epoch curve recorded for this run", ha="center", va="center",
                    transform=ax.transAxes)
        return
    for ax, key, ylabel in ((ax_units, "units", "hidden units (all hidden layers)"),
                            (ax_params, "params", "parameters (count)")):
        ax.step(traj["steps"], traj[key], where="post", color=color(0), lw=1.8)
        ax.plot(traj["epoch_steps"], traj[f"epoch_{key}"], "o", color="black", ms=3)
        for event in events:
            if is_growth_event(event):
                ax.axvline(max(event.step, 0), color=colors[f"{event.slot}: {event.principle}"], lw=1.2, ls="--",
                           alpha=0.8)
        ax.set_xlabel("training step (minibatches)")
        ax.set_ylabel(ylabel)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)


def _growth_legend(fig: Any, events: Sequence[GrowthEventRow], colors: dict[str, str]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        if is_growth_event(event):
            counts[f"{event.slot}: {event.principle}"] += 1
    handles = [Line2D([], [], color=color(0), lw=1.8, label="size: steps at each event, meets each epoch's record"),
               Line2D([], [], color="black", marker="o", ls="", ms=3, label="recorded at the end of each epoch")]
    handles += [Line2D([], [], color=c, ls="--", lw=1.2, label=f"growth event by {name} ({counts[name]})")
                for name, c in colors.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8)


def growth_curves(items: Sequence[tuple[str, RunRow, list[GrowthEventRow]]], title: str) -> bytes:
    """A row per run: hidden units and parameters over training steps, growth events as dashed lines."""
    colors = principle_colors([e for _, _, events in items for e in events])
    fig = new_figure(12, 0.9 + 3.0 * len(items))
    for i, (label, run, events) in enumerate(items):
        ax_units = fig.add_subplot(len(items), 2, 2 * i + 1)
        ax_params = fig.add_subplot(len(items), 2, 2 * i + 2)
        _growth_axes(ax_units, ax_params, run, events, colors)
        n_growth = sum(1 for e in events if is_growth_event(e))
        ax_units.set_title(shorten(label, 72), fontsize=10)
        ax_params.set_title(f"run {run.id} ({run.level}, seed {run.seed}), {n_growth} growth events", fontsize=10)
    _growth_legend(fig, [e for _, _, events in items for e in events], colors)
    fig.suptitle(title)
    return png(fig)


def loss_kind(run: RunRow) -> str:
    """What the recorded losses are for the built-in principles (capsule routing: a margin loss;
    forward-forward: its own training loss, validated by cross-entropy of its goodness scores)."""
    if run.learning == "forward_forward":
        return "training: forward-forward loss; validation: cross-entropy, nats"
    if run.composition == "capsule_routing":
        return "margin loss"
    return "cross-entropy, nats" if run.composition in ("sequential", "snapshots") else "the composition's loss"


def run_curves(run: RunRow, events: Sequence[GrowthEventRow]) -> bytes:
    """Losses and validation accuracy per epoch (top), hidden units and parameters per step (bottom)."""
    curve = run.curve or []
    fig = new_figure(12, 8)
    ax_loss, ax_acc = fig.add_subplot(2, 2, 1), fig.add_subplot(2, 2, 2)
    epochs = [int(c.get("epoch", i)) + 1 for i, c in enumerate(curve)]
    for key, label, c in (("train_loss", "training loss (epoch mean)", color(0)),
                          ("val_loss", "validation loss", color(1))):
        ax_loss.plot(epochs, [row.get(key) for row in curve], marker="o", ms=3, color=c, label=label)
    ax_acc.plot(epochs, [row.get("val_accuracy") for row in curve], marker="o", ms=3, color=color(2),
                label="validation accuracy")
    if run.test_accuracy is not None and epochs:
        ax_acc.axhline(run.test_accuracy, color="#555", ls=":", label=f"final test accuracy {run.test_accuracy:.3f}")
    for event in events:
        if is_growth_event(event):
            for ax in (ax_loss, ax_acc):
                ax.axvline(event.epoch + 1, color="#999", lw=0.8, ls="--")
    ax_loss.set(xlabel="epoch", ylabel=f"loss ({loss_kind(run)})", title="losses per epoch")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set(xlabel="epoch", ylabel="accuracy (fraction correct)", title="validation accuracy per epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if not curve:
            ax.text(0.5, 0.5, "no per-epoch curve recorded", ha="center", va="center", transform=ax.transAxes)
    colors = principle_colors(events)
    _growth_axes(fig.add_subplot(2, 2, 3), fig.add_subplot(2, 2, 4), run, events, colors)
    _growth_legend(fig, events, colors)
    fig.suptitle(f"run {run.id}: {run.task}, {run.level}, seed {run.seed}, {run.status}")
    return png(fig)


# ----------------------------------------------------------------------------------- the network


def grown_units(widths: Sequence[int], events: Sequence[GrowthEventRow]) -> dict[int, int] | None:
    """Units added per unit layer by ``add_units`` events (None if layers were added: indices moved)."""
    if any(e.operation.startswith("add_layer") for e in events):
        return None
    grown: dict[int, int] = defaultdict(int)
    for event in events:
        if hidden_units_delta(event) and 0 < event.layer < len(widths) - 1:
            grown[event.layer] += hidden_units_delta(event)
    return dict(grown)


def _shown(width: int) -> list[int]:
    if width <= MAX_UNITS_DRAWN:
        return list(range(width))
    step = (width - 1) / (MAX_UNITS_DRAWN - 1)
    return sorted({round(i * step) for i in range(MAX_UNITS_DRAWN)})


def network_drawing(structure: dict[str, Any], events: Sequence[GrowthEventRow], title: str) -> bytes:
    """Units as dots per layer (input left, output right), weight blocks as bands, skip edges as arcs."""
    widths = [int(w) for w in structure.get("widths") or []]
    skips = [tuple(s) for s in structure.get("skips") or []]
    fig = new_figure(max(8.0, 2.2 * len(widths)), 7.5)
    ax = fig.add_subplot()
    if len(widths) < 2:
        ax.text(0.5, 0.5, "no structure recorded for this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return png(fig)
    grown = grown_units(widths, events)
    spans: list[tuple[float, float]] = []
    for layer, width in enumerate(widths):
        shown = _shown(width)
        ys = [i - (len(shown) - 1) / 2 for i in range(len(shown))]
        spans.append((min(ys), max(ys)))
        added = (grown or {}).get(layer, 0)
        colors = [color(1) if unit >= width - added else color(0) for unit in shown]
        ax.scatter([layer] * len(shown), ys, s=max(6, 60 - len(shown)), c=colors, zorder=3, edgecolors="none")
        name = "input" if layer == 0 else "output" if layer == len(widths) - 1 else f"hidden {layer}"
        note = f"\n({len(shown)} of {width} drawn)" if len(shown) < width else ""
        ax.text(layer, -MAX_UNITS_DRAWN / 2 - 3, f"{name}\n{width} units{note}", ha="center", va="top", fontsize=9)
    for layer in range(len(widths) - 1):
        (lo_a, hi_a), (lo_b, hi_b) = spans[layer], spans[layer + 1]
        ax.add_patch(Polygon([(layer, lo_a), (layer, hi_a), (layer + 1, hi_b), (layer + 1, lo_b)], closed=True,
                             color="#9aa7b8", alpha=0.25, lw=0, zorder=1))
    for a, b in skips:
        if 0 <= a < len(widths) and 0 <= b < len(widths):
            ax.add_patch(FancyArrowPatch((a, spans[a][1] + 1), (b, spans[b][1] + 1),
                                         connectionstyle=f"arc3,rad={-0.25 - 0.05 * (b - a)}", arrowstyle="-|>",
                                         mutation_scale=12, color=color(3), lw=1.6, zorder=2))
    handles = [Line2D([], [], marker="o", ls="", color=color(0), label="unit"),
               Polygon([(0, 0)], color="#9aa7b8", alpha=0.5, label="weight block between adjacent layers")]
    if grown:
        handles.insert(1, Line2D([], [], marker="o", ls="", color=color(1), label="unit added by growth"))
    if skips:
        handles.append(Line2D([], [], color=color(3), lw=1.6, label=f"skip edge ({len(skips)})"))
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    ax.set_xlim(-0.6, len(widths) - 0.4)
    ax.set_ylim(-MAX_UNITS_DRAWN / 2 - 10, MAX_UNITS_DRAWN / 2 + 4 + 6 * bool(skips))
    ax.set_axis_off()
    ax.set_title(title)
    return png(fig)


__all__ = ["MAX_UNITS_DRAWN", "grown_units", "growth_curves", "network_drawing", "principle_colors", "run_curves"]
