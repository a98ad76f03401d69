"""Sampling ahead (studies/sample_ahead.py): the first level's trials are created and sampled in a
second process; every trial is still trained, recorded and told exactly once, the sequence is the
same on every rerun and storage, and a stop or a failure of that process loses nothing."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from ctrl_c import ctrl_c_at_training
from principlelab.core.trainer import Trainer
from principlelab.registry import get_registry
from principlelab.studies.campaign import CampaignRunner
from principlelab.studies.campaign_file import parse_campaign
from principlelab.studies.sample_ahead import SampleAheadError
from principlelab.studies.space import SearchSpace
from principlelab.studies.tpe import SplitOnceTPESampler

CAMPAIGN = """
name = "ahead"
tasks = ["digits"]
[network]
hidden = [16]
[search]
connectivity = ["dense", "sparse_random"]
learning = ["backprop", "soft_clamp"]
trigger = ["never", "every_k"]
growth = ["none", "random"]
composition = ["sequential", "capsule_routing"]
[[levels]]
name = "coarse"
data_fraction = 0.2
epochs = 3
trials = {trials}
sampler = "tpe"
pruner = "{pruner}"
"""


def runner_for(url: str, *, trials: int = 14, pruner: str = "hyperband", **kwargs: Any) -> CampaignRunner:
    """The test campaign's runner on ``url`` (``kwargs``: CampaignRunner's, e.g. ``sample_ahead``)."""
    text = CAMPAIGN.format(trials=trials, pruner=pruner)
    return CampaignRunner(parse_campaign(text), text, url, registry=get_registry(), **kwargs)


def coarse(url: str, *, trials: int = 14, pruner: str = "hyperband", sample_ahead: bool = True) -> CampaignRunner:
    """Run the coarse level of the test campaign on ``url``; return its runner."""
    runner = runner_for(url, trials=trials, pruner=pruner, sample_ahead=sample_ahead)
    ctx = runner.context("digits", 0)
    runner.run_level(ctx, runner.study(ctx))
    return runner


def trials_of(runner: CampaignRunner) -> list[optuna.trial.FrozenTrial]:
    ctx = runner.context("digits", 0)
    return optuna.load_study(study_name=ctx.study_name, storage=runner.storage).get_trials()


def outcome(runner: CampaignRunner) -> list[tuple[Any, ...]]:
    """What a rerun must reproduce: each trial's parameters, state and value."""
    return [(t.number, t.params, t.state, t.value) for t in trials_of(runner)]


def sampling_pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file to which TPE writes the pid of each process it samples in."""
    sampled_in = tmp_path / "sampled_in.txt"
    sample = SplitOnceTPESampler.sample_independent

    def noting_pid(self: Any, *args: Any) -> Any:
        with sampled_in.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return sample(self, *args)

    monkeypatch.setattr(SplitOnceTPESampler, "sample_independent", noting_pid)
    return sampled_in


@pytest.mark.parametrize("pruner", ["hyperband", "successive_halving"])
def test_every_trial_is_sampled_elsewhere_run_once_and_the_sequence_repeats(
        db_url: str, tmp_path: Path, pruner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sampled_in = sampling_pids(tmp_path, monkeypatch)
    runner = coarse(db_url, pruner=pruner)
    trials = trials_of(runner)
    assert len(trials) == 14 and all(t.state.is_finished() for t in trials)
    pids = set(sampled_in.read_text().split())
    assert pids and str(os.getpid()) not in pids  # TPE ran in the sampling process only

    runs = runner.db.runs_for_study_version(runner.context("digits", 0).study_version_id)
    assert Counter(r.trial_number for r in runs) == Counter(t.number for t in trials)  # one row per trial
    expected = {TrialState.COMPLETE: "complete", TrialState.PRUNED: ("pruned", "rejected"), TrialState.FAIL: "failed"}
    for run in runs:
        assert run.status in expected[trials[run.trial_number].state]
    assert {t.state for t in trials} >= {TrialState.COMPLETE}

    again = coarse(f"sqlite:///{tmp_path / 'again.db'}", pruner=pruner)
    assert outcome(again) == outcome(runner)  # same seed: same samples, prunes and values, on either storage


@pytest.mark.parametrize("pruner", ["median", "wilcoxon"])
def test_with_pruners_that_compare_complete_trials_the_worker_samples_itself(
        tmp_path: Path, pruner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which trials the sampler and the pruner saw complete would depend on when the sampling
    process told them: these pruners sample in the worker, and a rerun repeats the sequence."""
    sampled_in = sampling_pids(tmp_path, monkeypatch)
    runner = coarse(f"sqlite:///{tmp_path / 'a.db'}", trials=12, pruner=pruner)
    assert set(sampled_in.read_text().split()) == {str(os.getpid())}
    assert outcome(coarse(f"sqlite:///{tmp_path / 'b.db'}", trials=12, pruner=pruner)) == outcome(runner)


