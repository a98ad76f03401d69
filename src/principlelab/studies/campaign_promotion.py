"""Promotion between a campaign's levels: :class:`CampaignPromotion`, a part of the campaign runner.

Step 3 of the loop in :mod:`principlelab.studies.campaign`: pick the lower level's top-k (or Pareto)
recipes (:mod:`principlelab.studies.promotion`) and enqueue each, ``seeds`` times, into the next
level's study. Each promotion is a unique row, so exactly one worker enqueues it; one whose worker
died between recording and enqueueing is completed later (by a rerun on SQLite, by another worker
once the heartbeat grace has passed on a server).
"""

from __future__ import annotations

import datetime
import statistics
from collections import defaultdict
from typing import Any

import optuna

from principlelab.core.recipe import SLOTS
from principlelab.studies.campaign_file import CampaignSpec
from principlelab.studies.db import LeaderboardDB
from principlelab.studies.objective import LevelContext
from principlelab.studies.optuna_setup import HEARTBEAT_GRACE_S, is_retry
from principlelab.studies.promotion import Candidate, pareto, top_k
from principlelab.studies.space import SearchSpace

__all__ = ["CampaignPromotion"]


class CampaignPromotion:
    """Mixin for :class:`~principlelab.studies.campaign.CampaignRunner`: a level's ranking and promotion."""

    spec: CampaignSpec
    space: SearchSpace
    db: LeaderboardDB

    def candidates(self, ctx: LevelContext) -> list[Candidate]:
        """Per recipe at a level: mean objective over its complete runs, mean cost, one run id.

        Means are exact sums (``statistics.fmean``), so equal results tie whatever the order of the
        runs, and the campaign's rank correlation equals the report's (``report/data.py``)."""
        grouped: dict[str, list[Any]] = defaultdict(list)
        for run in self.db.runs_for_study_version(ctx.study_version_id, status="complete"):
            grouped[run.recipe_key].append(run)
        cost_of = "macs" if self.spec.promotion.cost == "macs" else "params"
        return [Candidate(key, statistics.fmean(r.objective for r in runs),
                          statistics.fmean(getattr(r, cost_of) or 0 for r in runs), min(r.id for r in runs))
                for key, runs in grouped.items()]

    def promote(self, lower: LevelContext, upper: LevelContext, study: optuna.Study) -> None:
        """Enqueue the lower level's best recipes into ``study``, ``seeds`` times each, exactly once."""
        rule = self.spec.promotion
        chosen = (top_k if rule.rule == "top_k" else pareto)(self.candidates(lower), rule.k)
        enqueued: dict[str, set[int]] = defaultdict(set)
        for trial in study.get_trials(deepcopy=False):
            if "recipe_key" in trial.user_attrs and not is_retry(trial):
                enqueued[trial.user_attrs["recipe_key"]].add(int(trial.user_attrs["seed"]))
        for candidate in chosen:
            won = self.db.record_promotion(lower.study_version_id, upper.study_version_id, candidate.recipe_key,
                                           candidate.run_id, candidate.value)
            if not won and not self._orphaned(upper, candidate.recipe_key, enqueued):
                continue  # another worker promoted it (and enqueues it), or it is complete
            # the winner enqueues; a promotion whose winner died before enqueueing is completed later
            run = self.db.get_run(candidate.run_id)
            assert run is not None, f"run {candidate.run_id} was read from this database to rank it"
            slots = {slot: {"name": getattr(run, slot), "config": getattr(run, f"{slot}_config") or {}}
                     for slot in SLOTS}
            params = self.space.params_for(slots)
            for offset in range(upper.level.seeds):
                seed = self.spec.seed + offset
                if seed not in enqueued[candidate.recipe_key]:
                    study.enqueue_trial(params, user_attrs={"promoted_from": run.id, "seed": seed,
                                                            "recipe_key": candidate.recipe_key})

    def _orphaned(self, upper: LevelContext, recipe_key: str, enqueued: dict[str, set[int]]) -> bool:
        """A promotion whose seeds are not all enqueued, recorded by a worker that died between recording
        and enqueueing: on SQLite at once (one process runs a campaign there, so the one that recorded it
        is gone; a rerun right after a kill had gone on without the recipe), on a server once it is older
        than the heartbeat grace (another worker may be enqueueing it right now)."""
        if len(enqueued[recipe_key]) >= upper.level.seeds:
            return False
        if self.db.backend != "postgresql":
            return True
        rows = [p for p in self.db.promotions(to_study_version_id=upper.study_version_id)
                if p.recipe_key == recipe_key]
        if not rows:
            return False
        created = rows[0].created_at
        if created.tzinfo is None:  # SQLite returns naive datetimes (stored as UTC)
            created = created.replace(tzinfo=datetime.UTC)
        age = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
        return age > HEARTBEAT_GRACE_S
