"""Queries over the leaderboard database: ranked runs, recipe/principle aggregates, paired comparisons
and campaign status. Pure functions over a :class:`~principlelab.studies.db.LeaderboardDB`.

Aggregates (mean, sample std, count) are computed in SQL with ``GROUP BY`` (``avg``, ``count`` and a
sum of squares), so only the top groups travel to Python.
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, cast, func, select
from sqlalchemy.orm import Session

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError, UnknownNameError
from principlelab.studies.db import (
    RUN_STATUSES,
    CampaignRow,
    LeaderboardDB,
    PromotionRow,
    RunRow,
    StudyVersionRow,
    campaign_row,
)
from principlelab.studies.tables import RETRIED

METRICS: dict[str, bool] = {
    "test_accuracy": True,
    "val_accuracy": True,
    "objective": True,
    "growth_event_count": True,
    "test_loss": False,
    "val_loss": False,
    "params": False,
    "macs": False,
    "samples_seen": False,
    "wall_s": False,
}
"""Metric columns one can rank by, and whether higher is better (the default sort is best first)."""

GROUP_BYS: tuple[str, ...] = ("run", "recipe", *SLOTS)
ALPHA = 0.05
MIN_KEY_PREFIX = 6

RUN_COLUMNS: tuple[str, ...] = (
    "id", "campaign", "task", "level", "seed", "status", *SLOTS, "recipe_key", "test_accuracy",
    "val_accuracy", "test_loss", "val_loss", "objective", "params", "macs", "samples_seen", "wall_s",
    "growth_event_count")
RECIPE_COLUMNS: tuple[str, ...] = (
    "recipe_key", "task", "level", "campaign", *SLOTS, "metric", "mean", "std", "count", "best", "params",
    "macs", "config")
SLOT_COLUMNS: tuple[str, ...] = (
    "slot", "principle", "task", "level", "campaign", "metric", "mean", "std", "count", "recipes", "best", "params",
    "macs")


def result_columns(group_by: str = "run") -> tuple[str, ...]:
    """The keys (in order) of each dict :func:`query` returns for this ``group_by``."""
    if group_by == "run":
        return RUN_COLUMNS
    return RECIPE_COLUMNS if group_by == "recipe" else SLOT_COLUMNS


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (UnknownNameError for an unknown metric)."""
    if metric not in METRICS:
        raise UnknownNameError("metric", metric, METRICS)
    return METRICS[metric]


# --------------------------------------------------------------------------------------------- query


def query(db: LeaderboardDB, *, campaign: str | None = None, task: str | None = None,
          level: str | None = None, where: dict[str, str] | None = None, group_by: str = "run",
          metric: str = "test_accuracy", top: int | None = 20, status: str | None = "complete",
          descending: bool | None = None) -> list[dict[str, Any]]:
    """The leaderboard: runs (``group_by="run"``), recipes (``"recipe"``) or principles of one slot.

    ``where`` maps slots to principle names (all must match). ``status=None`` includes every status.
    Rows are sorted best first by ``metric`` (ascending for losses, size, compute and time) unless
    ``descending`` says otherwise; ``top`` (None or <= 0: all) cuts the list.

    * runs: one dict per run with the keys :data:`RUN_COLUMNS`.
    * ``"recipe"``: groups by ``(recipe_key, task, level)``; :data:`RECIPE_COLUMNS`, with the slot names
      and ``config`` (the ``recipe_json``) of one representative run, ``mean``, ``std`` (sample std,
      0 for one run), ``count`` (runs with a value), ``best`` and mean ``params``/``macs``.
    * a slot: groups by ``(principle of that slot, task, level)``; :data:`SLOT_COLUMNS`.
    """
    higher = higher_is_better(metric)
    if group_by not in GROUP_BYS:
        raise UnknownNameError("group-by", group_by, GROUP_BYS)
    if status is not None and status not in RUN_STATUSES:
        raise UnknownNameError("status", status, RUN_STATUSES)
    desc = higher if descending is None else descending
    limit = top if top is not None and top > 0 else None
    col = getattr(RunRow, metric)
    with db.session(write=False) as session:
        conds = _filters(session, campaign=campaign, task=task, level=level, where=where, status=status)
        if group_by == "run":
            return _runs(session, conds, col, desc, limit)
        if group_by == "recipe":
            return _by_recipe(session, conds, metric, col, desc, limit)
        return _by_slot(session, conds, group_by, metric, col, desc, limit)


