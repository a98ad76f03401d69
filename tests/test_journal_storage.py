"""The SQL journal storage (``principlelab.studies.journal``): Optuna's JournalStorage on SQLite and
PostgreSQL, with heartbeats.

Every test runs on SQLite; the ``postgres`` variants need ``PRINCIPLELAB_TEST_POSTGRES_URL``
(``eval "$(bash scripts/postgres.sh start)"``) and get a fresh database of their own on that server
(dropped afterwards). Without it they are skipped, unless ``PRINCIPLELAB_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import itertools
import json
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text

from principlelab.errors import StorageError
from principlelab.studies.journal import DEFAULT_HEARTBEAT_TABLE, SQLJournalBackend, SQLJournalSnapshotBackend
from principlelab.studies.journal_storage import SQLJournalStorage, journal_storage

URL_ENV = "PRINCIPLELAB_TEST_POSTGRES_URL"
REQUIRE_ENV = "PRINCIPLELAB_REQUIRE_POSTGRES"

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
]
optuna.logging.set_verbosity(optuna.logging.ERROR)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def url(db_url: str) -> str:
    """A database URL for the journal: a SQLite file, or a fresh PostgreSQL database."""
    return db_url


def retry_callback() -> Any:
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry_cls is None:  # Optuna < 4.9
        retry_cls = optuna.storages.RetryFailedTrialCallback
    return retry_cls(max_retry=3)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    n = trial.suggest_int("n", 1, 8)
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    for step in range(3):
        trial.report(x * step + n, step)
    trial.set_user_attr("kind_upper", kind.upper())
    trial.set_user_attr("nested", {"n": n, "list": [1, 2.5, None]})
    if n == 8:
        raise optuna.TrialPruned()
    return x * x + n


# ----------------------------------------------------------------------------------- worker process

WORKER = r'''
import os, sys, time, warnings
import optuna
from principlelab.studies.journal_storage import SQLJournalStorage

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")
mode, url, study_name, arg = sys.argv[1:5]

if mode == "optimize":  # arg: "<ready dir>:<workers>:<tag>:<trials>"
    ready, workers, tag, trials = arg.split(":")
    storage = SQLJournalStorage(url, heartbeat_interval=5)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler())
    open(os.path.join(ready, tag), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(ready)) < int(workers) and time.monotonic() < deadline:
        time.sleep(0.01)

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("n", 0, 9)
        for step in range(3):
            trial.report(x + step, step)
        trial.set_user_attr("worker", tag)
        time.sleep(0.01)
        return x

    study.optimize(objective, n_trials=int(trials))
elif mode == "hang":  # arg: a file to create once the trial runs
    storage = SQLJournalStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)

    def objective(trial):
        trial.suggest_float("x", 0.0, 1.0)
        open(arg, "w").close()
        time.sleep(30)
        return 0.0

    study.optimize(objective, n_trials=1)
'''


def start_worker(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(*procs: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait for every worker; fail with all their outputs if one timed out or failed."""
    deadline = time.monotonic() + timeout
    outputs, problems = [], []
    for i, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            problems.append(f"worker {i} did not finish within {timeout} s")
        if proc.returncode:
            problems.append(f"worker {i} exited with {proc.returncode}")
        outputs.append(f"--- worker {i}:\n{out.decode()[-3000:]}")
    assert not problems, "; ".join(problems) + "\n" + "\n".join(outputs)


# -------------------------------------------------------------------------------------------- tests


