"""What a report reads from the leaderboard database: one campaign's runs, events and promotions, loaded
in a few queries and then sliced in Python (per task, per level, per recipe).

Nothing here draws or writes files; :mod:`principlelab.report.plots` and :mod:`principlelab.report.page`
turn these values into figures and HTML.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from principlelab.core.events import is_growth
from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError
from principlelab.studies import leaderboard
from principlelab.studies.db import (
    CampaignRow,
    GrowthEventRow,
    LeaderboardDB,
    PromotionRow,
    RunRow,
    StudyVersionRow,
    campaign_row,
)
from principlelab.studies.promotion import RankCorrelation, rank_correlation


def is_growth_event(event: GrowthEventRow) -> bool:
    """True for events a growth rule made (units, layers, skips, freezes, snapshots), not rewiring."""
    return is_growth(event.slot, event.operation)


def hidden_units_delta(event: GrowthEventRow) -> int:
    """How many hidden units an event added (``add_units:*`` and ``add_layer``), else 0."""
    return int(event.units or 0) if event.operation.startswith(("add_units", "add_layer")) else 0


@dataclass
class CampaignData:
    """Everything a campaign report shows, read once."""

    name: str
    storage: str
    spec_text: str
    versions: list[StudyVersionRow]
    runs: list[RunRow]
    events: dict[int, list[GrowthEventRow]]
    promotions: list[PromotionRow]
    tasks: list[str] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)  # by level index

    def level_index(self, level: str) -> int:
        return self.levels.index(level)

    def runs_at(self, task: str, level: str | None = None, status: str | None = "complete") -> list[RunRow]:
        return [r for r in self.runs if r.task == task and (level is None or r.level == level)
                and (status is None or r.status == status)]

    def last_level(self, task: str) -> str | None:
        """The highest level of ``task`` with a complete run (None if it has none)."""
        done = {r.level for r in self.runs_at(task)}
        return next((lv for lv in reversed(self.levels) if lv in done), None)

    def study_versions(self, task: str, level: str) -> list[StudyVersionRow]:
        """The study versions of ``task`` at ``level``, oldest first."""
        return sorted((sv for sv in self.versions if sv.task == task and sv.level == level), key=lambda sv: sv.version)

    def first_study(self, task: str) -> StudyVersionRow | None:
        """The latest version of ``task``'s first level (the sampled, coarse study)."""
        first = [sv for sv in self.versions if sv.task == task and sv.level_index == 0]
        return max(first, key=lambda sv: sv.version) if first else None

    def status_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for run in self.runs:
            counts[(run.task, run.level)][run.status] += 1
        return counts

    def growth_events(self, run_id: int) -> list[GrowthEventRow]:
        return [e for e in self.events.get(run_id, []) if is_growth_event(e)]

    def spec(self) -> dict[str, Any]:
        """The campaign file as stored (TOML), parsed; empty if it cannot be parsed."""
        try:
            return tomllib.loads(self.spec_text or "")
        except (tomllib.TOMLDecodeError, TypeError):
            return {}

    def declared_levels(self) -> list[str]:
        """The level names the campaign file declares, in order (the levels run so far if it cannot be read):
        a campaign interrupted in its first level has run one level of several."""
        return leaderboard.declared(self.spec_text)[1] or list(self.levels)

    def capped_level(self, level: str) -> tuple[int, list[int]] | None:
        """``(width_cap, initial hidden widths)`` if ``level``'s width cap leaves no room to add units."""
        spec = self.spec()
        hidden = (spec.get("network") or {}).get("hidden", [256, 256])
        for entry in spec.get("levels") or []:
            cap = entry.get("width_cap") if isinstance(entry, dict) else None
            if entry.get("name", "default") == level and isinstance(cap, int) and hidden and \
                    all(isinstance(h, int) and h >= cap for h in hidden):
                return cap, list(hidden)
        return None


def load_campaign(db: LeaderboardDB, name: str) -> CampaignData:
    """One campaign's study versions, runs, growth events and promotions (UnknownNameError if absent)."""
    with db.session(write=False) as session:
        row = campaign_row(session, name)
        versions = list(session.scalars(
            select(StudyVersionRow).where(StudyVersionRow.campaign_id == row.id)
            .order_by(StudyVersionRow.level_index, StudyVersionRow.task, StudyVersionRow.version)))
        runs = list(session.scalars(select(RunRow).where(RunRow.campaign_id == row.id).order_by(RunRow.id)))
        events: dict[int, list[GrowthEventRow]] = defaultdict(list)
        for event in session.scalars(select(GrowthEventRow).join(RunRow, RunRow.id == GrowthEventRow.run_id)
                                     .where(RunRow.campaign_id == row.id).order_by(GrowthEventRow.id)):
            events[event.run_id].append(event)
        version_ids = [sv.id for sv in versions]
        promotions = list(session.scalars(select(PromotionRow).where(
            PromotionRow.to_study_version_id.in_(version_ids)).order_by(PromotionRow.id))) if version_ids else []
    tasks = list(dict.fromkeys(sv.task for sv in versions))
    levels = [lv for _, lv in sorted({(sv.level_index, sv.level) for sv in versions})]
    return CampaignData(row.name, db.masked_url, row.spec_json, versions, runs, dict(events), promotions,
                        tasks, list(dict.fromkeys(levels)))


