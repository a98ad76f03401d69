"""Assemble a report: read the data, draw each section's figures, write the PNGs and ``index.html``."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError, StorageError
from principlelab.report import data as d
from principlelab.report import plots, runplots
from principlelab.report.importance import study_importance
from principlelab.report.page import FigureOut, Section, fmt, render
from principlelab.studies.db import GrowthEventRow, LeaderboardDB, RunRow

TOP_BARS = 15
TOP_TABLE = 30
TOP_CURVES = 5
TOP_GROWING = 4


@dataclass
class ReportResult:
    index: Path
    figures: list[Path]
    seconds: float


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"


def _write(out_dir: Path, title: str, meta: list[str], sections: list[Section], started: float) -> ReportResult:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the report into {str(out_dir)!r}: {exc.strerror or exc}; pick another "
                          "--out") from None
    paths = []
    for section in sections:
        for fig in section.figures:
            path = out_dir / fig.filename
            path.write_bytes(fig.data)
            paths.append(path)
    seconds = time.perf_counter() - started
    index = out_dir / "index.html"
    index.write_text(render(title, [*meta, f"{len(paths)} figures, built in {seconds:.1f} s"], sections),
                     encoding="utf-8")
    return ReportResult(index, paths, seconds)


# ------------------------------------------------------------------------------------------ campaign


def campaign_report(db: LeaderboardDB, campaign: str, out_dir: Path, storage_url: str) -> ReportResult:
    """Write the report of ``campaign`` to ``out_dir`` (created; files of the same names are replaced)."""
    started = time.perf_counter()
    data = d.load_campaign(db, campaign)
    counts = data.status_counts()
    declared = data.declared_levels()
    unrun = [lv for lv in declared if lv not in data.levels]
    meta = [f"storage {data.storage}; tasks {', '.join(data.tasks) or '-'}; levels {' → '.join(declared) or '-'}"
            + (f" (not run yet: {', '.join(unrun)}; rerun the campaign to continue)" if unrun else "")]
    for (task, level_name), by_status in sorted(counts.items(), key=lambda kv: (kv[0][0], data.level_index(kv[0][1]))):
        meta.append(f"{task} / {level_name}: {sum(by_status.values())} runs ("
                    + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) + ")")
    sections = [Section("leaderboard", "1. Leaderboard"), Section("importance", "2. What mattered (coarse study)"),
                Section("promotion", "3. Coarse vs fine"), Section("cost", "4. Accuracy vs cost"),
                Section("curves", "5. Learning curves"), Section("growth", "6. Growth")]
    if not data.runs:
        sections[0].note(f"campaign {campaign!r} has no runs yet; run it with plab campaign run")
        return _write(out_dir, f"campaign {campaign}", meta, sections[:1], started)
    _sections(db, data, sections, storage_url)
    return _write(out_dir, f"campaign {campaign}", meta, sections, started)


def _sections(db: LeaderboardDB, data: d.CampaignData, sections: list[Section], storage_url: str) -> None:
    """Fill the six sections, task by task (Optuna's storage is opened once, for the importances)."""
    from principlelab.studies.campaign import optuna_storage_kind
    from principlelab.studies.optuna_setup import close_storage, make_storage

    storage = make_storage(storage_url, kind=optuna_storage_kind(db, data.name))
    try:
        for task in data.tasks:
            level = data.last_level(task)
            if len(data.tasks) > 1:
                for section in sections:
                    section.heading(f"task {task}")
            rows = d.recipe_rows(db, data.name, task, level) if level else []
            _leaderboard(sections[0], data, task, level, rows)
            _importance(sections[1], data, task, storage)
            _promotion(sections[2], data, task)
            _cost(sections[3], data, task)
            _curves(sections[4], data, task, level, rows)
            _growth(sections[5], data, task)
    finally:
        close_storage(storage)


def _leaderboard(sec: Section, data: d.CampaignData, task: str, level: str | None, rows: list[dict]) -> None:
    if level is None or not rows:
        sec.note(f"{task}: no complete runs at any level yet")
        return
    if level != data.levels[-1]:
        sec.note(f"{task}: no complete runs at the last level ({data.levels[-1]}) yet; showing {level}")
    pooled = pooled_versions_note(data, task, level)
    if pooled:
        sec.note(pooled)
    slots = d.varying_slots(rows[:TOP_BARS])
    common = d.common_principles(rows[:TOP_BARS], slots)
    labels = [d.recipe_label(r, slots) for r in rows[:TOP_BARS]]
    sec.figure(FigureOut(
        f"1-leaderboard-{slug(task)}.png",
        plots.leaderboard_bars(rows[:TOP_BARS], labels, f"{task}, level {level}: recipes by mean test accuracy",
                               "recipe: " + " / ".join(slots) + " [key]"),
        f"leaderboard of {task} at {level}",
        f"Mean test accuracy of the best {min(len(rows), TOP_BARS)} of {len(rows)} recipes at level {level}, "
        f"best on top; the whisker is one standard deviation over the recipe's seeds (n runs). Labels name "
        f"the principles that differ between recipes and the first characters of the recipe key"
        + (f"; every recipe shown has {common}." if common else ".")))
    headers = ["#", *SLOTS, "test accuracy", "n", "params", "MACs", "recipe"]
    spread = ["" if r["std"] is None else f" ± {fmt(r['std'])}" for r in rows]  # None: one run
    table = [[i + 1, *(r[s] for s in SLOTS), fmt(r["mean"]) + spread[i], r["count"], fmt(r["params"]),
              fmt(r["macs"]), str(r["recipe_key"])[:12]] for i, r in enumerate(rows[:TOP_TABLE])]
    sec.table(headers, table, numeric=(0, 6, 7, 8, 9),
              titles=[_config_text(r.get("config")) for r in rows[:TOP_TABLE]])
    if len(rows) > TOP_TABLE:
        sec.text(f"{len(rows) - TOP_TABLE} more recipes: plab leaderboard --campaign {data.name} --task {task} "
                 f"--fidelity {level} --group-by recipe --top 0")


def pooled_versions_note(data: d.CampaignData, task: str, level: str) -> str | None:
    """A note when the leaderboard of ``task`` at ``level`` pools runs of several study versions, else None."""
    versions = [sv.version for sv in data.study_versions(task, level)]
    if len(versions) < 2:
        return None
    return (f"{task}: the leaderboard pools the runs of {len(versions)} study versions of level {level} "
            f"(v{versions[0]} to v{versions[-1]}; a new version starts when the search space changes, see "
            f"plab campaign status {data.name}): a recipe's runs count together, whichever version ran them")


def _config_text(config: object) -> str | None:
    slots = (config or {}).get("slots") if isinstance(config, dict) else None
    if not isinstance(slots, dict):
        return None
    return "; ".join(f"{slot}={v.get('name')} {v.get('config') or {}}" for slot, v in slots.items()
                     if isinstance(v, dict))


def _importance(sec: Section, data: d.CampaignData, task: str, storage: object) -> None:
    sv = data.first_study(task)
    if sv is None:
        sec.note(f"{task}: no study at the first level")
        return
    try:
        imp = study_importance(storage, sv.optuna_study_name)  # type: ignore[arg-type]
    except StorageError as exc:
        sec.note(f"{task}: importance not computed: {exc}")
        return
    sec.text(f"{task}: Optuna study {sv.optuna_study_name} ({sv.level}), {imp.n_complete} complete of "
             f"{imp.n_total} trials. Importance is fANOVA's share of the objective's variance (validation "
             "accuracy) explained by each parameter, over complete trials only.")
    if imp.fixed:
        sec.text("Not searched (one choice in every trial): " + ", ".join(f"{k}={v}" for k, v in imp.fixed.items()))
    if imp.slots.values:
        sec.figure(FigureOut(f"2-importance-slots-{slug(task)}.png", plots.slot_importance(imp, task),
                             f"slot importance on {task}",
                             "How much of the variation in the coarse objective each slot's choice explains. "
                             "A high bar says the choice of principle in that slot mattered; it does not say "
                             "which principle was better (see the leaderboard)."))
    else:
        sec.note(f"{task}: slot importance not computed: {imp.note or imp.slots.note}")
    drawn = [p for p in imp.principles if p.values]
    if drawn:
        slot_colors = {slot: plots.color(i) for i, slot in enumerate(SLOTS)}
        sec.figure(FigureOut(
            f"2-importance-params-{slug(task)}.png",
            plots.principle_importance(drawn, lambda s: slot_colors.get(s, plots.color(0)),
                                       f"{task}: parameter importance per chosen principle"),
            f"parameter importance per principle on {task}",
            "For each principle chosen by enough complete trials: the importance of its own parameters, computed "
            "over only the trials that chose it. Bars are colored by slot. With few trials these estimates are "
            "noisy: a parameter that cannot matter may still get a large share."))
    skipped = [p for p in imp.principles if not p.values]
    if skipped:
        sec.note("Parameter importance not computed for: " + "; ".join(f"{p.title} ({p.note})" for p in skipped))


def _promotion(sec: Section, data: d.CampaignData, task: str) -> None:
    pairs = d.promotions(data, task)
    if not pairs:
        declared = data.declared_levels()
        sec.note(f"{task}: the campaign has one level, so nothing was promoted" if len(declared) < 2 else
                 f"{task}: nothing was promoted yet: the campaign stopped before level {declared[1]} (rerun it to "
                 "continue)")
        return
    shown = [p for p in pairs if p.points]
    for p in pairs:
        if not p.points and not p.promoted:
            sec.note(f"{task}: nothing was promoted from {p.lower} to {p.upper} (no complete run at {p.lower})")
        elif not p.points:
            sec.note(f"{task}: {p.promoted} recipe(s) promoted from {p.lower} to {p.upper}, none with a complete "
                     f"run at {p.upper} yet")
    if shown:
        sec.figure(FigureOut(
            f"3-coarse-vs-fine-{slug(task)}.png", plots.promotion_scatter(shown, f"{task}: does the cheap level "
                                                                          "rank recipes like the expensive one?"),
            f"coarse vs fine on {task}",
            "Each point is a promoted recipe (labelled by its recipe key): x is the value that got it promoted, "
            "y its mean objective over seeds one level up, with ± 1 std as error bars. Points rising to the right "
            "(Spearman's rho and Kendall's tau near 1) mean the cheap level ranks recipes like the expensive one; "
            "with 3 to 5 recipes whose promoted values are close, expect large p-values."))
        rows = [[p.lower, p.upper, pt.label, fmt(pt.coarse), f"{fmt(pt.fine_mean)} ± {fmt(pt.fine_std)}", pt.n]
                for p in shown for pt in p.points]
        sec.table(["from", "to", "recipe", "value when promoted", "mean objective above", "seeds"], rows,
                  numeric=(3, 4, 5))


def _cost(sec: Section, data: d.CampaignData, task: str) -> None:
    levels = [(lv, [(float(r.params or 0), float(r.macs or 0), r.test_accuracy) for r in data.runs_at(task, lv)
                    if r.test_accuracy is not None]) for lv in data.levels]
    levels = [(lv, pts) for lv, pts in levels if pts]
    if not levels:
        sec.note(f"{task}: no complete runs with a test accuracy")
        return
    sec.figure(FigureOut(
        f"4-accuracy-vs-cost-{slug(task)}.png", plots.accuracy_vs_cost(levels, f"{task}: accuracy vs size and "
                                                                       "compute, every complete run"),
        f"accuracy vs parameters and MACs on {task}",
        "Every complete run, colored by level. Left: final parameter count; right: compute (all MACs spent, "
        "training and evaluation). The diamonds joined by a step line are each level's Pareto front: "
        "no other run of that level is both cheaper and at least as accurate. Levels train for different "
        "lengths, so compare fronts within a level."))


def _curves(sec: Section, data: d.CampaignData, task: str, level: str | None, rows: list[dict]) -> None:
    if level is None or not rows:
        sec.note(f"{task}: no complete runs")
        return
    top = rows[:TOP_CURVES]
    slots = d.varying_slots(top)
    runs = data.runs_at(task, level)
    groups = [(d.recipe_label(r, slots), [x for x in runs if x.recipe_key == r["recipe_key"] and x.curve])
              for r in top]
    groups = [(label, rs) for label, rs in groups if rs]
    if not groups:
        sec.note(f"{task}: no per-epoch curves recorded at {level} (runs from before schema version 2)")
        return
    sec.figure(FigureOut(
        f"5-learning-curves-{slug(task)}.png",
        plots.learning_curves(groups, f"{task}, level {level}: the top {len(groups)} recipes"),
        f"learning curves on {task}",
        "Validation accuracy and loss after each epoch for the best recipes of the leaderboard, mean over each "
        "recipe's seeds (n) with a ± 1 std band."
        + (" The recipes train on different losses (capsule routing: a margin loss; the others: cross-entropy), "
           "so compare their loss curves by shape, not height." if len({runplots.loss_kind(rs[0])
                                                                       for _, rs in groups}) > 1 else "")))


def _growth(sec: Section, data: d.CampaignData, task: str) -> None:
    for level in data.levels:
        runs = [r for r in data.runs_at(task, level) if r.growth not in (None, "none") and r.trigger != "never"]
        grew = [r for r in runs if data.growth_events(r.id)]
        if runs and len(grew) < len(runs):
            capped = data.capped_level(level)
            why = (f"the level's width_cap ({capped[0]}) is not above the initial hidden widths {capped[1]}, so no "
                   "unit could be added" if capped else "their triggers never fired, or the layers were at the "
                   "level's width_cap")
            sec.note(f"{task} / {level}: {len(runs) - len(grew)} of {len(runs)} complete runs that have a growth rule "
                     f"(not none) and a trigger (not never) recorded no growth event: {why}")
    chosen = d.top_growing_runs(data, task, TOP_GROWING)
    if not chosen:
        grew = d.top_growing_runs(data, task, TOP_GROWING, with_curve=False)
        sec.note(f"{task}: runs {', '.join(str(r.id) for r in grew)} grew but have no per-epoch curve (recorded "
                 "before schema version 2); plab report --run ID lists their events" if grew else
                 f"{task}: no complete run grew")
        return
    slots = d.varying_slots(chosen)
    items = [(d.recipe_label(r, slots), r, data.events.get(r.id, [])) for r in chosen]
    kinds = Counter(e.operation for r in chosen for e in data.growth_events(r.id))
    sec.figure(FigureOut(
        f"6-growth-{slug(task)}.png",
        runplots.growth_curves(items, f"{task}: how the best growing recipes grew"),
        f"growth curves on {task}",
        f"The best run of each of the top {len(items)} recipes that grew (highest level first): hidden units and "
        "parameters over training steps. The line steps at each event by the event's recorded delta and meets the "
        "size recorded at the end of each epoch (the dots). Dashed lines mark growth events, colored by the "
        "principle that made them. Operations: " + ", ".join(f"{k} x{v}" for k, v in kinds.most_common()) + "."))


# ----------------------------------------------------------------------------------------------- run


def run_report(db: LeaderboardDB, run_id: int, out_dir: Path) -> ReportResult:
    """Write the report of one run: summary, curves, growth events, the final network."""
    started = time.perf_counter()
    run, events, campaign = d.load_run(db, run_id)
    summary, curves, table, drawing = (Section("run", "Run"), Section("curves", "Curves"),
                                       Section("events", "Growth events"), Section("network", "Final network"))
    slot_rows: list[list[object]] = [[slot, f"{getattr(run, slot)} {getattr(run, f'{slot}_config') or {}}"]
                                     for slot in SLOTS]
    rows: list[list[object]] = [
        ["campaign", campaign or "-"], ["task / level / seed", f"{run.task} / {run.level} / {run.seed}"],
        ["status", run.status + (f": {run.failure_reason.removeprefix(run.status + ': ')}"  # no 'rejected: rejected:'
                                 if run.failure_reason else "")], *slot_rows,
        ["recipe key", run.recipe_key],
        ["test / val accuracy", f"{fmt(run.test_accuracy)} / {fmt(run.val_accuracy)}"],
        ["test / val loss", f"{fmt(run.test_loss)} / {fmt(run.val_loss)}"], ["params", fmt(run.params)],
        ["MACs (train + eval)", fmt(run.macs)], ["wall time", f"{run.wall_s:.2f} s"],
        ["promoted from run", run.promoted_from_run_id or "-"]]
    summary.table(["", ""], rows)
    if run.curve:
        curves.figure(FigureOut(
            f"run-{run.id}-curves.png", runplots.run_curves(run, events), f"curves of run {run.id}",
            "Top: losses and validation accuracy per epoch (dashed: epochs with growth). Bottom: hidden units and "
            "parameters over training steps, growth events as dashed lines."))
    else:
        curves.note(f"run {run.id} has no per-epoch curve (it was recorded before schema version 2, or never "
                    "finished an epoch)")
    if events:
        table.text("One row per event, in order. Epochs count from 1, as in the plots; the step is the training "
                   "step (minibatch) after which the event happened.")
        table.table(["step", "epoch", "made by", "operation", "layer", "units", "params Δ", "MACs Δ",
                     "loss before", "loss after", "reason"],
                    [[e.step, e.epoch + 1, f"{e.slot}: {e.principle}", e.operation, e.layer, e.units, e.params_delta,
                      fmt(e.macs_delta), fmt(e.loss_before), fmt(e.loss_after), e.reason] for e in events],
                    numeric=(0, 1, 4, 5, 6, 7, 8, 9))
    else:
        table.note("this run recorded no growth events")
    _draw_network(drawing, run, events)
    meta = [f"storage {db.masked_url}"]
    return _write(out_dir, f"run {run.id}", meta, [summary, curves, table, drawing], started)


def _draw_network(drawing: Section, run: RunRow, events: list[GrowthEventRow]) -> None:
    """The run's final network into ``drawing``, or a note where none was recorded."""
    structure = run.structure or {}
    widths = structure.get("widths") or []
    if not widths:  # rejected before training, or recorded before structures were kept
        drawing.note(f"run {run.id} was rejected before training: it has no network" if run.status == "rejected"
                     else f"run {run.id} recorded no network ({run.status})")
        return
    grown = runplots.grown_units(widths, events)
    title = (f"run {run.id}: widths {'-'.join(map(str, widths))}, {structure.get('activation', '?')}, "
             f"{len(structure.get('skips') or [])} skip edge(s)")
    drawing.figure(FigureOut(
        f"run-{run.id}-network.png", runplots.network_drawing(structure, events, title), f"network of run {run.id}",
        "Unit layers from input (left) to output (right), one dot per unit; layers wider than "
        f"{runplots.MAX_UNITS_DRAWN} are drawn as {runplots.MAX_UNITS_DRAWN} evenly spaced units. Bands are the "
        "weight blocks between adjacent layers (dense or masked), arcs the skip edges. "
        + ("Orange units were added by growth." if grown else
           "Layers were added during training, so grown units are not marked." if grown is None and events else "")))


__all__ = ["ReportResult", "campaign_report", "run_report", "slug"]