def test_tpe_samples_each_trial_seeing_those_two_back_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker keeps two trials in hand: trial n is sampled with trials up to n-3 finished and
    n-2, n-1 running, whatever the timing (the sequence the determinism of a rerun rests on)."""
    seen_at = tmp_path / "seen.txt"
    sample = SplitOnceTPESampler.sample_independent

    def noting_what_it_sees(self: Any, study: Any, trial: Any, *args: Any) -> Any:
        trials = study.get_trials(deepcopy=False)
        finished = sorted(t.number for t in trials if t.state.is_finished())
        running = sorted(t.number for t in trials if t.state == TrialState.RUNNING and t.number != trial.number)
        with seen_at.open("a") as out:
            out.write(f"{trial.number};{finished};{running}\n")
        return sample(self, study, trial, *args)

    monkeypatch.setattr(SplitOnceTPESampler, "sample_independent", noting_what_it_sees)
    coarse(f"sqlite:///{tmp_path / 'lag.db'}", trials=12)
    seen = {int(n): (finished, running) for n, finished, running in
            (line.split(";") for line in seen_at.read_text().splitlines())}
    assert sorted(seen) == list(range(12))
    for n, (finished, running) in seen.items():
        assert finished == str(list(range(max(0, n - 2)))), n
        assert running == str(list(range(max(0, n - 2), n))), n


def test_the_first_ten_trials_match_sampling_in_the_worker(tmp_path: Path) -> None:
    """TPE's ten startup trials are random draws: lag or not, the same; the lag shows only after them."""
    ahead = outcome(coarse(f"sqlite:///{tmp_path / 'a.db'}", trials=10))
    inline = outcome(coarse(f"sqlite:///{tmp_path / 'b.db'}", trials=10, sample_ahead=False))
    assert [params for _, params, _, _ in ahead] == [params for _, params, _, _ in inline]