def _filters(session: Session, *, campaign: str | None, task: str | None, level: str | None,
             where: dict[str, str] | None, status: str | None) -> list[ColumnElement[bool]]:
    """Conditions on :class:`RunRow`; a task, fidelity or principle with no run in scope is an
    :class:`UnknownNameError` listing those that have runs (a typo is not an empty answer)."""
    row = campaign_row(session, campaign) if campaign is not None else None
    scope = [] if row is None else [RunRow.campaign_id == row.id]
    conds = [*scope, *task_and_level(session, row, scope, task, level)]
    where_text = "in this leaderboard" if campaign is None else f"in campaign {campaign!r}"
    if status is not None:
        conds.append(RunRow.status == status)
    for slot, name in (where or {}).items():
        if slot not in SLOTS:
            raise UnknownNameError("slot", slot, SLOTS)
        column = getattr(RunRow, slot)
        check_known(session, column, name, f"{slot} principle", where_text, scope)
        conds.append(column == name)
    return conds


def _order(expr: Any, desc: bool) -> Any:
    return expr.desc() if desc else expr.asc()


def _runs(session: Session, conds: list[ColumnElement[bool]], col: Any, desc: bool,
          limit: int | None) -> list[dict[str, Any]]:
    columns = [getattr(RunRow, name) for name in RUN_COLUMNS if name != "campaign"]
    stmt = (select(CampaignRow.name.label("campaign"), *columns)
            .join(CampaignRow, CampaignRow.id == RunRow.campaign_id).where(*conds)
            .order_by(col.is_(None), _order(col, desc), RunRow.id).limit(limit))
    return [{name: row._mapping[name] for name in RUN_COLUMNS} for row in session.execute(stmt)]


def _stats_columns(col: Any, desc: bool) -> list[Any]:
    value = cast(col, Float)
    return [func.count(col).label("n"), func.avg(value).label("mean"),
            func.sum(value * value).label("sumsq"),
            (func.max(value) if desc else func.min(value)).label("best"),
            func.avg(cast(RunRow.params, Float)).label("params"),
            func.avg(cast(RunRow.macs, Float)).label("macs")]


def _mean_std(row: Any) -> tuple[float, float]:
    n, mean, sumsq = int(row.n), float(row.mean), float(row.sumsq)
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(max(0.0, (sumsq - n * mean * mean) / (n - 1)))


def _by_recipe(session: Session, conds: list[ColumnElement[bool]], metric: str, col: Any, desc: bool,
               limit: int | None) -> list[dict[str, Any]]:
    stmt = (select(RunRow.recipe_key, RunRow.task, RunRow.level, *_stats_columns(col, desc),
                   func.min(RunRow.id).label("rep_id"))
            .where(*conds, col.is_not(None))
            # per campaign too: two campaigns' levels of one name need not be the same fidelity
            .group_by(RunRow.campaign_id, RunRow.recipe_key, RunRow.task, RunRow.level)
            .order_by(_order(func.avg(cast(col, Float)), desc), func.count(col).desc(), RunRow.recipe_key,
                      RunRow.campaign_id)
            .limit(limit))
    groups = session.execute(stmt).all()
    reps: dict[int, Any] = {}
    ids = [g.rep_id for g in groups]
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(RunRow.id, RunRow.recipe_json, CampaignRow.name.label("campaign"),
                   *[getattr(RunRow, slot) for slot in SLOTS])
            .join(CampaignRow, CampaignRow.id == RunRow.campaign_id)
            .where(RunRow.id.in_(ids[start:start + 500])))
        reps.update({row.id: row for row in rows})
    out = []
    for group in groups:
        rep = reps[group.rep_id]
        mean, std = _mean_std(group)
        out.append({"recipe_key": group.recipe_key, "task": group.task, "level": group.level,
                    "campaign": rep.campaign, **{slot: getattr(rep, slot) for slot in SLOTS},
                    "metric": metric, "mean": mean, "std": std, "count": int(group.n),
                    "best": _num(group.best), "params": _num(group.params), "macs": _num(group.macs),
                    "config": rep.recipe_json})
    return out