def test_study_reads_back_identically_from_a_new_storage(url: str) -> None:
    storage = SQLJournalStorage(url)
    study = optuna.create_study(study_name="roundtrip", storage=storage, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr("campaign", {"name": "c", "levels": [1, 2]})
    study.enqueue_trial({"x": 0.25, "n": 3, "kind": "b"}, user_attrs={"enqueued": True})
    study.enqueue_trial({"x": -0.5})
    study.optimize(objective, n_trials=30)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.0}, distributions={
        "x": optuna.distributions.FloatDistribution(-1.0, 1.0)}, value=0.0))

    trials = study.get_trials()
    assert len(trials) == 31
    assert trials[0].params == {"x": 0.25, "n": 3, "kind": "b"} and trials[0].user_attrs["enqueued"] is True
    assert trials[1].params["x"] == -0.5
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.intermediate_values == {s: t.params["x"] * s + t.params["n"] for s in range(3)} for t in trials[:30])

    other = SQLJournalStorage(url)  # what another process sees: a replay of the journal
    again = optuna.load_study(study_name="roundtrip", storage=other)
    assert again.get_trials() == trials
    assert again.user_attrs == study.user_attrs
    assert other.get_study_system_attrs(again._study_id) == storage.get_study_system_attrs(study._study_id)
    assert again.direction == study.direction
    assert again.best_trial == study.best_trial
    assert [s.study_name for s in other.get_all_studies()] == ["roundtrip"]

    clone = pickle.loads(pickle.dumps(storage))  # multiprocessing / n_jobs hand storages around pickled
    assert optuna.load_study(study_name="roundtrip", storage=clone).get_trials() == trials

    # every log is one row, numbered 0..N-1
    assert len(other.backend.read_logs(0)) == other.backend.count() > 31 * 7


def test_two_processes_optimize_one_study(url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = [start_worker("optimize", url, "shared", f"{ready}:2:{tag}:25") for tag in ("w0", "w1")]
    finish(*procs)

    storage = SQLJournalStorage(url)
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert len(storage.get_all_studies()) == 1  # the create_study race left one study
    assert [t.number for t in trials] == list(range(50))
    assert len({t._trial_id for t in trials}) == 50
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(set(t.params) == {"x", "n"} and len(t.intermediate_values) == 3 for t in trials)
    workers = [t.user_attrs["worker"] for t in trials]
    assert workers.count("w0") == workers.count("w1") == 25
    switches = sum(a != b for a, b in itertools.pairwise(workers))
    assert switches >= 2, f"the workers did not run concurrently: {workers}"


def test_threads_share_one_storage(tmp_path: Path) -> None:
    storage = SQLJournalStorage(f"sqlite:///{tmp_path / 'threads.db'}", heartbeat_interval=5)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=40, n_jobs=4)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(40))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and len(t.intermediate_values) == 3
               for t in trials)
    assert SQLJournalStorage(storage.backend.url).get_all_trials(study._study_id) == trials


def test_concurrent_appends_are_totally_ordered(url: str) -> None:
    check_total_order(url, use_pg_function=True)


@pytest.mark.postgres
def test_concurrent_appends_without_the_pg_function(pg_url: str) -> None:
    """PostgreSQL without CREATE FUNCTION (or not READ COMMITTED): explicit transactions, same order."""
    check_total_order(pg_url, use_pg_function=False)


def check_total_order(url: str, *, use_pg_function: bool) -> None:
    """Writers with their own engines append batches of 1-4 logs while readers read: the ids are
    0..N-1, every batch is contiguous, every writer's batches are in its order, every read a prefix."""
    first = SQLJournalBackend(url, table="plab_order_test")
    threads, batches = 6, 25
    errors: list[BaseException] = []
    observed: list[list[dict[str, Any]]] = []

    def writer(w: int) -> None:
        backend = SQLJournalBackend(url, table="plab_order_test")  # its own engine: like another process
        if not use_pg_function:
            backend._append_fn = None
        rng = random.Random(w)
        try:
            for b in range(batches):
                size = rng.randint(1, 4)
                backend.append_logs([{"w": w, "b": b, "k": k, "size": size} for k in range(size)])
                if rng.random() < 0.5:
                    backend.read_logs(rng.randint(0, 20))
            backend.dispose()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        backend = SQLJournalBackend(url, table="plab_order_test")
        try:
            while any(t.is_alive() for t in workers):
                observed.append(backend.read_logs(0))
            backend.dispose()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(w,)) for w in range(threads)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in workers + readers:
        t.start()
    for t in workers + readers:
        t.join(timeout=60)
    assert not errors, errors

    logs = first.read_logs(0)
    assert len(logs) == first.count()
    with first.engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM plab_order_test ORDER BY id"))]
    assert ids == list(range(len(logs)))
    # every batch contiguous and complete, every writer's batches in its order
    i, seen = 0, {w: -1 for w in range(threads)}
    while i < len(logs):
        head = logs[i]
        batch = logs[i:i + head["size"]]
        assert batch == [{**head, "k": k} for k in range(head["size"])]
        assert head["b"] == seen[head["w"]] + 1
        seen[head["w"]] = head["b"]
        i += head["size"]
    assert seen == {w: batches - 1 for w in range(threads)}
    for snapshot in observed:  # each concurrent read saw a prefix of the final order
        assert snapshot == logs[:len(snapshot)]
    assert first.read_logs(len(logs) - 3) == logs[-3:]
    assert first.read_logs(len(logs)) == []