def test_a_stopped_worker_leaves_no_trial_running_and_a_rerun_completes_the_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    train = Trainer.run
    ctrl_c_at_training(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        coarse(url, trials=8)
    runner = runner_for(url, trials=8, sample_ahead=True)
    stopped = trials_of(runner)
    assert not [t.number for t in stopped if t.state == TrialState.RUNNING]
    failed = [t for t in stopped if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [3, 4, 5]  # the interrupted trial and the two in hand, each with a retry
    retries = {t.system_attrs["failed_trial"]: t for t in stopped if t.state == TrialState.WAITING}
    assert sorted(retries) == [t.number for t in failed]
    assert all(retries[t.number].params == t.params for t in failed)
    rows = {r.trial_number: r for r in runner.db.runs_for_study_version(runner.context("digits", 0).study_version_id)}
    assert rows[3].failure_reason.startswith("interrupted")
    assert rows[4].failure_reason.startswith("not run") and rows[5].failure_reason.startswith("not run")
    assert sorted(rows) == [t.number for t in stopped if t.state.is_finished()]  # one row per finished trial

    monkeypatch.setattr(Trainer, "run", train)
    coarse(url, trials=8)
    done = trials_of(runner)
    assert not [t for t in done if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(done) - sum("failed_trial" in t.system_attrs for t in done) == 8  # each recipe counted once


def test_a_ctrl_c_in_the_worker_loses_no_trial_however_often_it_comes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without sampling ahead (later levels; the median and Wilcoxon pruners; --no-sample-ahead), Optuna
    failed the interrupted trial with no run row and no retry: the level ended a trial short. And every
    interruption used up one of the trial's 3 retries: the fifth Ctrl-C lost it for good."""
    url = f"sqlite:///{tmp_path / 'ctrl-c.db'}"
    train = Trainer.run
    monkeypatch.setattr(Trainer, "run", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    for _ in range(5):  # the same recipe, interrupted five times
        with pytest.raises(KeyboardInterrupt):
            coarse(url, trials=4, sample_ahead=False)
    runner = runner_for(url, trials=4, sample_ahead=False)
    stopped = trials_of(runner)
    assert [t.state for t in stopped] == [TrialState.FAIL] * 5 + [TrialState.WAITING]
    assert stopped[-1].params == stopped[0].params and stopped[-1].system_attrs["failed_trial"] == 0
    rows = runner.db.runs_for_study_version(runner.context("digits", 0).study_version_id)
    assert sorted(r.trial_number for r in rows) == [0, 1, 2, 3, 4]
    assert {r.failure_reason for r in rows} == {"interrupted: the worker stopped while training it; the trial was "
                                                "retried"}
    monkeypatch.setattr(Trainer, "run", train)
    coarse(url, trials=4, sample_ahead=False)
    done = trials_of(runner)
    assert not [t for t in done if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert done[5].params == done[0].params and done[5].state != TrialState.FAIL  # trained at last
    assert len(done) - sum("failed_trial" in t.system_attrs for t in done) == 4
    from principlelab.cli.campaign_cmd import _warn_about_failures

    _warn_about_failures(runner)  # interruptions are not the recipe's failures: no warning that 5 runs failed
    assert capsys.readouterr().err == ""


def test_a_failing_sampling_process_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: SearchSpace, trial: Any) -> Any:
        raise RuntimeError("the space is broken")

    monkeypatch.setattr(SearchSpace, "suggest", broken)
    with pytest.raises(SampleAheadError, match="the space is broken"):
        coarse(f"sqlite:///{tmp_path / 'broken.db'}")


def test_a_full_disk_in_the_sampling_process_is_its_error_not_a_silent_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process died writing a run row; the worker's next send hit the closed pipe, a BrokenPipeError
    that click takes for a closed stdout: plab exited 1 and said nothing."""
    from principlelab.studies.db import LeaderboardDB

    def full(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "database or disk is full")

    monkeypatch.setattr(LeaderboardDB, "record_run", full)  # only the sampling process writes run rows
    with pytest.raises(SampleAheadError, match=r"the sampling process failed: OSError: \[Errno 28\] database or "
                                               r"disk is full"):
        coarse(f"sqlite:///{tmp_path / 'full.db'}", trials=6)


def test_a_send_to_a_dead_sampling_process_raises_its_error() -> None:
    """The worker's send to the closed pipe is a BrokenPipeError, which click took for a closed stdout."""
    import multiprocessing
    from types import SimpleNamespace

    from principlelab.studies.sample_ahead import SampleAhead

    ahead = SampleAhead.__new__(SampleAhead)
    ahead.conn, child = multiprocessing.Pipe()
    child.send(("error", "Traceback (most recent call last):\n  ...\nsqlite3.OperationalError: database or disk "
                         "is full\n"))
    child.close()
    ahead.process = SimpleNamespace(join=lambda timeout: None, exitcode=1)  # type: ignore[assignment]
    with pytest.raises(SampleAheadError, match=r"^the sampling process failed: sqlite3\.OperationalError: database "
                                               r"or disk is full\nTraceback"):
        ahead.request()


def test_sampling_ahead_is_linux_only_and_off_by_default_elsewhere(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from principlelab.errors import ConfigError
    from principlelab.studies.sample_ahead import can_sample_ahead

    url = f"sqlite:///{tmp_path / 'mac.db'}"
    monkeypatch.setattr("sys.platform", "darwin")
    assert not can_sample_ahead()
    assert not runner_for(url, trials=2).sample_ahead
    with pytest.raises(ConfigError, match="Linux only"):
        runner_for(url, trials=2, sample_ahead=True)
    monkeypatch.setattr("sys.platform", "linux")
    assert runner_for(url, trials=2, workers=2, sample_ahead=True).sample_ahead


@pytest.mark.parametrize(("cores", "workers", "local_workers", "expected"), [
    (1, 1, None, False),  # no core to sample on
    (2, 1, None, True),  # plab campaign run
    (2, 2, None, False),  # --workers 2: every core trains
    (4, 2, None, True),  # --workers 2 with a free core for each
    (2, 2, 1, True),  # plab worker, alone on its machine
    (3, 2, 2, False),  # a spawned worker of --workers 2 on 3 cores
])
def test_by_default_each_local_worker_samples_ahead_when_the_machine_has_a_free_core_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, workers: int, local_workers: int | None,
        expected: bool) -> None:
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr("principlelab.studies.sample_ahead.free_cores", lambda: cores)
    runner = runner_for(f"sqlite:///{tmp_path / 'cores.db'}", trials=2, workers=workers, local_workers=local_workers)
    assert runner.sample_ahead is expected


@pytest.mark.parametrize(("workers", "reads_during_training"), [(1, False), (2, True)])
def test_a_shared_workers_pruner_reads_other_workers_reports_during_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, reads_during_training: bool) -> None:
    """A lone worker's pruner sees only its own reports, so it skips the reads; one of several
    workers sampling ahead keeps them, as it would sampling in the worker."""
    from principlelab.studies import objective as objective_module

    made: list[bool] = []
    original = objective_module.Objective.__init__

    def noting(self: Any, ctx: Any, **kwargs: Any) -> None:
        if kwargs.get("defer_records"):  # the worker's objective, not the sampling process's
            made.append(kwargs["read_through"])
        original(self, ctx, **kwargs)

    monkeypatch.setattr(objective_module.Objective, "__init__", noting)
    runner = runner_for(f"sqlite:///{tmp_path / 'shared.db'}", trials=3, workers=workers, sample_ahead=True)
    ctx = runner.context("digits", 0)
    runner.run_level(ctx, runner.study(ctx))
    assert made == [reads_during_training]
    assert all(t.state.is_finished() for t in trials_of(runner))


def test_progress_counts_the_trial_in_training_without_sampling_ahead(tmp_path: Path) -> None:
    """The bar said 'running 0' for the whole of each trial: the states were read just before it started."""
    seen: list[tuple[int, int]] = []
    runner = runner_for(f"sqlite:///{tmp_path / 'p.db'}", trials=3, sample_ahead=False,
                        progress=lambda p: seen.append((p.done, p.running)))
    ctx = runner.context("digits", 0)
    runner.run_level(ctx, runner.study(ctx))
    assert [s for s in seen if s[1] == 1] == [(0, 1), (1, 1), (2, 1)]  # shown as running while it trained
