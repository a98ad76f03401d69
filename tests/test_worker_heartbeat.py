"""One heartbeat thread per worker (studies/worker_heartbeat.py): Optuna starts no thread per trial,
a trial is beaten once it has run for FIRST_BEAT_S and then every interval, a trial shorter than that
gets no beat, and a trial whose worker stopped beating is still failed after the grace period."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import text

from principlelab.studies.journal import DEFAULT_HEARTBEAT_TABLE
from principlelab.studies.journal_storage import SQLJournalStorage
from principlelab.studies.worker_heartbeat import FIRST_BEAT_S, WorkerHeartbeat, heartbeat_for

pytestmark = [  # the tests ask for trials outside study.optimize, and fail stale trials by hand
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]


def storage_at(tmp_path: Path, **kwargs: Any) -> SQLJournalStorage:
    return SQLJournalStorage(f"sqlite:///{tmp_path / 'hb.db'}", **{"heartbeat_interval": 1, **kwargs})


def beat_rows(storage: SQLJournalStorage) -> dict[int, float]:
    with storage._heartbeats().engine.connect() as conn:
        return {int(trial_id): float(at) for trial_id, at in
                conn.execute(text(f"SELECT trial_id, beat_at FROM {DEFAULT_HEARTBEAT_TABLE}"))}


def optuna_heartbeat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "_record_heartbeat" in t.name]


def test_optuna_starts_no_thread_per_trial_and_short_trials_get_no_beat(tmp_path: Path) -> None:
    storage = storage_at(tmp_path)
    study = optuna.create_study(storage=storage)
    seen: list[list[str]] = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(optuna_heartbeat_threads())
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=1)  # Optuna's own: a thread per trial, which beats at once
    assert seen[-1] and len(beat_rows(storage)) == 1
    with heartbeat_for(storage) as heartbeat:
        assert isinstance(heartbeat, WorkerHeartbeat)
        for _ in range(3):
            with heartbeat.optimizing():
                study.optimize(lambda t: heartbeat_trial(heartbeat, t, objective), n_trials=1)
        assert storage.get_heartbeat_interval() == 1  # fail_stale_trials works between trials
    assert seen[1:] == [[], [], []]
    assert len(beat_rows(storage)) == 1, "a trial shorter than the first beat's delay was beaten"
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 4


def heartbeat_trial(heartbeat: WorkerHeartbeat, trial: optuna.Trial, objective: Any) -> float:
    with heartbeat.beating(trial._trial_id):
        return float(objective(trial))


def test_a_training_trial_is_beaten_after_the_first_delay_then_every_interval(tmp_path: Path) -> None:
    storage = storage_at(tmp_path)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    calls: list[tuple[int, float]] = []
    record = storage.record_heartbeat

    def recording(trial_id: int) -> None:
        calls.append((trial_id, time.monotonic()))
        record(trial_id)

    storage.record_heartbeat = recording  # type: ignore[method-assign]
    with WorkerHeartbeat(storage) as heartbeat, heartbeat.beating(trial._trial_id):
        started = time.monotonic()
        while len(calls) < 2 and time.monotonic() < started + 10:
            time.sleep(0.01)
    assert [trial_id for trial_id, _ in calls[:2]] == [trial._trial_id] * 2
    first, second = (at - started for _, at in calls[:2])
    assert FIRST_BEAT_S <= first <= FIRST_BEAT_S + 1.0  # at most half the first delay late, plus a busy machine's slack
    assert 1.0 <= second - first <= 2.0
    assert list(beat_rows(storage)) == [trial._trial_id]


def test_a_beating_trial_outlives_the_grace_and_a_silent_one_is_failed(tmp_path: Path) -> None:
    storage = storage_at(tmp_path, grace_period=2)
    study = optuna.create_study(storage=storage)
    alive, silent = study.ask(), study.ask()
    with WorkerHeartbeat(storage) as heartbeat, heartbeat.beating(alive._trial_id):
        time.sleep(3.2)  # past the grace period counted from either trial's start
        optuna.storages.fail_stale_trials(study)
    assert [(t.number, t.state) for t in study.get_trials()] == [(alive.number, TrialState.RUNNING),
                                                                 (silent.number, TrialState.FAIL)]


def test_a_failed_beat_is_logged_and_the_thread_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = storage_at(tmp_path)
    trial_id = optuna.create_study(storage=storage).ask()._trial_id
    attempts: list[int] = []

    def flaky(beaten: int) -> None:
        attempts.append(beaten)
        if len(attempts) == 1:
            raise OSError("connection lost")

    storage.record_heartbeat = flaky  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING), WorkerHeartbeat(storage) as heartbeat, heartbeat.beating(trial_id):
        time.sleep(FIRST_BEAT_S + 1.3)
    assert attempts == [trial_id, trial_id]
    assert "heartbeat of trial" in caplog.text and "connection lost" in caplog.text


def test_optimizing_restores_optunas_heartbeat_after_an_error(tmp_path: Path) -> None:
    storage = storage_at(tmp_path)
    heartbeat = WorkerHeartbeat(storage)
    with pytest.raises(RuntimeError), heartbeat.optimizing():
        assert storage.get_heartbeat_interval() is None
        raise RuntimeError("boom")
    assert storage.get_heartbeat_interval() == 1


def test_other_storages_keep_optunas_heartbeat(tmp_path: Path) -> None:
    for storage in (optuna.storages.InMemoryStorage(), SQLJournalStorage(f"sqlite:///{tmp_path / 'no.db'}")):
        with heartbeat_for(storage) as heartbeat:
            assert not isinstance(heartbeat, WorkerHeartbeat)
            with heartbeat.optimizing(), heartbeat.beating(0):
                pass
    with pytest.raises(ValueError, match="no heartbeat interval"):
        WorkerHeartbeat(SQLJournalStorage(f"sqlite:///{tmp_path / 'no.db'}"))
