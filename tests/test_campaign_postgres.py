"""Campaigns with several workers on a real PostgreSQL: every trial recorded exactly once, promotions
exactly once, and a worker killed in mid-trial loses nothing (heartbeat, retry, a ``failed`` run row).

Needs ``PRINCIPLELAB_TEST_POSTGRES_URL`` (``eval "$(bash scripts/postgres.sh start)"``); skipped without
it unless ``PRINCIPLELAB_REQUIRE_POSTGRES=1`` (CI), where its absence fails. Each test gets a database
of its own, created on that server and dropped afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from principlelab.errors import StorageError
from principlelab.studies.optuna_setup import close_storage, make_storage
from slow_principles import slow_principles, small_campaign

pytestmark = pytest.mark.postgres

URL_ENV = "PRINCIPLELAB_TEST_POSTGRES_URL"
REQUIRE_ENV = "PRINCIPLELAB_REQUIRE_POSTGRES"
TIMEOUT_S = 150




# ------------------------------------------------------------------------------------------ fixtures


def write_campaign(directory: Path, *, name: str, trials: int, seeds: int, k: int, sleep_s: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "principles.py").write_text(slow_principles(sleep_s))
    path = directory / "campaign.toml"
    path.write_text(small_campaign(name, trials=trials, seeds=seeds, k=k))
    return path


def plab_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD": "1", "PRINCIPLELAB_THREADS": "1", **extra}
    env.pop("PRINCIPLELAB_STORAGE", None)
    return env


def start_plab(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m principlelab ARGS`` in the background, stdout and stderr to one log file."""
    log = tmp_path / f"plab-{uuid.uuid4().hex[:8]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "principlelab", *args], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = TIMEOUT_S) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"plab did not finish within {timeout} s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    return output


# ------------------------------------------------------------------------------------------- reading


def study_trials(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """Every Optuna study in ``url`` and its trials."""
    storage = make_storage(url)
    try:
        return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
                for s in storage.get_all_studies()}
    finally:
        close_storage(storage)


def query(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def run_rows(url: str) -> list[Any]:
    return query(url, "SELECT optuna_study_name, trial_number, status, failure_reason FROM plab_runs")


def assert_one_run_row_per_trial(url: str, studies: dict[str, list[optuna.trial.FrozenTrial]]) -> None:
    """Optuna's trials and plab_runs rows match one-to-one by (study, trial number), states agreeing."""
    rows = run_rows(url)
    keys = Counter((r.optuna_study_name, r.trial_number) for r in rows)
    assert not [key for key, n in keys.items() if n > 1], "duplicate run rows"
    trials = {(name, t.number): t for name, ts in studies.items() for t in ts}
    assert set(keys) == set(trials), (sorted(set(keys) ^ set(trials)))
    expected = {"complete": {TrialState.COMPLETE}, "pruned": {TrialState.PRUNED},
                "rejected": {TrialState.PRUNED}, "failed": {TrialState.FAIL}}
    for row in rows:
        assert trials[(row.optuna_study_name, row.trial_number)].state in expected[row.status], row


def training_trials(url: str, study_name: str) -> list[Any]:
    """RUNNING trials of a study that are training (their recipe is chosen: the ``principles``
    attribute is set), with their ``worker`` attribute (JSON) and whether a heartbeat was recorded;
    [] before the campaign has created its storage or study."""
    try:
        storage = make_storage(url)
    except StorageError:
        return []
    try:
        running = [t for t in storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False)
                   if t.state == TrialState.RUNNING and "principles" in t.user_attrs]
        beating = {row.trial_id for row in query(url, "SELECT trial_id FROM plab_optuna_heartbeats")}
    except (KeyError, SQLAlchemyError):
        return []
    finally:
        close_storage(storage)
    return [SimpleNamespace(number=t.number, worker=json.dumps(t.user_attrs.get("worker")) if "worker" in t.user_attrs
                            else None, beating=t._trial_id in beating) for t in running]


def worker_pid(worker: str) -> int:
    """The process id in a trial's ``worker`` attribute (``host:pid``)."""
    return int(worker.rsplit(":", 1)[1])


