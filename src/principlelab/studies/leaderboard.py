"""Queries over the leaderboard database: ranked runs and recipe/principle aggregates; paired
comparisons (:mod:`.compare`) and campaign status (:mod:`.campaign_status`) build on them. Pure
functions over a :class:`~principlelab.studies.db.LeaderboardDB`.

Aggregates (mean, sample std, count) are computed in SQL with ``GROUP BY`` (``avg``, ``count`` and a
sum of squares), so only the top groups travel to Python. Where the sum of squares less n times the
squared mean has cancelled most of its digits (values far from zero with a tiny spread: MACs of 1e10
and a spread of 1 gave a std of 181), the group's std is computed from its values instead
(:func:`_exact_stds`).
"""

from __future__ import annotations

import math
import statistics
import tomllib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Float, Numeric, cast, func, select
from sqlalchemy.orm import Session

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError, UnknownNameError
from principlelab.studies.db import (
    RUN_STATUSES,
    CampaignRow,
    LeaderboardDB,
    RunRow,
    StudyVersionRow,
    campaign_row,
)

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
    "id", "campaign", "task", "level", "version", "seed", "status", *SLOTS, "recipe_key", "test_accuracy",
    "val_accuracy", "test_loss", "val_loss", "objective", "params", "macs", "samples_seen", "wall_s",
    "growth_event_count")
RECIPE_COLUMNS: tuple[str, ...] = (
    "recipe_key", "task", "level", "campaign", *SLOTS, "metric", "mean", "std", "count", "versions", "best",
    "params", "macs", "config")
