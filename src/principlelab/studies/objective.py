"""One Optuna trial = one recipe trained at one level; its result is written to the leaderboard.

A trial ends in exactly one run row: ``complete`` (with metrics), ``pruned`` (metrics of its last
epoch), or ``failed`` (with the reason: rejected combination, bad config, divergence, crash). The
row and its growth events are written in one transaction before Optuna is told the trial's state.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields, replace
from typing import Any

import optuna
import torch

from principlelab.core.recipe import SLOTS, Recipe
from principlelab.core.tasks import TaskData, load_task
from principlelab.core.trainer import Callback, EpochReport, RunResult, Trainer, epoch_curve
from principlelab.errors import ConfigError
from principlelab.registry.versions import versions_for
from principlelab.studies.campaign_file import CampaignSpec, LevelSpec
from principlelab.studies.journal_batch import trial_writes
from principlelab.studies.optuna_setup import pruning_step_kind
from principlelab.studies.space import REJECTED_ATTR, SearchSpace, recipe_key
from principlelab.studies.tables import RETRIED

MMAC = 1_000_000
INTERRUPTED = f"interrupted: the worker stopped while training it; {RETRIED}"
"""The failure reason of a trial the user interrupted (Ctrl-C): retried, and uses up none of its retries."""
NOT_RUN = f"not run: the worker stopped after sampling it; {RETRIED}"
"""The failure reason of a trial sampled ahead and never trained because the worker stopped: retried too."""


def worker_id() -> str:
    """``host:pid`` of this process, stored on every trial as the user attribute ``worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class NotPromoted(Exception):
    """A later-level trial that no promotion enqueued (two workers raced for the last one)."""