def load_run(db: LeaderboardDB, run_id: int) -> tuple[RunRow, list[GrowthEventRow], str | None]:
    """One run, its events and its campaign's name; a one-line ConfigError for an unknown id."""
    with db.session(write=False) as session:
        run = session.get(RunRow, run_id)
        if run is None:
            low, high, n = session.execute(select(func.min(RunRow.id), func.max(RunRow.id),
                                                  func.count(RunRow.id))).one()
            known = f"run ids {low}..{high}" if n else "no runs"
            raise ConfigError(f"no run with id {run_id} in {db.masked_url} ({known}); "
                              "plab leaderboard lists them in its run column")
        campaign = session.scalar(select(CampaignRow.name).where(CampaignRow.id == run.campaign_id))
    return run, db.growth_events(run_id), campaign


# ----------------------------------------------------------------------------------------- recipes


def recipe_rows(db: LeaderboardDB, campaign: str, task: str, level: str) -> list[dict[str, Any]]:
    """Every recipe of a task at a level, best mean test accuracy first (mean ± std over seeds)."""
    return leaderboard.query(db, campaign=campaign, task=task, level=level, group_by="recipe",
                             metric="test_accuracy", top=0)


def varying_slots(rows: Sequence[Any]) -> list[str]:
    """Slots whose principle differs between ``rows`` (dicts or RunRows); all slots if none differs."""
    def get(row: Any, slot: str) -> Any:
        return row.get(slot) if isinstance(row, dict) else getattr(row, slot)

    varying = [slot for slot in SLOTS if len({get(r, slot) for r in rows}) > 1]
    return varying or list(SLOTS)


def recipe_label(row: Any, slots: Sequence[str], *, key: bool = True) -> str:
    """``"sparse_random / grad_variance [4ce6e1]"``: the principles in ``slots`` and a short recipe key."""
    def get(name: str) -> Any:
        return row.get(name) if isinstance(row, dict) else getattr(row, name)

    names = " / ".join(str(get(slot)) for slot in slots)
    return f"{names} [{str(get('recipe_key'))[:6]}]" if key else names


def common_principles(rows: Sequence[Any], slots: Sequence[str]) -> str:
    """``"learning=backprop, growth=random"``: the slots every row shares (for captions)."""
    if not rows:
        return ""
    first = rows[0]
    get = first.get if isinstance(first, dict) else (lambda s: getattr(first, s))
    return ", ".join(f"{slot}={get(slot)}" for slot in SLOTS if slot not in slots)


# ------------------------------------------------------------------------------------ correlations


@dataclass
class PromotedPoint:
    recipe_key: str
    coarse: float
    fine_mean: float
    fine_std: float
    n: int
    label: str


@dataclass
class Promotion:
    task: str
    lower: str
    upper: str
    points: list[PromotedPoint]
    promoted: int
    corr: RankCorrelation


def promotions(data: CampaignData, task: str) -> list[Promotion]:
    """Per consecutive level pair of ``task``: promoted recipes' lower value vs their upper mean objective.

    Only the upper level's newest study version counts (its promotions and its runs), as in the correlation a
    (resumed) campaign prints: each study version promotes on its own, so pooling versions listed a recipe once
    per version and averaged its runs over all of them."""
    by_id = {sv.id: sv for sv in data.versions}
    out = []
    for lower, upper in zip(data.levels, data.levels[1:]):
        upper_versions = data.study_versions(task, upper)
        newest_id = upper_versions[-1].id if upper_versions else None  # no run or promotion has a None id
        promoted = [p for p in data.promotions if p.to_study_version_id == newest_id
                    and by_id.get(p.from_study_version_id) is not None
                    and by_id[p.from_study_version_id].level == lower]
        upper_runs: dict[str, list[RunRow]] = defaultdict(list)
        for run in data.runs_at(task, upper):
            if run.objective is not None and run.study_version_id == newest_id:
                upper_runs[run.recipe_key].append(run)
        points = []
        for p in promoted:
            runs = upper_runs.get(p.recipe_key)
            if not runs or p.source_value is None:
                continue
            values = [float(r.objective) for r in runs if r.objective is not None]
            points.append(PromotedPoint(p.recipe_key, p.source_value, statistics.fmean(values),
                                        statistics.stdev(values) if len(values) > 1 else 0.0, len(values), ""))
        slots = varying_slots([upper_runs[pt.recipe_key][0] for pt in points])
        for pt in points:
            pt.label = recipe_label(upper_runs[pt.recipe_key][0], slots)
        corr = rank_correlation([pt.coarse for pt in points], [pt.fine_mean for pt in points])
        out.append(Promotion(task, lower, upper, points, len(promoted), corr))
    return out


