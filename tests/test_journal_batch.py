"""Batched trial writes on the journal storage (``principlelab.studies.journal_batch``).

Inside ``storage.batched_writes(trial_id)`` a trial's parameter, attribute and intermediate-value
writes stay in this process (reads in the block see them) and reach the database in one append
when the block ends; everything else behaves as without the block. SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import optuna
import pytest
from sqlalchemy import text

from principlelab.studies.journal_batch import READ_THROUGH_WINDOW_S, fresh_reads
from principlelab.studies.journal_storage import SQLJournalStorage

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def appends(storage: SQLJournalStorage) -> list[int]:
    """Spy on the backend: the number of logs of every append from now on."""
    calls: list[int] = []
    original = storage.backend.append_logs

    def spy(logs: list[dict]) -> None:
        calls.append(len(logs))
        original(logs)

    storage.backend.append_logs = spy  # type: ignore[method-assign]
    return calls


def journal_rows(url: str) -> int:
    storage = SQLJournalStorage(url)
    try:
        return storage.backend.count()
    finally:
        storage.dispose()


def sample(trial: optuna.Trial) -> dict:
    return {"kind": trial.suggest_categorical("kind", ["a", "b"]), "x": trial.suggest_float("x", 0, 1),
            "n": trial.suggest_int("n", 1, 9)}


def test_a_trials_writes_are_one_append_at_the_end_of_the_block(db_url: str) -> None:
    storage = SQLJournalStorage(db_url)
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    calls = appends(storage)
    before = journal_rows(db_url)
    with storage.batched_writes(trial._trial_id):
        params = sample(trial)
        trial.set_user_attr("worker", "w1")
        assert trial.params == params  # the block's reads see the queued writes
        assert storage.get_trial(trial._trial_id).user_attrs == {"worker": "w1"}
        assert study.trials[0].params == params
        assert journal_rows(db_url) == before and calls == []  # nothing reached the database yet
        other = optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url))
        assert other.trials[0].params == {}
    assert calls == [4]  # three parameters and one attribute, one append
    assert journal_rows(db_url) == before + 4
    fresh = optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url))
    assert fresh.trials[0].params == params and fresh.trials[0].user_attrs == {"worker": "w1"}
    assert fresh.trials[0].distributions == study.trials[0].distributions
    study.tell(trial, 0.5)
    assert optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url)).best_value == 0.5


def test_each_read_in_a_block_sees_every_write_queued_before_it(tmp_path) -> None:
    """A read's copy of the trial builds on the last read's (only the new writes are applied): each
    copy is right, and none that was handed out changes afterwards."""
    storage = SQLJournalStorage(f"sqlite:///{tmp_path / 'j.db'}")
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    seen: list[tuple[optuna.trial.FrozenTrial, dict, dict, dict]] = []
    with storage.batched_writes(trial._trial_id):
        for k in range(6):
            trial.suggest_float(f"x{k}", 0, 1)
            if k % 2:
                trial.set_user_attr(f"a{k}", k)
            if k == 3:
                trial.report(0.5, 1)
            for _ in range(2):  # a second read without a new write: the same copy
                read = storage.get_trial(trial._trial_id)
                assert read is storage.get_trial(trial._trial_id)
            seen.append((read, dict(read.params), dict(read.user_attrs), dict(read.intermediate_values)))
    for k, (read, params, user_attrs, reports) in enumerate(seen):
        assert list(params) == [f"x{j}" for j in range(k + 1)]
        assert user_attrs == {f"a{j}": j for j in range(1, k + 1, 2)}
        assert reports == ({1: 0.5} if k >= 3 else {})
        assert (read.params, read.user_attrs, read.intermediate_values) == (params, user_attrs, reports)
    assert storage.get_trial(trial._trial_id).params == seen[-1][1]  # appended: the replay has them all


def test_the_queue_is_written_when_the_block_raises(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    storage = SQLJournalStorage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with pytest.raises(ValueError, match="rejected"), storage.batched_writes(trial._trial_id):
        trial.suggest_float("x", 0, 1)
        raise ValueError("rejected")
    assert "x" in optuna.load_study(study_name="s", storage=SQLJournalStorage(url)).trials[0].params


def test_another_write_in_the_block_goes_after_the_queue(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    storage = SQLJournalStorage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    calls = appends(storage)
    with storage.batched_writes(trial._trial_id):
        trial.suggest_float("x", 0, 1)
        study.set_user_attr("note", "study attribute")  # not the trial's: written now, after the queued log
        assert calls == [2]
        trial.suggest_float("y", 0, 1)
        assert trial.params.keys() == {"x", "y"}
    assert calls == [2, 1]
    with SQLJournalStorage(url).backend.engine.connect() as conn:
        bodies = [row[0] for row in conn.execute(text("SELECT body FROM plab_optuna_journal ORDER BY id"))]
    assert [b for b in bodies if '"x"' in b or '"note"' in b or '"y"' in b] == bodies[-3:]
    assert '"x"' in bodies[-3] and '"note"' in bodies[-2] and '"y"' in bodies[-1]


def two_trials(tmp_path) -> tuple[SQLJournalStorage, optuna.Trial, optuna.Trial, list[int]]:
    """A SQLite journal storage, two running trials of one study, and a spy on its appends from now on."""
    storage = SQLJournalStorage(f"sqlite:///{tmp_path / 'j.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    first, second = study.ask(), study.ask()
    return storage, first, second, appends(storage)


def test_other_trials_and_threads_are_not_batched(tmp_path) -> None:
    storage, first, second, calls = two_trials(tmp_path)
    with storage.batched_writes(first._trial_id):
        second.suggest_float("x", 0, 1)  # another trial: written at once
        assert calls == [1]
        first.suggest_float("x", 0, 1)
        assert calls == [1]
    assert calls == [1, 1]
    outer = storage.batched_writes(first._trial_id)
    with pytest.raises(RuntimeError, match="do not nest"), outer, storage.batched_writes(first._trial_id):
        pass


def test_pruner_reports_wait_but_reads_see_other_workers(db_url: str) -> None:
    storage = SQLJournalStorage(db_url)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    trial = study.ask()
    peer_storage = SQLJournalStorage(db_url)
    peer = optuna.load_study(study_name="s", storage=peer_storage)
    calls = appends(storage)
    with storage.batched_writes(trial._trial_id, read_through=True):
        trial.report(0.25, step=1)
        trial.report(0.5, step=3)
        assert storage.get_trial(trial._trial_id).intermediate_values == {1: 0.25, 3: 0.5}
        assert calls == []
        peer.enqueue_trial({"x": 0.1})  # another worker writes
        time.sleep(READ_THROUGH_WINDOW_S * 1.5)
        assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 1
    assert calls == [2]
    assert peer.trials[0].intermediate_values == {1: 0.25, 3: 0.5}


def test_a_block_reads_another_processs_new_trial_only_when_told_to_sync(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block reuses a sync made just before (FRESH_AT_START_S); with ``sync_now`` it reads what
    another process has just written (the trial the sampling process hands over)."""
    monkeypatch.setattr("principlelab.studies.journal_batch.FRESH_AT_START_S", 3600.0)
    storage = SQLJournalStorage(db_url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.get_trials()  # a sync now
    created = optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url)).ask()  # the other process
    with storage.batched_writes(created._trial_id), pytest.raises(KeyError):
        storage.get_trial(created._trial_id)  # the view of the sync before
    with storage.batched_writes(created._trial_id, sync_now=True):
        assert storage.get_trial(created._trial_id).number == created.number