class PruningCallback(Callback):
    """Reports validation accuracy (step: MMACs spent, or the epoch) and asks the pruner.

    With a rung-based pruner (Hyperband, successive halving) the rungs of every bracket sit at
    ``rung_base * 3**k`` MMACs and a rung takes the first value reported at or past it, so reporting
    only when a rung is crossed gives the same decisions at a fraction of the storage round trips.
    """

    def __init__(self, trial: optuna.Trial, step_kind: str, rung_base: int | None = None) -> None:
        self.trial, self.step_kind = trial, step_kind
        self.next_rung = rung_base
        self.last: EpochReport | None = None
        self.reports: list[EpochReport] = []
        self.step = 0
        self.events: list[Any] = []

    def on_growth(self, events: list[Any]) -> None:
        self.events.extend(events)

    def on_epoch_end(self, report: EpochReport) -> None:
        self.last = report
        self.reports.append(report)
        step = report.epoch + 1 if self.step_kind == "epoch" else max(self.step + 1, report.macs // MMAC)
        self.step = step
        if self.next_rung is not None:
            if step < self.next_rung:
                return
            while self.next_rung <= step:
                self.next_rung *= 3
        self.trial.report(report.val_accuracy, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {report.epoch + 1} epoch(s) at val accuracy "
                                     f"{report.val_accuracy:.4f}")


@dataclass
class LevelContext:
    """What every trial of one (campaign, task, level) shares."""

    spec: CampaignSpec
    task: str
    level_index: int
    level: LevelSpec
    campaign_id: int
    study_version_id: int
    study_name: str
    space: SearchSpace
    registry: Any
    db: Any
    rung_base: int | None = None  # smallest pruner rung (MMACs) for rung-based pruners; else report every epoch


class Objective:
    """Callable for ``study.optimize``: suggest (or replay a promotion), train, record, return.

    With ``defer_records`` the run rows are kept (:meth:`take_records`) instead of written: the
    sampling process writes them, before it tells Optuna the trial's state (:mod:`.sample_ahead`).
    With ``read_through`` (default) the pruner's reads during training see other workers' reports;
    without, they come from this process's view as of the training's start (a lone worker sampling
    ahead, whose pruner compares with its own reports only, saves the reads). With ``reports_with_state``
    the pruner's reports reach the journal in one append with the trial's state, when Optuna tells it
    (``study.optimize`` in this process), instead of in an append of their own when training ends.
    """

    def __init__(self, ctx: LevelContext, *, defer_records: bool = False, read_through: bool = True,
                 reports_with_state: bool = False) -> None:
        self.ctx, self.read_through, self.reports_with_state = ctx, read_through, reports_with_state
        self.deferred: list[tuple[dict[str, Any], list[dict[str, Any]]]] | None = [] if defer_records else None
        self._tasks: dict[int | None, TaskData] = {}  # by seed (None: all the data): the level's task

    def take_records(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """The deferred ``(run row, growth event rows)`` of the trial just run (and forget them)."""
        assert self.deferred is not None, "records are deferred only with defer_records=True"
        taken, self.deferred = self.deferred, []
        return taken

    def __call__(self, trial: optuna.Trial) -> float:
        ctx = self.ctx
        row: dict[str, Any] = {"trial_number": trial.number, "seed": ctx.spec.seed, "status": "failed"}
        step_kind = pruning_step_kind(ctx.level, ctx.level_index)
        pruning = PruningCallback(trial, step_kind, ctx.rung_base if step_kind == "compute" else None)
        with trial_writes(trial.storage, trial._trial_id):  # journal storage: one append for the recipe
            try:
                slots, seed = self.prepare(trial, worker_id())
            except ConfigError as exc:  # an incompatible combination: no training, and told PRUNED (see space)
                trial.set_user_attr(REJECTED_ATTR, str(exc))
                row.update({slot: str(trial.params.get(slot, "")) for slot in SLOTS})
                row.update({f"{slot}_config": {} for slot in SLOTS}, recipe_key="", recipe_json={})
                self._record(row, "rejected", f"rejected: {exc}")
                raise optuna.TrialPruned(f"rejected: {exc}") from None
        try:
            row["seed"] = seed
            if ctx.level_index > 0:
                row["promoted_from_run_id"] = trial.user_attrs.get("promoted_from")
            row.update(self._describe(slots))
            recipe = Recipe(task=ctx.task, fidelity=ctx.level.fidelity(), seed=seed, network=ctx.spec.network,
                            **slots)
            principles = ctx.registry.instantiate(recipe)
            task = self._task(recipe)
            # the pruner's reports and rung records reach the database with the trial's end in one append (with
            # reports_with_state, the append of its state)
            with trial_writes(trial.storage, trial._trial_id, read_through=self.read_through,
                              until_next_write=self.reports_with_state):
                result = Trainer(recipe, principles, task, [pruning]).run()
            result.versions = versions_for(ctx.registry, recipe)
        except optuna.TrialPruned as exc:
            self._record(row, "pruned", str(exc), reports=pruning.reports, events=pruning.events)
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            trial.set_user_attr("failure_reason", reason)
            self._record(row, "failed", reason, reports=pruning.reports, events=pruning.events)
            raise
        self._record(row, "complete", None, result=result)
        return result.val_accuracy

    def _task(self, recipe: Recipe) -> TaskData:
        """The recipe's task data, loaded once per seed by this objective (its level's task and fidelity;
        the seed picks only the training subset, so with all the data one load serves every seed); each
        trial gets its own copy of the tensors, as from :func:`load_task` (training may change them)."""
        key = recipe.seed if recipe.fidelity.data_fraction < 1.0 else None
        loaded = self._tasks.get(key)
        if loaded is None:
            loaded = self._tasks[key] = load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
        return replace(loaded, **{field.name: getattr(loaded, field.name).clone() for field in fields(loaded)
                                  if isinstance(getattr(loaded, field.name), torch.Tensor)})

    def prepare(self, trial: optuna.Trial, worker: str) -> tuple[dict[str, dict[str, Any]], int]:
        """Everything a trial writes before training: the ``worker`` attribute (which process runs it;
        a retry overwrites its copy), the recipe's parameters and the ``principles`` attribute.

        Writes only what differs, so a trial prepared ahead by the sampling process
        (:mod:`~principlelab.studies.sample_ahead`) is replayed here without a write. Raises
        :class:`ConfigError` for an incompatible combination.
        """
        if trial.user_attrs.get("worker") != worker:
            trial.set_user_attr("worker", worker)
        slots, seed = self._choose(trial)
        principles = {slot: slots[slot]["name"] for slot in SLOTS}
        if trial.user_attrs.get("principles") != principles:
            trial.set_user_attr("principles", principles)
        return slots, seed

    def _choose(self, trial: optuna.Trial) -> tuple[dict[str, dict[str, Any]], int]:
        """The recipe's slots and seed: sampled at the first level, replayed from a promotion later."""
        ctx = self.ctx
        if ctx.level_index == 0:
            return ctx.space.suggest(trial), ctx.spec.seed
        if "promoted_from" not in trial.user_attrs:
            raise NotPromoted("no promoted recipe was waiting for this trial (another worker took it)")
        slots = ctx.space.suggest(trial)
        return slots, int(trial.params.get("seed", trial.user_attrs.get("seed", ctx.spec.seed)))

    def _describe(self, slots: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ctx = self.ctx
        described: dict[str, Any] = {
            "recipe_key": recipe_key(ctx.registry, slots, ctx.spec.network.model_dump(mode="json")),
            "recipe_json": {"slots": slots, "network": ctx.spec.network.model_dump(mode="json")},
        }
        for slot in SLOTS:
            described[slot] = slots[slot]["name"]
            described[f"{slot}_config"] = slots[slot].get("config", {})
        return described

    def _record(self, row: dict[str, Any], status: str, reason: str | None, *, result: RunResult | None = None,
                reports: list[EpochReport] = (), events: list[Any] = ()) -> None:  # type: ignore[assignment]
        ctx = self.ctx
        row = {**row, "status": status, "failure_reason": reason, "campaign_id": ctx.campaign_id,
               "study_version_id": ctx.study_version_id, "optuna_study_name": ctx.study_name, "task": ctx.task,
               "level": ctx.level.name, "space_fingerprint": ctx.space.fingerprint}
        event_rows = [e.to_dict() for e in events]
        if result is not None:
            row.update(test_accuracy=result.test_accuracy, val_accuracy=result.val_accuracy,
                       test_loss=result.test_loss, val_loss=result.val_loss, params=result.params, macs=result.macs,
                       samples_seen=result.samples_seen, wall_s=result.wall_s, versions=result.versions,
                       objective=result.val_accuracy, curve=result.curve(), structure=result.structure)
            event_rows = [e.to_dict() for e in result.growth_events]
        elif reports:
            report = reports[-1]
            row.update(curve=epoch_curve(list(reports)), structure={"widths": report.widths, "skips": []},
                       val_accuracy=report.val_accuracy, val_loss=report.val_loss, params=report.params,
                       macs=report.macs, samples_seen=report.samples_seen, wall_s=report.wall_s)
        row.setdefault("wall_s", 0.0)
        if self.deferred is not None:
            self.deferred.append((row, event_rows))
        else:
            ctx.db.record_run(row, event_rows)