# ----------------------------------------------------------------------------------- pareto fronts


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats (cheaper or equal and at least as accurate),
    cheapest first; accuracy rises along the front."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


# ---------------------------------------------------------------------------------------- curves


def mean_curve(runs: Sequence[RunRow], key: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs (1-based), mean and std over ``runs`` of ``curve[key]``, over the epochs all runs have."""
    curves = [[row.get(key) for row in (r.curve or [])] for r in runs]
    curves = [c for c in curves if c and all(isinstance(v, int | float) and math.isfinite(v) for v in c)]
    if not curves:
        return [], [], []
    length = min(len(c) for c in curves)
    means = [statistics.fmean(c[i] for c in curves) for i in range(length)]
    stds = [statistics.pstdev([c[i] for c in curves]) if len(curves) > 1 else 0.0 for i in range(length)]
    return list(range(1, length + 1)), means, stds


def events_by_epoch(curve: Sequence[dict[str, Any]], events: Sequence[GrowthEventRow]) -> list[list[GrowthEventRow]]:
    """``events`` split by the curve record that follows them (the first epoch end at or after their step);
    events after the last record go with the last one."""
    ends = [int(c.get("step", 0)) for c in curve]
    out: list[list[GrowthEventRow]] = [[] for _ in curve]
    for event in sorted(events, key=lambda e: (e.step, e.id)):
        out[next((i for i, end in enumerate(ends) if end >= event.step), len(ends) - 1)].append(event)
    return out


def growth_trajectory(run: RunRow, events: Sequence[GrowthEventRow]) -> dict[str, list[float]] | None:
    """Hidden units and parameters over training steps as step functions; ``None`` without a curve.

    Within each epoch the values step at every event by its recorded delta and end on the size recorded
    at the end of that epoch, so the line always passes through the records (where the deltas do not
    explain the records, e.g. parameters a composition adds when the network grows, the first event of
    the epoch absorbs the difference). Keys: ``steps``, ``units``, ``params`` (the step function) and
    ``epoch_steps``, ``epoch_units``, ``epoch_params`` (the records).
    """
    curve = run.curve or []
    if not curve:
        return None
    rec_steps = [float(c.get("step", 0)) for c in curve]
    rec_units = [float(sum(c.get("widths", [0, 0])[1:-1])) for c in curve]
    rec_params = [float(c.get("params", 0)) for c in curve]
    grouped = events_by_epoch(curve, events)
    units = rec_units[0] - sum(hidden_units_delta(e) for e in grouped[0])
    params = rec_params[0] - sum(e.params_delta or 0 for e in grouped[0])
    steps, unit_values, param_values = [0.0], [units], [params]
    for i, group in enumerate(grouped):
        left_units = sum(hidden_units_delta(e) for e in group)
        left_params = sum(e.params_delta or 0 for e in group)
        for event in group:
            left_units -= hidden_units_delta(event)
            left_params -= event.params_delta or 0
            units, params = rec_units[i] - left_units, rec_params[i] - left_params
            steps.append(float(max(event.step, 0)))
            unit_values.append(units)
            param_values.append(params)
        if (units, params) != (rec_units[i], rec_params[i]):  # changed without an event (e.g. rewiring)
            units, params = rec_units[i], rec_params[i]
            steps.append(rec_steps[i])
            unit_values.append(units)
            param_values.append(params)
    steps.append(max(rec_steps[-1], steps[-1]))
    unit_values.append(units)
    param_values.append(params)
    return {"steps": steps, "units": unit_values, "params": param_values, "epoch_steps": rec_steps,
            "epoch_units": rec_units, "epoch_params": rec_params}


def top_growing_runs(data: CampaignData, task: str, limit: int = 4, *, with_curve: bool = True) -> list[RunRow]:
    """The best complete run (by test accuracy) of up to ``limit`` recipes that grew, highest level first
    (only runs with a per-epoch curve if ``with_curve``)."""
    chosen: dict[str, RunRow] = {}
    for level in reversed(data.levels):
        runs = [r for r in data.runs_at(task, level) if (r.curve or not with_curve) and data.growth_events(r.id)]
        for run in sorted(runs, key=lambda r: (-(r.test_accuracy or 0.0), r.id)):
            if run.recipe_key not in chosen and len(chosen) < limit:
                chosen[run.recipe_key] = run
    return list(chosen.values())


__all__ = ["CampaignData", "PromotedPoint", "Promotion", "common_principles", "events_by_epoch",
           "growth_trajectory", "hidden_units_delta", "is_growth_event", "load_campaign", "load_run", "mean_curve",
           "pareto_front", "promotions", "recipe_label", "recipe_rows", "top_growing_runs", "varying_slots"]
