"""What happens to a trial whose worker died: :class:`StaleTrialRecorder`."""

from __future__ import annotations

from typing import Any

import optuna

from principlelab.core.recipe import SLOTS
from principlelab.studies.db import LeaderboardDB
from principlelab.studies.objective import LevelContext
from principlelab.studies.optuna_setup import HEARTBEAT_GRACE_S, retry_callback
from principlelab.studies.tables import RETRIED

__all__ = ["StaleTrialRecorder"]


class StaleTrialRecorder:
    """Optuna's retry of a trial whose worker died, plus a ``failed`` run row saying so."""

    def __init__(self, db: LeaderboardDB) -> None:
        self.db = db
        self.retry = retry_callback(max_retry=3)
        self.contexts: dict[str, LevelContext] = {}

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                 reason: str = f"worker lost: no heartbeat for {HEARTBEAT_GRACE_S} s; {RETRIED}", *,
                 counted: bool = True) -> None:
        """``counted=False``: an interruption, which does not use up the trial's retries."""
        self.retry(study, trial, counted=counted)
        ctx = self.contexts.get(study.study_name)
        if ctx is None:
            return
        principles = trial.user_attrs.get("principles", {})
        row: dict[str, Any] = {"trial_number": trial.number, "status": "failed", "failure_reason": reason,
                               "campaign_id": ctx.campaign_id, "study_version_id": ctx.study_version_id,
                               "optuna_study_name": ctx.study_name, "task": ctx.task, "level": ctx.level.name,
                               "seed": int(trial.user_attrs.get("seed", ctx.spec.seed)),
                               "space_fingerprint": ctx.space.fingerprint, "wall_s": 0.0, "growth_event_count": 0,
                               "recipe_key": trial.user_attrs.get("recipe_key", ""), "recipe_json": {}}
        for slot in SLOTS:
            row[slot] = principles.get(slot, trial.params.get(slot, ""))
            row[f"{slot}_config"] = {}
        self.db.record_run(row, [])