def test_an_append_reuses_the_statement_built_for_its_size(tmp_path: Path) -> None:
    """Building the INSERT of a trial's twenty parameters cost more than running it: one per size."""
    backend = SQLJournalBackend(f"sqlite:///{tmp_path / 'sizes.db'}")
    sizes = [3, 1, 3, 20, 1, 20]
    for n, size in enumerate(sizes):
        backend.append_logs([{"append": n, "k": k} for k in range(size)])
    assert sorted(backend._insert_sql) == [1, 3, 20]
    assert backend._insert_statement(20) is backend._insert_statement(20)
    assert backend.read_logs(0) == [{"append": n, "k": k} for n, size in enumerate(sizes) for k in range(size)]


def test_read_stops_at_a_gap(tmp_path: Path) -> None:
    backend = SQLJournalBackend(f"sqlite:///{tmp_path / 'gap.db'}")
    backend.append_logs([{"n": 0}, {"n": 1}])
    with backend.engine.connect() as conn:
        conn.execute(text("INSERT INTO plab_optuna_journal (id, body) VALUES (3, '{\"n\": 3}')"))
    assert backend.read_logs(0) == [{"n": 0}, {"n": 1}]
    assert backend.read_logs(3) == [{"n": 3}]


def test_heartbeat_fails_and_retries_a_killed_workers_trial(url: str, tmp_path: Path) -> None:
    storage = SQLJournalStorage(url, heartbeat_interval=1, grace_period=2,
                                heartbeat_stale_trial_callback=retry_callback())
    study = optuna.create_study(study_name="hb", storage=storage)
    running = tmp_path / "running"
    proc = start_worker("hang", url, "hb", str(running))
    deadline = time.monotonic() + 30
    while not running.exists():
        assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
        assert time.monotonic() < deadline, "the worker never started its trial"
        time.sleep(0.05)
    beats = text(f"SELECT COUNT(*) FROM {DEFAULT_HEARTBEAT_TABLE}")
    with storage._heartbeats().engine.connect() as conn:
        while not conn.execute(beats).scalar_one():  # its heartbeat thread beats at once
            assert time.monotonic() < deadline, "the worker never recorded a heartbeat"
            time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic()

    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]
    time.sleep(max(0.0, 2.6 - (time.monotonic() - killed_at)))
    optuna.storages.fail_stale_trials(study)

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    optuna.storages.fail_stale_trials(study)  # nothing more to fail
    assert len(study.get_trials()) == 2

    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)  # the retry runs here
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    assert SQLJournalStorage(url).get_all_trials(study._study_id) == study.get_trials()