def _by_slot(session: Session, conds: list[ColumnElement[bool]], slot: str, metric: str, col: Any,
             desc: bool, limit: int | None) -> list[dict[str, Any]]:
    slot_col = getattr(RunRow, slot)
    stmt = (select(slot_col.label("principle"), RunRow.task, RunRow.level, CampaignRow.name.label("campaign"),
                   *_stats_columns(col, desc), func.count(RunRow.recipe_key.distinct()).label("recipes"))
            .join(CampaignRow, CampaignRow.id == RunRow.campaign_id)
            .where(*conds, col.is_not(None))
            # per campaign too, as recipes: two campaigns' levels of one name need not be the same fidelity
            .group_by(slot_col, RunRow.task, RunRow.level, CampaignRow.id, CampaignRow.name)
            .order_by(_order(func.avg(cast(col, Float)), desc), func.count(col).desc(), slot_col, CampaignRow.id)
            .limit(limit))
    out = []
    for group in session.execute(stmt):
        mean, std = _mean_std(group)
        out.append({"slot": slot, "principle": group.principle, "task": group.task, "level": group.level,
                    "campaign": group.campaign, "metric": metric, "mean": mean, "std": std, "count": int(group.n),
                    "recipes": int(group.recipes), "best": _num(group.best), "params": _num(group.params),
                    "macs": _num(group.macs)})
    return out


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def task_and_level(session: Session, campaign: CampaignRow | None, scope: list[ColumnElement[bool]],
                   task: str | None, level: str | None) -> list[ColumnElement[bool]]:
    """Conditions for ``task`` and ``level`` (None: any). One with no run in ``scope`` is an
    :class:`UnknownNameError` listing those that have runs, unless ``campaign``'s file declares it
    (a declared level may have no runs yet)."""
    tasks, levels = declared(campaign.spec_json) if campaign is not None else ([], [])
    known = {"task": set(tasks), "fidelity": set(levels)}
    where_text = "in this leaderboard" if campaign is None else f"in campaign {campaign.name!r}"
    conds = []
    for column, value, what in ((RunRow.task, task, "task"), (RunRow.level, level, "fidelity")):
        if value is not None:
            if value not in known[what]:
                check_known(session, column, value, what, where_text, scope)
            conds.append(column == value)
    return conds


def declared(spec_text: str | None) -> tuple[list[str], list[str]]:
    """``(tasks, level names)`` a campaign's stored file declares, in order; empty if it cannot be read.
    Read leniently (a file an older principlelab stored still names its levels)."""
    try:
        spec = tomllib.loads(spec_text or "")
    except (tomllib.TOMLDecodeError, TypeError):
        return [], []
    tasks = [t for t in spec.get("tasks") or [] if isinstance(t, str)]
    levels = [e["name"] for e in spec.get("levels") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)]
    return tasks, levels


def _level_progress(session: Session, campaign: CampaignRow, versions: list[StudyVersionRow]) -> list[dict[str, Any]]:
    """Per task and level the campaign's file declares: whether it started, the trials recorded in its
    latest study version (a retried trial once), and the target (the first level's ``trials``; a later
    level's promotions times its seeds; None for a time budget)."""
    from principlelab.studies.campaign_file import parse_campaign

    try:
        spec = parse_campaign(campaign.spec_json, source=f"campaign {campaign.name!r}")
    except ConfigError:  # a file an older principlelab accepted: no progress view, the rest still shows
        return []
    out = []
    for task in spec.tasks:
        for index, level in enumerate(spec.levels):
            latest = max((sv for sv in versions if sv.task == task and sv.level == level.name),
                         key=lambda sv: sv.version, default=None)
            entry: dict[str, Any] = {"task": task, "level": level.name, "started": latest is not None,
                                     "trials": 0, "target": level.trials if index == 0 else None}
            if latest is not None:
                entry["trials"] = session.scalar(select(func.count()).where(
                    RunRow.study_version_id == latest.id,
                    ~and_(RunRow.status == "failed", RunRow.failure_reason.like(f"%{RETRIED}")))) or 0
                if index > 0:
                    promoted = session.scalar(select(func.count()).select_from(PromotionRow)
                                              .where(PromotionRow.to_study_version_id == latest.id)) or 0
                    entry["target"] = promoted * level.seeds
            out.append(entry)
    return out


def check_known(session: Session, column: Any, value: str, what: str, where_text: str,
                scope: list[ColumnElement[bool]]) -> None:
    """Raise :class:`UnknownNameError` (listing the values that occur) if no run in ``scope`` (described
    by ``where_text``, e.g. ``in campaign 'c'``) has ``column == value``."""
    if session.scalar(select(RunRow.id).where(column == value, *scope).limit(1)) is None:
        known = session.scalars(select(column).where(column.is_not(None), *scope).distinct())
        raise UnknownNameError(what, value, known, scope=where_text)