def queries(storage: SQLJournalStorage) -> list[int]:
    """Spy on the backend: the start of every read that goes to the database from now on."""
    calls: list[int] = []
    original = storage.backend._retrying

    def spy(read):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(read)

    storage.backend._retrying = spy  # type: ignore[method-assign]
    return calls


def test_fresh_reads_reuse_a_recent_sync_but_always_read_back_their_own_writes(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("principlelab.studies.journal_batch.FRESH_READS_S", 3600.0)
    storage = SQLJournalStorage(db_url)
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    other = optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url))  # another worker
    reads = queries(storage)
    with fresh_reads(storage):
        storage.sync_with_database()
        assert len(reads) == 1
        other.ask()
        assert study.get_trials() == [] and len(reads) == 1  # the last sync serves it: one query in all
        mine = study.ask()  # its create is read back (from the append, no query), and so is the other's
        assert [t.number for t in study.get_trials()] == [0, 1] and mine.number == 1
        mine.set_user_attr("k", "v")  # outside a batch: appended and read back at once
        assert study.get_trials()[1].user_attrs == {"k": "v"}
        other.ask()
        assert len(study.get_trials()) == 2  # not yet: nothing of ours to read back, the sync is recent
        storage.sync_with_database()
        assert len(study.get_trials()) == 3
    assert storage.fresh_reads_s == 0
    other.ask()
    assert len(study.get_trials()) == 4  # outside the block every read syncs, as Optuna's


