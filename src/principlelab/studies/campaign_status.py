"""``plab campaign status``: a campaign's progress, failures and best run per study version
(:func:`status`; also reachable as ``principlelab.studies.leaderboard.status``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError
from principlelab.studies.db import (
    RUN_STATUSES,
    CampaignRow,
    LeaderboardDB,
    PromotionRow,
    RunRow,
    StudyVersionRow,
    campaign_row,
)
from principlelab.studies.leaderboard import higher_is_better, order_by_metric
from principlelab.studies.tables import RETRIED


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
                .order_by(order_by_metric(col, higher), RunRow.id).limit(1)).scalar()
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


__all__ = ["status"]
