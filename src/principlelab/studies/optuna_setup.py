"""Optuna storage, samplers and pruners, with every argument explicit (same on Optuna 4.x and 5.x)."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from sqlalchemy import event

from principlelab.errors import ConfigError, StorageError
from principlelab.studies.campaign_file import LevelSpec
from principlelab.studies.forking import forget_at_fork
from principlelab.studies.hyperband import BracketReusingHyperbandPruner
from principlelab.studies.sql_setup import is_sqlite, mask_url, sqlite_pragmas

HEARTBEAT_INTERVAL_S = int(os.environ.get("PRINCIPLELAB_HEARTBEAT_INTERVAL", "10"))
HEARTBEAT_GRACE_S = int(os.environ.get("PRINCIPLELAB_HEARTBEAT_GRACE", "60"))
"""A trial whose worker sent no heartbeat for the grace period is failed and retried."""
_SQLITE_BUSY_TIMEOUT_MS = 30_000  # Optuna's RDB storage on SQLite: writers queue this long


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns that heartbeats are experimental; keep it quiet."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: principlelab records the reason itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*TPESampler.*is experimental", category=UserWarning)
    # the sampling process asks and tells outside Study.optimize (studies/sample_ahead.py), heartbeats kept
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def check_workers(url: str, workers: int, *, what: str | None = None) -> None:
    """SQLite serialises writers: several worker processes need PostgreSQL. ``what`` names the
    request in the error (default ``--workers N``)."""
    if workers > 1 and is_sqlite(url):
        raise ConfigError(
            f"{what or f'--workers {workers}'} needs a database server: SQLite ({url}) is for one process. "
            "Start PostgreSQL and pass --storage postgresql+psycopg://USER:PASSWORD@HOST/DB (see docs/campaigns.md)")


def retry_callback(max_retry: int = 3) -> Callable[..., None]:
    """Retry a trial whose worker died, as Optuna's ``RetryHeartbeatStaleTrialCallback`` does, but
    without the dead trial's pruner records.

    The retry is a WAITING copy with the same parameters and user attributes and the system attributes
    ``failed_trial`` (the first trial of the chain) and ``retry_history``; at most ``max_retry`` retries.
    Optuna's callback also copies the successive-halving rung records (``completed_rung_*``), so a
    retry would skip the rungs its dead predecessor passed and count their values twice; here they
    are dropped and the retry is judged afresh. ``counted=False`` (the user interrupted the worker: no
    fault of the trial's) retries without counting against ``max_retry``; a Ctrl-C pressed four times
    had used up a trial's retries, and the trial was lost.
    """

    def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, counted: bool = True) -> None:
        system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": [],
                                        **{k: v for k, v in trial.system_attrs.items()
                                           if not k.startswith("completed_rung_")}}
        system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
        uncounted = system_attrs.get("uncounted_retries", 0) + (0 if counted else 1)
        system_attrs["uncounted_retries"] = uncounted
        if len(system_attrs["retry_history"]) - uncounted > max_retry:
            return
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=trial.user_attrs, system_attrs=system_attrs))

    return retry


def is_retry(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` is a retry made by :func:`retry_callback` (its ``failed_trial`` attribute)."""
    return "failed_trial" in trial.system_attrs


def logical_trials(trials: list[optuna.trial.FrozenTrial]) -> int:
    """How many trials ``trials`` holds with each trial and its retries counted once."""
    return sum(1 for t in trials if not is_retry(t))


def make_storage(url: str, failed_trial_callback: Callable[..., Any] | None = None, *,
                 kind: str = "journal") -> optuna.storages.BaseStorage:
    """The Optuna storage of a campaign on ``url``, with heartbeats (a killed worker's trial is retried).

    ``journal`` (the default): Optuna's JournalStorage whose log is a table of the same database
    (:mod:`principlelab.studies.journal`): one insert per Optuna operation, state replayed in memory;
    about 3x less machinery per campaign trial (docs/performance.md) than ``rdb``, Optuna's own
    relational schema, which the stock optuna-dashboard reads directly. A campaign file chooses with
    ``optuna_storage``.
    """
    quiet_optuna()
    if kind == "journal":
        from principlelab.studies.journal_storage import journal_storage

        return journal_storage(url, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
                               stale_trial_callback=failed_trial_callback)
    assert kind == "rdb", f"unknown Optuna storage kind {kind!r}"
    accepted = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    callback_arg = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in accepted
                    else "failed_trial_callback")
    engine_kwargs: dict[str, Any] = ({"connect_args": {"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000}} if is_sqlite(url)
                                     else {"pool_pre_ping": True})
    callback: dict[str, Any] = {callback_arg: failed_trial_callback}
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S, **callback)
        forget_at_fork(storage.engine)
        if is_sqlite(url):
            # WAL with synchronous=NORMAL: no fsync per commit (each Optuna call commits), and the database
            # stays consistent; a power cut can lose the last commits, never corrupt the file.
            event.listen(storage.engine, "connect", sqlite_pragmas(_SQLITE_BUSY_TIMEOUT_MS))
            storage.engine.dispose()
        return storage
    except Exception as exc:  # sqlalchemy errors, missing drivers, bad paths
        shown = mask_url(url)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"cannot open the Optuna storage at {shown}: {detail}") from None


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Release the database connections of a storage from :func:`make_storage` (either kind)."""
    dispose = getattr(storage, "dispose", None) or getattr(getattr(storage, "engine", None), "dispose", None)
    if dispose is not None:
        dispose()


def make_sampler(level: LevelSpec, seed: int, *, workers: int) -> optuna.samplers.BaseSampler:
    """The level's sampler, seeded.

    TPE is independent (one density per parameter, over the trials that have it), which handles the
    conditional space directly, and ranks the history once per trial (:class:`SplitOnceTPESampler`);
    multivariate TPE with ``group=True`` cost about 10 ms more per trial
    at 30 trials here (it deep-copies the history to decompose the space) and grows with the study.
    """
    if level.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if level.sampler == "qmc":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
    from principlelab.studies.tpe import SplitOnceTPESampler

    return SplitOnceTPESampler(**tpe_arguments(seed, workers=workers))


def tpe_arguments(seed: int, *, workers: int) -> dict[str, Any]:
    """The campaign's TPE arguments, all explicit (Optuna 4 and 5 differ in defaults: 5 makes a lone
    objective's TPE multivariate): independent TPE, constant liar when workers share the study."""
    return {"seed": seed, "n_startup_trials": 10, "n_ei_candidates": 24, "multivariate": False, "group": False,
            "constant_liar": workers > 1}


def pruning_step_kind(level: LevelSpec, level_index: int) -> str:
    """``compute`` (MMACs spent) for rung-based pruners, ``epoch`` for pruners that compare equal steps.

    Median and Wilcoxon compare trials at identical step numbers, which compute-valued steps of
    networks of different sizes never share; successive halving and Hyperband compare at rungs.
    """
    return "compute" if level.pruner_name(level_index) in ("hyperband", "successive_halving") else "epoch"


def rung_base(max_resource: int) -> int:
    """The smallest rung (MMACs) of the rung-based pruners: 1/27 of a full trial's compute."""
    return max(1, max_resource // 27)


def make_pruner(level: LevelSpec, level_index: int, *, max_resource: int) -> optuna.pruners.BasePruner:
    """The level's pruner. ``max_resource`` is the expected compute (MMACs) of a full trial."""
    min_resource = rung_base(max_resource)
    name = level.pruner_name(level_index)
    if name == "hyperband":
        return BracketReusingHyperbandPruner(min_resource=min_resource, max_resource=max(max_resource, 2),
                                             reduction_factor=3, bootstrap_count=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=3,
                                                      min_early_stopping_rate=0, bootstrap_count=0)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1, interval_steps=1, n_min_trials=1)
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()