def test_a_worker_counts_trials_with_a_fresh_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``may_start_trial`` decides under the trial-start lock: it must see a trial another worker has just
    created even where reads reuse a recent sync."""
    from principlelab.registry import get_registry
    from principlelab.studies.campaign import CampaignRunner, LevelProgress
    from principlelab.studies.campaign_file import parse_campaign

    monkeypatch.setattr("principlelab.studies.journal_batch.FRESH_READS_S", 3600.0)
    text_ = 'name = "c"\ntasks = ["digits"]\n[[levels]]\nname = "coarse"\nepochs = 1\ntrials = 2\n'
    url = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CampaignRunner(parse_campaign(text_), text_, url, registry=get_registry(), sample_ahead=False)
    ctx = runner.context("digits", 0)
    study = runner.study(ctx)
    progress = LevelProgress(ctx.task, "coarse", 0, 2, 0, None)
    other = optuna.load_study(study_name=ctx.study_name, storage=SQLJournalStorage(url))
    with fresh_reads(study._storage):
        assert runner.may_start_trial(ctx, study, progress, 2, None)
        other.ask()
        other.ask()
        assert not runner.may_start_trial(ctx, study, progress, 2, None)  # two trials exist: the target


def test_reports_can_wait_for_the_trials_state(db_url: str) -> None:
    """``until_next_write``: the block's queue goes out with the trial's state, in one append; reads and the
    trial's attributes meanwhile see and join it, and a pruned trial's value is its last report."""
    storage = SQLJournalStorage(db_url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    calls = appends(storage)
    with storage.batched_writes(trial._trial_id, until_next_write=True):
        trial.report(0.25, 1)
        trial.report(0.5, 3)
    assert calls == []  # not when the block ends
    assert storage.get_trial(trial._trial_id).intermediate_values == {1: 0.25, 3: 0.5}
    trial.set_user_attr("failure_reason", "none")
    assert calls == []
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert calls == [4]  # two reports, the attribute, the state
    (stored,) = optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url)).trials
    assert (stored.state, stored.value, stored.intermediate_values, stored.user_attrs) == (
        optuna.trial.TrialState.PRUNED, 0.5, {1: 0.25, 3: 0.5}, {"failure_reason": "none"})
    other = optuna.load_study(study_name="s", storage=SQLJournalStorage(db_url)).ask()
    assert [t.number for t in study.get_trials()] == [0, other.number]  # the batch is closed: reads sync again


def test_a_queue_left_waiting_goes_out_with_the_next_write_or_block(tmp_path) -> None:
    storage, first, second, calls = two_trials(tmp_path)
    with storage.batched_writes(first._trial_id, until_next_write=True):
        first.suggest_float("x", 0, 1)
    with storage.batched_writes(second._trial_id):  # a new block: the waiting queue first
        assert calls == [1]
        second.suggest_float("y", 0, 1)
    assert calls == [1, 1]
    with storage.batched_writes(second._trial_id, until_next_write=True):
        second.report(1.0, 1)
    first.set_user_attr("k", "v")  # another trial's write: the waiting queue first, in the same append
    assert calls == [1, 1, 2]
    with storage.batched_writes(first._trial_id, until_next_write=True):
        pass  # nothing queued: nothing waits
    assert storage._active_batch() is None


def test_a_batched_campaign_study_matches_an_unbatched_one(tmp_path) -> None:
    """The same seeded TPE + Hyperband study, with and without batching (the reports appended when
    training ends, or with the state): the same trials."""
    results = []
    for batched in ("no", "at_the_end", "with_the_state"):
        url = f"sqlite:///{tmp_path / f'{batched}.db'}"
        storage = SQLJournalStorage(url)
        study = optuna.create_study(
            storage=storage, study_name="same", direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=5),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3))

        def objective(trial: optuna.Trial, batched: str = batched, storage: SQLJournalStorage = storage) -> float:
            if batched != "no":
                with storage.batched_writes(trial._trial_id):
                    params = sample(trial)
            else:
                params = sample(trial)
            value = params["x"] * (1.5 if params["kind"] == "a" else 1.0) - 0.01 * params["n"]
            with storage.batched_writes(trial._trial_id, read_through=True,
                                        until_next_write=batched == "with_the_state") \
                    if batched != "no" else nullcontext():
                for step in range(1, 10):
                    trial.report(value * step / 9, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
            return value

        study.optimize(objective, n_trials=30)
        results.append([(t.state, t.params, t.intermediate_values, t.value) for t in study.trials])
    assert results[0] == results[1] == results[2]
    assert sum(state == optuna.trial.TrialState.PRUNED for state, *_ in results[0]) > 3


def test_a_batch_is_the_opening_threads_only(tmp_path) -> None:
    """Another thread's writes during a block go out at once, and it may open a block of its own."""
    import threading

    storage, first, second, calls = two_trials(tmp_path)
    done: list[str] = []

    def other_thread() -> None:
        first.set_user_attr("from", "thread")  # the batched trial, but not this thread's batch
        with storage.batched_writes(second._trial_id):
            second.suggest_float("y", 0, 1)
        done.append("ok")

    with storage.batched_writes(first._trial_id):
        first.suggest_float("x", 0, 1)
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert done == ["ok"] and calls == [1, 1]
    assert calls == [1, 1, 1]