SLOT_COLUMNS: tuple[str, ...] = (
    "slot", "principle", "task", "level", "campaign", "metric", "mean", "std", "count", "versions", "recipes", "best",
    "params", "macs")


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
          descending: bool | None = None, study_version: int | str | None = None) -> list[dict[str, Any]]:
    """The leaderboard: runs (``group_by="run"``), recipes (``"recipe"``) or principles of one slot.

    ``where`` maps slots to principle names (all must match). ``status=None`` includes every status.
    Rows are sorted best first by ``metric`` (ascending for losses, size, compute and time) unless
    ``descending`` says otherwise; ``top`` (None or <= 0: all) cuts the list. ``study_version``: None
    for every study version, ``"latest"`` for each (campaign, task, level)'s newest, or a version number
    (see :func:`study_version_filter`).

    * runs: one dict per run with the keys :data:`RUN_COLUMNS` (``version``: its study version).
    * ``"recipe"``: groups by ``(campaign, recipe_key, task, level)``; :data:`RECIPE_COLUMNS`, with the
      slot names and ``config`` (the ``recipe_json``) of one representative run, ``mean``, ``std``
      (sample std, None for one run), ``count`` (runs with a value), ``versions`` (how many study versions
      the runs come from), ``best`` and mean ``params``/``macs``.
    * a slot: groups by ``(principle of that slot, task, level, campaign)``; :data:`SLOT_COLUMNS`.
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
        conds = _filters(session, campaign=campaign, task=task, level=level, where=where, status=status,
                         study_version=study_version)
        if group_by == "run":
            return _runs(session, conds, col, desc, limit)
        if group_by == "recipe":
            return _by_recipe(session, conds, metric, col, desc, limit)
        return _by_slot(session, conds, group_by, metric, col, desc, limit)


def _filters(session: Session, *, campaign: str | None, task: str | None, level: str | None,
             where: dict[str, str] | None, status: str | None,
             study_version: int | str | None = None) -> list[ColumnElement[bool]]:
    """Conditions on :class:`RunRow`; a task, fidelity or principle with no run in scope is an
    :class:`UnknownNameError` listing those that have runs (a typo is not an empty answer)."""
    row = campaign_row(session, campaign) if campaign is not None else None
    scope = [] if row is None else [RunRow.campaign_id == row.id]
    conds = [*scope, *task_and_level(session, row, scope, task, level)]
    where_text = "in this leaderboard" if campaign is None else f"in campaign {campaign!r}"
    conds += study_version_filter(session, row, study_version, where_text)
    if status is not None:
        conds.append(RunRow.status == status)
    for slot, name in (where or {}).items():
        if slot not in SLOTS:
            raise UnknownNameError("slot", slot, SLOTS)
        column = getattr(RunRow, slot)
        check_known(session, column, name, f"{slot} principle", where_text, scope)
        conds.append(column == name)
    return conds


def order_by_metric(expr: Any, desc: bool) -> Any:
    return expr.desc() if desc else expr.asc()


TIE_DIGITS = 12
"""Decimals a group's mean is ranked by: means equal but for rounding (the average of 21/51, 25/51 and 17/51 is
1 ulp below 21/51) tie, and the tie goes to more runs, then to the key, as the docs say."""


def _ranked_mean(col: Any) -> Any:
    """A group's mean of ``col`` to :data:`TIE_DIGITS` decimals, for ordering (``round`` needs a numeric on
    PostgreSQL)."""
    return func.round(cast(func.avg(cast(col, Float)), Numeric), TIE_DIGITS)


def _runs(session: Session, conds: list[ColumnElement[bool]], col: Any, desc: bool,
          limit: int | None) -> list[dict[str, Any]]:
    columns = [getattr(RunRow, name) for name in RUN_COLUMNS if name not in ("campaign", "version")]
    stmt = (select(CampaignRow.name.label("campaign"), StudyVersionRow.version.label("version"), *columns)
            .join(CampaignRow, CampaignRow.id == RunRow.campaign_id)
            .join(StudyVersionRow, StudyVersionRow.id == RunRow.study_version_id).where(*conds)
            .order_by(col.is_(None), order_by_metric(col, desc), RunRow.id).limit(limit))
    return [{name: row._mapping[name] for name in RUN_COLUMNS} for row in session.execute(stmt)]


def _stats_columns(col: Any, desc: bool) -> list[Any]:
    value = cast(col, Float)
    return [func.count(col).label("n"), func.avg(value).label("mean"),
            func.sum(value * value).label("sumsq"), func.min(value).label("low"), func.max(value).label("high"),
            (func.max(value) if desc else func.min(value)).label("best"),
            func.avg(cast(RunRow.params, Float)).label("params"),
            func.count(RunRow.study_version_id.distinct()).label("versions"),
            func.avg(cast(RunRow.macs, Float)).label("macs")]


CANCELLED = 1e-6
"""A group whose sum of squares less n times the squared mean is below this fraction of the sum of squares
(a relative spread under about 1e-3) gets its std from its values: the difference has lost most digits."""


def _mean_std(row: Any) -> tuple[float, float | None]:
    """The mean and the sample std (None for one run: a std over one value is undefined, not 0); NaN
    where the sums cancelled (see :data:`CANCELLED`) and :func:`_exact_stds` must give it."""
    n, mean, sumsq = int(row.n), float(row.mean), float(row.sumsq)
    if n < 2:
        return mean, None
    if row.low == row.high:
        return mean, 0.0
    spread = sumsq - n * mean * mean
    if spread <= CANCELLED * sumsq:
        return mean, math.nan
    return mean, math.sqrt(spread / (n - 1))


def _exact_stds(session: Session, conds: list[ColumnElement[bool]], col: Any, key_columns: Sequence[Any],
                keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], float]:
    """The sample std of ``col`` over the runs of each group in ``keys`` (values of ``key_columns``; the
    first column narrows the query), from the values themselves (:func:`statistics.stdev`, exact sums)."""
    values: dict[tuple[Any, ...], list[float]] = {key: [] for key in keys}
    firsts = sorted({key[0] for key in keys})
    for start in range(0, len(firsts), 500):
        stmt = (select(*key_columns, cast(col, Float)).where(*conds, col.is_not(None),
                                                              key_columns[0].in_(firsts[start:start + 500])))
        for row in session.execute(stmt):
            found = values.get(tuple(row[:-1]))
            if found is not None:
                found.append(float(row[-1]))
    return {key: statistics.stdev(found) for key, found in values.items()}


def _with_exact_stds(session: Session, conds: list[ColumnElement[bool]], col: Any, key_columns: Sequence[Any],
                     groups: Sequence[Any]) -> list[tuple[float, float | None]]:
    """``(mean, std)`` of each of ``groups`` (rows with the ``key_columns`` by name, and the sums)."""
    stats = [_mean_std(group) for group in groups]
    cancelled = {tuple(getattr(group, c.key) for c in key_columns): i
                 for i, (group, (_, std)) in enumerate(zip(groups, stats, strict=True))
                 if std is not None and math.isnan(std)}
    if cancelled:
        for key, std in _exact_stds(session, conds, col, key_columns, list(cancelled)).items():
            stats[cancelled[key]] = (stats[cancelled[key]][0], std)
    return stats


def _by_recipe(session: Session, conds: list[ColumnElement[bool]], metric: str, col: Any, desc: bool,
               limit: int | None) -> list[dict[str, Any]]:
    stmt = (select(RunRow.recipe_key, RunRow.task, RunRow.level, RunRow.campaign_id, *_stats_columns(col, desc),
                   func.min(RunRow.id).label("rep_id"))
            .where(*conds, col.is_not(None))
            # per campaign too: two campaigns' levels of one name need not be the same fidelity
            .group_by(RunRow.campaign_id, RunRow.recipe_key, RunRow.task, RunRow.level)
            .order_by(order_by_metric(_ranked_mean(col), desc), func.count(col).desc(), RunRow.recipe_key,
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
    stats = _with_exact_stds(session, conds, col, [RunRow.recipe_key, RunRow.campaign_id, RunRow.task, RunRow.level],
                             groups)
    for group, (mean, std) in zip(groups, stats, strict=True):
        rep = reps[group.rep_id]
        out.append({"recipe_key": group.recipe_key, "task": group.task, "level": group.level,
                    "campaign": rep.campaign, **{slot: getattr(rep, slot) for slot in SLOTS},
                    "metric": metric, "mean": mean, "std": std, "count": int(group.n),
                    "versions": int(group.versions), "best": _num(group.best), "params": _num(group.params),
                    "macs": _num(group.macs), "config": rep.recipe_json})
    return out


def _by_slot(session: Session, conds: list[ColumnElement[bool]], slot: str, metric: str, col: Any,
             desc: bool, limit: int | None) -> list[dict[str, Any]]:
    slot_col = getattr(RunRow, slot)
    stmt = (select(slot_col, RunRow.task, RunRow.level, CampaignRow.id.label("campaign_id"),
                   CampaignRow.name.label("campaign"), *_stats_columns(col, desc),
                   func.count(RunRow.recipe_key.distinct()).label("recipes"))
            .join(CampaignRow, CampaignRow.id == RunRow.campaign_id)
            .where(*conds, col.is_not(None))
            # per campaign too, as recipes: two campaigns' levels of one name need not be the same fidelity
            .group_by(slot_col, RunRow.task, RunRow.level, CampaignRow.id, CampaignRow.name)
            .order_by(order_by_metric(_ranked_mean(col), desc), func.count(col).desc(), slot_col,
                      CampaignRow.id)
            .limit(limit))
    groups = session.execute(stmt).all()
    stats = _with_exact_stds(session, conds, col, [slot_col, RunRow.task, RunRow.level, RunRow.campaign_id], groups)
    out = []
    for group, (mean, std) in zip(groups, stats, strict=True):
        out.append({"slot": slot, "principle": getattr(group, slot), "task": group.task, "level": group.level,
                    "campaign": group.campaign, "metric": metric, "mean": mean, "std": std, "count": int(group.n),
                    "versions": int(group.versions), "recipes": int(group.recipes), "best": _num(group.best),
                    "params": _num(group.params), "macs": _num(group.macs)})
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


LATEST = "latest"


def study_version_filter(session: Session, campaign: CampaignRow | None, study_version: int | str | None,
                         where_text: str) -> list[ColumnElement[bool]]:
    """Conditions keeping the runs of one study version per (campaign, task, level).

    ``None``: no condition (every version). ``"latest"``: each level's newest version, the one a
    resumed campaign writes to. A number (or its text, as the CLI passes it): that version of every
    level that has it; one that no level in scope has is an :class:`UnknownNameError` listing those
    that exist. A level's versions differ in their search space or in what a stored metric means
    (``METRICS_VERSION``), so this keeps a ranking from mixing them."""
    if study_version is None:
        return []
    text = str(study_version).strip().lower()
    if text != LATEST and not (text.isdigit() and int(text) >= 1):
        raise ConfigError(f"study version must be {LATEST!r} or a version number >= 1, got {study_version!r}")
    stmt = select(StudyVersionRow.id, StudyVersionRow.campaign_id, StudyVersionRow.task, StudyVersionRow.level,
                  StudyVersionRow.version)
    if campaign is not None:
        stmt = stmt.where(StudyVersionRow.campaign_id == campaign.id)
    versions = session.execute(stmt).all()
    if text == LATEST:
        newest: dict[tuple[int, str, str], Any] = {}
        for sv in versions:
            key = (sv.campaign_id, sv.task, sv.level)
            if key not in newest or sv.version > newest[key].version:
                newest[key] = sv
        ids = [sv.id for sv in newest.values()]
    else:
        ids = [sv.id for sv in versions if sv.version == int(text)]
        if not ids:
            raise UnknownNameError("study version", text, sorted({str(sv.version) for sv in versions}, key=int),
                                   scope=where_text)
    return [RunRow.study_version_id.in_(ids)]


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


def check_known(session: Session, column: Any, value: str, what: str, where_text: str,
                scope: list[ColumnElement[bool]]) -> None:
    """Raise :class:`UnknownNameError` (listing the values that occur) if no run in ``scope`` (described
    by ``where_text``, e.g. ``in campaign 'c'``) has ``column == value``."""
    if session.scalar(select(RunRow.id).where(column == value, *scope).limit(1)) is None:
        known = session.scalars(select(column).where(column.is_not(None), *scope).distinct())
        raise UnknownNameError(what, value, known, scope=where_text)


def __getattr__(name: str) -> Any:
    """``leaderboard.compare`` and ``leaderboard.status`` (documented) live in :mod:`.compare` and
    :mod:`.campaign_status`, which import this module."""
    if name == "compare":
        from principlelab.studies.compare import compare

        return compare
    if name == "status":
        from principlelab.studies.campaign_status import status

        return status
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GROUP_BYS", "METRICS", "higher_is_better", "query", "result_columns",
           "study_version_filter"]  # and compare and status, lazily