def sampled_ahead(trials: list[optuna.trial.FrozenTrial]) -> dict[str, bool]:
    """For each worker, whether a trial of it was created (sampled) before its previous trial had finished:
    always with sampling ahead (two trials in hand), never when the worker samples each trial itself."""
    by_worker: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    return {worker: any(later.datetime_start < earlier.datetime_complete
                        for earlier, later in itertools.pairwise(mine))
            for worker, mine in by_worker.items()}


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("ahead", [False, True], ids=["in-the-worker", "sampling-ahead"])
def test_two_workers_record_every_trial_exactly_once(pg_url: str, tmp_path: Path, ahead: bool) -> None:
    trials, seeds, k = 12, 2, 2
    path = write_campaign(tmp_path / "c", name="pg2", trials=trials, seeds=seeds, k=k, sleep_s=0.2)
    proc, log = start_plab(tmp_path, plab_env(), "campaign", "run", str(path), "--workers", "2",
                           "--storage", pg_url, "--sample-ahead" if ahead else "--no-sample-ahead")
    finish(proc, log)

    studies = study_trials(pg_url)
    assert set(studies) == {"pg2/digits/coarse/v1", "pg2/digits/fine/v1"}
    coarse, fine = studies["pg2/digits/coarse/v1"], studies["pg2/digits/fine/v1"]
    assert len(coarse) == trials  # exactly: starting a trial is serialised between the workers
    assert len(fine) == k * seeds
    for trial in coarse + fine:
        assert trial.state == TrialState.COMPLETE, (trial.number, trial.state, trial.user_attrs)
    assert_one_run_row_per_trial(pg_url, studies)

    promotions = query(pg_url, "SELECT recipe_key, to_study_version_id FROM plab_promotions")
    assert len(promotions) == k and len({p.recipe_key for p in promotions}) == k
    assert Counter(t.user_attrs["recipe_key"] for t in fine) == {p.recipe_key: seeds for p in promotions}
    assert sorted(t.user_attrs["seed"] for t in fine) == sorted(list(range(seeds)) * k)

    workers = Counter(t.user_attrs["worker"] for t in coarse + fine)
    assert len(workers) >= 2, f"one worker ran every trial: {workers}"
    assert proc.pid not in {worker_pid(w) for w in workers}, "the parent ran trials beside its workers"
    assert set(sampled_ahead(coarse).values()) == {ahead}, sampled_ahead(coarse)


@pytest.mark.parametrize("ahead", [False, True], ids=["in-the-worker", "sampling-ahead"])
def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(pg_url: str, tmp_path: Path, ahead: bool) -> None:
    """Sampling ahead, the killed worker also held up to two sampled trials (its sampling process
    exits with it): they are failed and retried the same way."""
    trials, seeds, k = 6, 2, 2
    path = write_campaign(tmp_path / "c", name="pgkill", trials=trials, seeds=seeds, k=k, sleep_s=0.8)
    env = plab_env(PRINCIPLELAB_HEARTBEAT_INTERVAL="1", PRINCIPLELAB_HEARTBEAT_GRACE="3")
    proc, log = start_plab(tmp_path, env, "campaign", "run", str(path), "--workers", "2", "--storage", pg_url,
                           "--sample-ahead" if ahead else "--no-sample-ahead")

    coarse_name = "pgkill/digits/coarse/v1"
    victim: tuple[int, str] | None = None
    deadline = time.monotonic() + 90
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for row in training_trials(pg_url, coarse_name):
            # a spawned worker (never the parent) that just started training (for > 1.6 s), with its
            # heartbeat recorded
            worker = json.loads(row.worker) if row.worker else None
            if worker and row.beating and worker_pid(worker) != proc.pid:
                victim = (row.number, worker)
                break
        else:
            time.sleep(0.1)
    assert victim is not None, f"no trial was seen running:\n{log.read_text()[-4000:]}"
    killed_number, killed_worker = victim
    os.kill(worker_pid(killed_worker), signal.SIGKILL)
    killed_at = time.monotonic()
    finish(proc, log)  # the other worker (or the parent) fails the stale trial, retries it, finishes
    assert time.monotonic() - killed_at >= 3, "the campaign finished before the heartbeat grace period"

    studies = study_trials(pg_url)
    coarse, fine = studies[coarse_name], studies["pgkill/digits/fine/v1"]
    everything = coarse + fine
    assert not [t.number for t in everything if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    failed = [t for t in everything if t.state == TrialState.FAIL]
    assert killed_number in [t.number for t in failed]
    assert len(failed) == 1 or (ahead and len(failed) <= 3), [t.number for t in failed]  # the trials in hand
    for lost in failed:
        assert lost in coarse and lost.user_attrs["worker"] == killed_worker
        retries = [t for t in coarse if t.system_attrs.get("failed_trial") == lost.number]
        assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in coarse]
        retry = retries[0]
        assert retry.state == TrialState.COMPLETE and retry.params == lost.params
        assert retry.user_attrs["worker"] != killed_worker
    # the killed trials count toward the budget through their retries: no extra sampled trial
    assert len(coarse) == trials + len(failed) and len(fine) == k * seeds

    assert_one_run_row_per_trial(pg_url, studies)
    lost_rows = [r for r in run_rows(pg_url) if r.status == "failed"]
    assert sorted(r.trial_number for r in lost_rows) == sorted(t.number for t in failed)
    for row in lost_rows:
        assert row.optuna_study_name == coarse_name
        assert "worker lost" in row.failure_reason and "heartbeat" in row.failure_reason
    assert len(query(pg_url, "SELECT id FROM plab_promotions")) == k
