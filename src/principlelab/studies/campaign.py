"""Run a campaign: sample at the first level, promote the best explicitly, rerun them at the next.

Every worker (``plab campaign run`` itself, its ``--workers`` processes, ``plab worker`` on other
machines) runs the same loop over tasks and levels against the shared storage:

1. level 0: start sampled trials until the campaign's trial count (or time budget) is reached;
2. wait until no trial of the level is running (stale trials are failed and retried by heartbeat);
3. promote: pick the top-k (or Pareto) recipes; each promotion is a unique row, so exactly one
   worker enqueues it, ``seeds`` times, into the next level's study;
4. later levels: run the enqueued trials; then report the rank correlation with the level below.

Rerunning a campaign continues where it stopped: finished trials are never repeated.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import text

from principlelab.core.tasks import FILE_PREFIX, load_task, pin_file_task
from principlelab.errors import ConfigError, TaskDataError, UnknownNameError
from principlelab.studies.campaign_file import CampaignSpec, file_hash, parse_campaign
from principlelab.studies.campaign_promotion import CampaignPromotion
from principlelab.studies.db import LeaderboardDB
from principlelab.studies.gc_freeze import freeze_long_lived_objects
from principlelab.studies.journal_batch import fresh_reads
from principlelab.studies.objective import INTERRUPTED, MMAC, LevelContext, Objective
from principlelab.studies.optuna_setup import (
    logical_trials,
    make_pruner,
    make_sampler,
    make_storage,
    rung_base,
)
from principlelab.studies.promotion import RankCorrelation, rank_correlation
from principlelab.studies.runner_lock import campaign_runner_lock
from principlelab.studies.sample_ahead import PRUNERS as SAMPLE_AHEAD_PRUNERS
from principlelab.studies.sample_ahead import can_sample_ahead, forks_here, run_level_sampled_ahead
from principlelab.studies.space import SearchSpace
from principlelab.studies.sql_setup import advisory_keys
from principlelab.studies.stale_trials import StaleTrialRecorder
from principlelab.studies.worker_heartbeat import heartbeat_for

ProgressFn = Callable[["LevelProgress"], None]


@dataclass
class LevelProgress:
    """Where one level of one task stands."""

    task: str
    level: str
    done: int
    target: int | None
    running: int
    best: float | None
    started: float = field(default_factory=time.perf_counter)


@dataclass
class CampaignOutcome:
    """What a finished campaign reports: rank correlations and warnings per task and promotion."""

    correlations: dict[tuple[str, str, str], RankCorrelation] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@contextmanager
def _names_the_section(campaign: str, section: str) -> Iterator[None]:
    """Prefix a bad name, config or data file error with the part of the campaign file it comes from."""
    try:
        yield
    except (UnknownNameError, ConfigError, TaskDataError) as exc:
        exc.args = (f"campaign {campaign!r}, {section}: {exc}", *exc.args[1:])
        raise


class CampaignRunner(CampaignPromotion):
    """One worker's view of a campaign (see the module docstring for the loop)."""

    def __init__(self, spec: CampaignSpec, text: str, url: str, *, registry: Any = None,
                 workers: int = 1, local_workers: int | None = None, progress: ProgressFn | None = None,
                 sample_ahead: bool | None = None, coordinator: bool = True, freeze_gc: bool = False) -> None:
        """``workers``: more than one when other workers share the studies (TPE's constant liar);
        ``local_workers``: worker processes on this machine, this one included (default ``workers``);
        ``sample_ahead``: sample each first-level trial in a second process while earlier ones train
        (:mod:`~principlelab.studies.sample_ahead`; with Hyperband, successive halving or no pruner);
        None (the default): on Linux when the machine has a free core for each local worker's process;
        ``coordinator``: ``plab campaign run`` (False for workers, which join it): holds the campaign's
        coordinator lock (:mod:`~principlelab.studies.runner_lock`) until :meth:`close`;
        ``freeze_gc``: a worker process: before its first level, keep the garbage collector off every
        object alive (:mod:`~principlelab.studies.gc_freeze`)."""
        from principlelab.registry import get_registry

        self.spec, self.text, self.url, self.workers = spec, text, url, workers
        self.freeze_gc = freeze_gc
        local = workers if local_workers is None else local_workers
        self.sample_ahead = can_sample_ahead(local) if sample_ahead is None else sample_ahead
        if self.sample_ahead and not forks_here():
            raise ConfigError(f"sampling ahead forks a process, which principlelab does on Linux only (this is "
                              f"{sys.platform}); run without --sample-ahead")
        self.registry = registry or get_registry()
        with _names_the_section(spec.name, "[search]"):
            self.space = SearchSpace(self.registry, spec.search.principles(), spec.search.fixed)
        self._held = ExitStack()  # the data files' pins and the coordinator lock, until close()
        try:
            hashes = self._load_tasks()
            if coordinator:
                self._held.enter_context(campaign_runner_lock(url, spec.name))
            self.db = LeaderboardDB(url)
            self.campaign = self.db.get_or_create_campaign(spec.name, file_hash(text), text, hashes)
            self.recorder = StaleTrialRecorder(self.db)
            self.storage = make_storage(url, failed_trial_callback=self.recorder, kind=spec.optuna_storage)
        except BaseException:
            self._held.close()
            raise
        self.progress = progress or (lambda _: None)
        self.outcome = CampaignOutcome()

    def _load_tasks(self) -> dict[str, str]:
        """Load every task at every level, so that a bad task name or data file fails before anything is
        written, and pin each ``file:`` task's data for this run (:func:`~principlelab.core.tasks.pin_file_task`:
        every trial trains on the bytes read here, whatever happens to the file meanwhile). Returns
        ``{file: task: SHA-256 of its data}``, which the campaign stores and compares."""
        hashes: dict[str, str] = {}
        for task in self.spec.tasks:
            for level in self.spec.levels:
                with _names_the_section(self.spec.name, f"tasks ({task!r} at level {level.name!r})"):
                    if task.startswith(FILE_PREFIX) and task not in hashes:
                        hashes[task], release = pin_file_task(task)
                        self._held.callback(release)
                    load_task(task, fidelity=level.fidelity(), seed=self.spec.seed)
        return hashes

    def close(self) -> None:
        """Release the campaign's data files (see :meth:`_load_tasks`) and its coordinator lock
        (:mod:`~principlelab.studies.runner_lock`); the process's end releases the lock too."""
        self._held.close()

    def __enter__(self) -> CampaignRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def from_storage(cls, name: str, url: str, **kwargs: Any) -> CampaignRunner:
        """Join a campaign already in ``url`` (for ``plab worker``): its file is stored there."""
        text = LeaderboardDB(url, create=False).require_campaign(name).spec_json
        return cls(parse_campaign(text, source=f"campaign {name!r} in the database"), text, url, coordinator=False,
                   **kwargs)

    # ----------------------------------------------------------------------------- studies
    def context(self, task: str, level_index: int) -> LevelContext:
        level = self.spec.levels[level_index]
        version = self.db.get_or_create_study_version(
            self.campaign.id, task, level.name, level_index, self.space.fingerprint, json.dumps(self.space.describe()),
            make_study_name=lambda v: f"{self.spec.name}/{task}/{level.name}/v{v}")
        ctx = LevelContext(self.spec, task, level_index, level, self.campaign.id, version.id,
                           version.optuna_study_name, self.space, self.registry, self.db)
        self.recorder.contexts[ctx.study_name] = ctx
        return ctx

    def study(self, ctx: LevelContext) -> optuna.Study:
        max_resource = self._expected_mmacs(ctx)
        ctx.rung_base = rung_base(max_resource)
        sampler, pruner = self.sampler(ctx), make_pruner(ctx.level, ctx.level_index, max_resource=max_resource)
        try:  # an existing study is loaded: create_study(load_if_exists=True) appends a creation log each time
            return optuna.load_study(study_name=ctx.study_name, storage=self.storage, sampler=sampler, pruner=pruner)
        except KeyError:
            return optuna.create_study(study_name=ctx.study_name, storage=self.storage, load_if_exists=True,
                                       direction="maximize", sampler=sampler, pruner=pruner)

    def sampler(self, ctx: LevelContext) -> optuna.samplers.BaseSampler:
        """The level's sampler, seeded from the campaign's seed and the level."""
        return make_sampler(ctx.level, self.spec.seed + 1000 * ctx.level_index, workers=self.workers)

    def _expected_mmacs(self, ctx: LevelContext) -> int:
        """Training compute of the initial network over the level's epochs, in MMACs (pruner rungs)."""
        task = load_task(ctx.task, fidelity=ctx.level.fidelity(), seed=self.spec.seed)
        hidden = [min(w, ctx.level.width_cap or w) for w in self.spec.network.hidden]
        widths = [task.in_features, *hidden, task.num_classes]
        forward = sum(a * b for a, b in itertools.pairwise(widths))
        return max(2, 3 * forward * task.x_train.shape[0] * ctx.level.epochs // MMAC)

    # -------------------------------------------------------------------------------- loop
    def work(self) -> CampaignOutcome:
        """Run every task and level to completion (or join others doing so); idempotent."""
        for task in self.spec.tasks:
            previous: LevelContext | None = None
            for index in range(len(self.spec.levels)):
                ctx = self.context(task, index)
                study = self.study(ctx)
                if previous is not None:
                    self.promote(previous, ctx, study)
                while True:  # a dead worker's trial, failed by heartbeat while we waited, is retried here
                    self.run_level(ctx, study)
                    self.wait_for_level(study)
                    if not any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
                        break
                if previous is not None:
                    self.report_correlation(previous, ctx)
                previous = ctx
        return self.outcome

    def run_level(self, ctx: LevelContext, study: optuna.Study) -> None:
        if self.freeze_gc:
            freeze_long_lived_objects()
        level = ctx.level
        target = level.trials if ctx.level_index == 0 else None
        deadline = None
        if level.time_budget_s and ctx.level_index == 0:
            deadline = self.level_deadline(study, level.time_budget_s)
        progress = LevelProgress(ctx.task, level.name, 0, target, 0, None)
        if self.sample_ahead and ctx.level_index == 0 and level.pruner_name(0) in SAMPLE_AHEAD_PRUNERS:
            run_level_sampled_ahead(self, ctx, study, progress, target, deadline)
            return
        with fresh_reads(study._storage):  # Optuna's burst of reads at each trial's start: one query
            self._run_trials_here(ctx, study, progress, target, deadline)

    def _run_trials_here(self, ctx: LevelContext, study: optuna.Study, progress: LevelProgress, target: int | None,
                         deadline: float | None) -> None:
        """:meth:`run_level`'s loop where this process samples its own trials."""
        # a lone worker's pruner compares with its own trials' reports: no reads back during training;
        # the reports go out with the trial's state (one append), which Optuna writes in this process
        objective = Objective(ctx, read_through=self.workers > 1, reports_with_state=True)
        interrupted: list[int] = []  # the trial being trained when the user pressed Ctrl-C
        # one heartbeat thread for the level, not Optuna's thread per trial (may_start_trial fails stale trials)
        with heartbeat_for(study._storage) as heartbeat:
            while True:
                # Deciding to start a trial and creating (or popping) it is one step under a lock shared by
                # every worker, released once the trial runs: no overshoot of the target, and no later-level
                # trial created because another worker took the last waiting one.
                with self.trial_start_lock(ctx.study_name) as release:
                    if not self.may_start_trial(ctx, study, progress, target, deadline):
                        break

                    def run(trial: optuna.Trial, release: Callable[[], None] = release) -> float:
                        release()
                        progress.running += 1  # the states were read before this trial started
                        self.progress(progress)
                        try:
                            with heartbeat.beating(trial._trial_id):
                                return objective(trial)
                        except KeyboardInterrupt:
                            interrupted.append(trial.number)
                            raise

                    try:
                        with heartbeat.optimizing():
                            study.optimize(run, n_trials=1, catch=(Exception,), gc_after_trial=False)
                    except KeyboardInterrupt:  # Optuna failed the trial and records no reason; nothing retried it
                        for number in interrupted:
                            self.abandon(study, number, INTERRUPTED)
                        raise

    @staticmethod
    def level_deadline(study: optuna.Study, budget_s: float) -> float:
        """``time.monotonic()`` at which the level's ``time_budget_s`` runs out.

        The budget counts from the level's first trial, whichever worker or run started it, so a
        rerun of a finished level starts no more trials and a worker that joins late stops with the
        others. Time between an interrupted run and its rerun counts too.
        """
        starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
        started = min(starts).timestamp() if starts else time.time()  # Optuna's naive local times
        return time.monotonic() + (started + budget_s - time.time())

    def may_start_trial(self, ctx: LevelContext, study: optuna.Study, progress: LevelProgress, target: int | None,
                        deadline: float | None) -> bool:
        """Whether a trial starts now (under the start lock): a waiting retry, or budget left at level 0.

        Fails stale trials first (dead workers' trials become waiting retries) and updates ``progress``.
        """
        storage: Any = study._storage
        if getattr(storage, "fresh_reads_s", 0):  # reads may reuse a recent sync (fresh_reads): not this count
            storage.sync_with_database()
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        self.update_progress(progress, trials, ctx)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        budget_left = ((target is None or logical_trials(trials) < target)
                       and (deadline is None or time.monotonic() < deadline))
        return waiting or (ctx.level_index == 0 and budget_left)

    def abandon(self, study: optuna.Study, number: int, reason: str) -> None:
        """Fail trial ``number``, which the worker stopped before finishing, with a ``failed`` run row
        saying ``reason`` and a waiting retry (the rerun trains it; an interruption uses up no retry).
        A trial Optuna already failed (its ``optimize`` fails the trial it runs on a Ctrl-C) gets the
        row and the retry only."""
        trial = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, number))
        if trial.state == TrialState.RUNNING:
            trial = study.tell(number, state=TrialState.FAIL)
        elif trial.state != TrialState.FAIL:
            return  # it finished after all: its run row is written
        self.recorder(study, trial, reason=reason, counted=False)

    @contextmanager
    def trial_start_lock(self, study_name: str) -> Iterator[Callable[[], None]]:
        """A PostgreSQL advisory lock on ``study_name`` until ``release()`` (or the block's end).

        SQLite needs none (one process). A worker that dies holding it drops its connection, and
        PostgreSQL releases the lock with it.
        """
        if self.db.backend != "postgresql":
            yield lambda: None
            return
        keys = advisory_keys(0x706C6162, study_name)  # 'plab'
        conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        held = False

        def release() -> None:
            nonlocal held
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), keys)
                held = False

        try:
            conn.execute(text("SELECT pg_advisory_lock(:ns, :key)"), keys)
            held = True
            yield release
            release()
        except BaseException:
            if held:  # the unlock may be what failed: drop the connection, and the lock with it
                conn.invalidate()
            raise
        finally:
            conn.close()

    def wait_for_level(self, study: optuna.Study, poll_s: float = 0.5) -> None:
        """Block until no trial of ``study`` runs (other workers' trials; dead ones fail by heartbeat)."""
        while any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
            optuna.storages.fail_stale_trials(study)
            time.sleep(poll_s)

    def update_progress(self, progress: LevelProgress, trials: list[optuna.trial.FrozenTrial],
                        ctx: LevelContext) -> None:
        finished = [t for t in trials if t.state.is_finished()]
        progress.done = logical_trials(finished)
        if ctx.level_index > 0:
            progress.target = logical_trials(trials)
        progress.running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        values = [t.value for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
        progress.best = max(values) if values else None
        self.progress(progress)

    def level_progress(self) -> list[LevelProgress]:
        """Where every (task, level) of the campaign stands, read from the Optuna storage."""
        states = []
        for task in self.spec.tasks:
            for index in range(len(self.spec.levels)):
                ctx = self.context(task, index)
                try:
                    study = optuna.load_study(study_name=ctx.study_name, storage=self.storage)
                except KeyError:
                    continue
                progress = LevelProgress(task, ctx.level.name, 0, ctx.level.trials if index == 0 else None, 0, None)
                self.update_progress(progress, study.get_trials(deepcopy=False), ctx)
                states.append(progress)
        return states

    # -------------------------------------------------------------------- rank correlation
    def report_correlation(self, lower: LevelContext, upper: LevelContext) -> RankCorrelation:
        promoted = self.db.promotions(to_study_version_id=upper.study_version_id)
        means = {c.recipe_key: c.value for c in self.candidates(upper)}
        pairs = [(p.source_value, means[p.recipe_key]) for p in promoted  # skipped as in the report's panel
                 if p.recipe_key in means and p.source_value is not None]
        corr = rank_correlation([a for a, _ in pairs], [b for _, b in pairs])
        self.outcome.correlations[(upper.task, lower.level.name, upper.level.name)] = corr
        if corr.n < 3:
            self.outcome.warnings.append(
                f"warning: on {upper.task}, only {corr.n} recipe(s) reached the {upper.level.name} level with a "
                f"value at both levels: too few to tell whether the {lower.level.name} level predicts it (3 are "
                "needed); promote more recipes ([promotion] k)")
        elif corr.constant:
            tied = " and ".join({"lower": lower, "upper": upper}[side].level.name for side in corr.constant)
            self.outcome.warnings.append(
                f"warning: on {upper.task}, the {corr.n} promoted recipes all scored the same at {tied}, so there "
                "is no ranking to compare; the level cannot tell them apart (too few epochs to differ, or "
                "principles that change nothing here)")
        elif not corr.predicts(self.spec.promotion.min_spearman):
            self.outcome.warnings.append(
                f"warning: on {upper.task}, the {lower.level.name} level does not predict the {upper.level.name} "
                f"level (Spearman rho={corr.spearman:.3f} over {corr.n} recipes, threshold "
                f"{self.spec.promotion.min_spearman}); make {lower.level.name} less coarse or promote more recipes")
        return corr


def optuna_storage_kind(db: LeaderboardDB, name: str) -> str:
    """The Optuna storage kind (``journal`` or ``rdb``) campaign ``name`` in ``db`` was run with."""
    return parse_campaign(db.require_campaign(name).spec_json, source=f"campaign {name!r}").optuna_storage


def eta_seconds(progress: LevelProgress) -> float | None:
    """Time left at the current pace (None before the first finished trial or without a target)."""
    if not progress.target or progress.done == 0:
        return None
    pace = (time.perf_counter() - progress.started) / progress.done
    return max(0.0, pace * (progress.target - progress.done)) if math.isfinite(pace) else None