# -------------------------------------------------------------------------------------------- status


def status(db: LeaderboardDB, campaign: str, *, metric: str = "test_accuracy") -> dict[str, Any]:
    """Per study version (task, level, version) of a campaign: run counts by status, the top 5
    failure reasons and the best complete run by ``metric``; plus campaign totals, every failure reason
    with its count over the campaign, and promotions."""
    higher = higher_is_better(metric)
    col = getattr(RunRow, metric)
    with db.session(write=False) as session:
        row = campaign_row(session, campaign)
        versions = list(session.scalars(
            select(StudyVersionRow).where(StudyVersionRow.campaign_id == row.id)
            .order_by(StudyVersionRow.level_index, StudyVersionRow.task, StudyVersionRow.level,
                      StudyVersionRow.version)))
        counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(RUN_STATUSES, 0))
        for sv_id, run_status, n in session.execute(
                select(RunRow.study_version_id, RunRow.status, func.count())
                .where(RunRow.campaign_id == row.id).group_by(RunRow.study_version_id, RunRow.status)):
            counts[sv_id][run_status] = int(n)
        failures: dict[int, list[dict[str, Any]]] = defaultdict(list)
        failure_totals: Counter[str] = Counter()  # every reason, summed over the study versions
        for sv_id, reason, n in session.execute(
                select(RunRow.study_version_id, RunRow.failure_reason, func.count().label("n"))
                .where(RunRow.campaign_id == row.id, RunRow.status == "failed")
                .group_by(RunRow.study_version_id, RunRow.failure_reason)
                .order_by(RunRow.study_version_id, func.count().desc(), RunRow.failure_reason)):
            failure_totals[reason or "(no reason recorded)"] += int(n)
            if len(failures[sv_id]) < 5:
                failures[sv_id].append({"reason": reason or "(no reason recorded)", "count": int(n)})
        progress = _level_progress(session, row, versions)
        promotions = session.scalar(select(func.count()).select_from(PromotionRow).join(
            StudyVersionRow, StudyVersionRow.id == PromotionRow.to_study_version_id)
            .where(StudyVersionRow.campaign_id == row.id)) or 0
        by_id = {sv.id: sv for sv in versions}
        entries = []
        totals = dict.fromkeys(RUN_STATUSES, 0)
        for sv in versions:
            best = session.execute(
                select(RunRow).where(RunRow.study_version_id == sv.id, RunRow.status == "complete",
                                     col.is_not(None))
                .order_by(_order(col, higher), RunRow.id).limit(1)).scalar()
            sv_counts = counts.get(sv.id, dict.fromkeys(RUN_STATUSES, 0))
            for key, value in sv_counts.items():
                totals[key] = totals.get(key, 0) + value
            parent = by_id.get(sv.parent_id) if sv.parent_id is not None else None
            entries.append({
                "id": sv.id, "task": sv.task, "level": sv.level, "level_index": sv.level_index,
                "version": sv.version, "fingerprint": sv.fingerprint,
                "optuna_study_name": sv.optuna_study_name, "parent_id": sv.parent_id,
                "parent_version": None if parent is None else parent.version,
                "created_at": sv.created_at.isoformat() if sv.created_at else None,
                "counts": dict(sv_counts), "total": sum(sv_counts.values()),
                "failures": failures.get(sv.id, []),
                "best": None if best is None else {
                    "run_id": best.id, "trial_number": best.trial_number, "seed": best.seed,
                    "recipe_key": best.recipe_key, **{slot: getattr(best, slot) for slot in SLOTS},
                    "metric": metric, "value": getattr(best, metric)},
            })
    return {"campaign": row.name, "storage": db.masked_url, "file_hash": row.file_hash,
            "created_at": row.created_at.isoformat() if row.created_at else None, "metric": metric,
            "totals": {**totals, "total": sum(totals.values())}, "promotions": int(promotions),
            "progress": progress,
            "failure_reasons": [{"reason": reason, "count": n}
                                for reason, n in sorted(failure_totals.items(), key=lambda item: (-item[1], item[0]))],
            "study_versions": entries}


def __getattr__(name: str) -> Any:
    """``leaderboard.compare`` (documented) lives in :mod:`.compare`, which imports this module."""
    if name == "compare":
        from principlelab.studies.compare import compare

        return compare
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GROUP_BYS", "METRICS", "higher_is_better", "query", "result_columns", "status"]  # and compare, lazily