def test_running_trial_without_heartbeat_counts_from_its_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nohb.db'}"
    storage = SQLJournalStorage(url, heartbeat_interval=1, grace_period=5, failed_trial_callback=retry_callback())
    study = optuna.create_study(storage=storage)
    old = FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now() - timedelta(
        seconds=30), datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values={}, trial_id=0)
    storage.create_new_trial(study._study_id, template_trial=old)  # died before its first beat
    fresh = study.ask()  # started just now, no beat yet either
    beating = study.ask()
    storage.record_heartbeat(beating._trial_id)
    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert fresh.number == 1
    assert storage.get_failed_trial_callback() is storage.get_heartbeat_stale_trial_callback() is not None
    assert storage.get_heartbeat_interval() == 1


def test_snapshots(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'snap.db'}"
    storage = SQLJournalStorage(url, snapshots=True)
    assert isinstance(storage.backend, SQLJournalSnapshotBackend)
    study = optuna.create_study(study_name="snap", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=105)  # Optuna snapshots at trial id 100
    assert storage.backend.load_snapshot() is not None
    trials = study.get_trials()
    assert optuna.load_study(study_name="snap", storage=SQLJournalStorage(url, snapshots=True)).get_trials() == trials
    assert optuna.load_study(study_name="snap", storage=SQLJournalStorage(url)).get_trials() == trials

    storage.backend.save_snapshot(b"not a pickle")  # e.g. pickled by another Optuna version
    assert optuna.load_study(study_name="snap", storage=SQLJournalStorage(url, snapshots=True)).get_trials() == trials


def test_helper_and_bad_urls(tmp_path: Path) -> None:
    storage = journal_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=10, grace_period=60,
                              stale_trial_callback=None)
    assert optuna.storages._heartbeat.is_heartbeat_enabled(storage)
    assert storage.grace_period == 60
    assert not optuna.storages._heartbeat.is_heartbeat_enabled(SQLJournalStorage(f"sqlite:///{tmp_path / 'h.db'}"))
    with pytest.raises(StorageError, match="in-memory"):
        journal_storage("sqlite://", heartbeat_interval=None, grace_period=None, stale_trial_callback=None)
    with pytest.raises(StorageError, match="journal storage"):
        journal_storage(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}", heartbeat_interval=None,
                        grace_period=None, stale_trial_callback=None)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        SQLJournalStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=0)


# ---------------------------------------------------------------------------------------- benchmark

BENCHMARK = r'''
import json, sys, time, warnings
import optuna
from sqlalchemy import event
from principlelab.studies.journal_storage import SQLJournalStorage

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")
url = sys.argv[1]


def empty(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_int("n", 0, 9)
    trial.suggest_categorical("c", ["a", "b"])
    for step in range(3):
        trial.report(x, step)
    return x


def ms_per_trial(storage, trials):
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(empty, n_trials=5)  # warm: tables, caches, prepared statements
    start = time.perf_counter()
    study.optimize(empty, n_trials=trials)
    return (time.perf_counter() - start) / trials * 1000


def pragmas(dbapi_connection, _record):  # as principlelab configures SQLite
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


rdb = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=60)
if url.startswith("sqlite"):
    event.listen(rdb.engine, "connect", pragmas)
    rdb.engine.dispose()
journal = SQLJournalStorage(url, heartbeat_interval=10, grace_period=60)
print(json.dumps({"rdb": ms_per_trial(rdb, 40), "journal": ms_per_trial(journal, 200)}))
'''


def test_benchmark_ms_per_trial(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Printed, not asserted: ms per trial of an empty objective with 3 params and 3 reports, both
    storages with heartbeats, in a fresh interpreter (pytest's warning capture and this process's
    heap would slow both)."""
    out = subprocess.run([sys.executable, "-c", BENCHMARK, url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    ms = json.loads(out.stdout.strip().splitlines()[-1])
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    with capsys.disabled():
        print(f"\n[benchmark] {backend}: RDBStorage {ms['rdb']:.1f} ms/trial, SQLJournalStorage "
              f"{ms['journal']:.1f} ms/trial ({ms['rdb'] / ms['journal']:.1f}x faster)")
    assert ms["journal"] > 0 and ms["rdb"] > 0
