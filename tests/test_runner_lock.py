"""One ``plab campaign run`` per campaign on an SQLite file (:mod:`principlelab.studies.runner_lock`):
a second run of the same campaign is refused, writing nothing; other campaigns in the file are not;
the lock goes with its process, however it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from principlelab.studies.db import LeaderboardDB
from principlelab.studies.runner_lock import campaign_runner_lock, lock_file_of
from test_campaign import campaign_toml, error_line, invoke, run_campaign, runs_by_level, snapshot, write

HOLD = """import sys, time
from principlelab.studies.runner_lock import campaign_runner_lock
with campaign_runner_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def small(name: str, **kwargs: object) -> str:
    return campaign_toml(name, pruner="none", fine=False, coarse_epochs=1, **kwargs)  # type: ignore[arg-type]


def test_a_second_run_is_refused_and_writes_nothing_until_the_first_process_ends(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    path = write(tmp_path, small("tiny", trials=1))
    run_campaign(path, "--storage", url)  # and releases its lock when done: the holder below takes it
    before = snapshot(tmp_path / "x.db")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url, "tiny"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        line = error_line(invoke("campaign", "run", str(path), "--storage", url))
        assert line == (f"plab: error: campaign 'tiny' is already running on {url} in process {holder.pid}: SQLite "
                        "is for one process. Wait for it to finish (rerunning then resumes where it stopped), or run "
                        "several workers on PostgreSQL (--storage postgresql+psycopg://USER:PASSWORD@HOST/DB, see "
                        "docs/campaigns.md)")
        assert snapshot(tmp_path / "x.db") == before
        other = write(tmp_path, small("other", trials=1), "other.toml")
        run_campaign(other, "--storage", url)  # another campaign in the same file is not excluded
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the lock with the process
        holder.wait()
    run_campaign(path, "--storage", url)


def test_two_real_runs_of_one_campaign(tmp_path: Path):
    """A ``plab campaign run`` in another process (a 4 s time budget): the same command here is refused
    while it runs; when it ends, each of its trials is one run and a rerun resumes."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    path = write(tmp_path, small("busy").replace("trials = 8", "time_budget_s = 4.0"))
    env = {**os.environ, "PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD": "1"}
    first = subprocess.Popen([sys.executable, "-m", "principlelab", "campaign", "run", str(path), "--storage", url],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "x.db").exists():  # created after the lock is taken
        assert first.poll() is None and time.monotonic() < deadline, "the first run ended before its database"
        time.sleep(0.05)
    line = error_line(invoke("campaign", "run", str(path), "--storage", url))
    assert f"campaign 'busy' is already running on {url} in process {first.pid}: SQLite is for one process" in line
    assert first.poll() is None, "the first run should still be in its 4 s budget"
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    runs = runs_by_level(LeaderboardDB(url), "busy")["coarse"]
    assert len(runs) >= 3 and sorted(r.trial_number for r in runs) == list(range(len(runs)))
    run_campaign(path, "--storage", url)  # the lock went with the first process; nothing is left to train
    assert len(runs_by_level(LeaderboardDB(url), "busy")["coarse"]) == len(runs)


def test_one_process_may_hold_a_campaign_twice_and_keeps_it_until_the_last_release(tmp_path: Path):
    """Record locks belong to the process: a nested hold is counted, and the outer one still excludes
    other processes after the inner one ends."""
    url = f"sqlite:///{tmp_path / 'x.db'}"

    def other_process_can_take_it() -> bool:
        probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(600)", "pass"), url, "c"],
                               capture_output=True, text=True, timeout=60)
        return probe.returncode == 0

    with campaign_runner_lock(url, "c"):
        with campaign_runner_lock(url, "c"):
            assert not other_process_can_take_it()
        assert not other_process_can_take_it()
    assert other_process_can_take_it()
    first, second = ExitStack(), ExitStack()  # released in the other order (runners collected in any order)
    first.enter_context(campaign_runner_lock(url, "c"))
    second.enter_context(campaign_runner_lock(url, "c"))
    first.close()
    assert not other_process_can_take_it()
    second.close()
    assert other_process_can_take_it()
    assert lock_file_of(tmp_path / "x.db").exists() and not (tmp_path / "x.db").exists()  # the database untouched


def test_other_databases_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u:p@127.0.0.1:1/x"):
        with campaign_runner_lock(url, "c"), campaign_runner_lock(url, "c"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_database_in_a_missing_folder_is_still_the_databases_one_line_error(tmp_path: Path):
    """The lock file cannot be made there either: no lock, and opening the database says what to fix."""
    path = write(tmp_path, small("tiny", trials=1))
    url = f"sqlite:///{tmp_path / 'nope' / 'x.db'}"
    line = error_line(invoke("campaign", "run", str(path), "--storage", url))
    assert line == (f"plab: error: cannot open database {url}: unable to open database file; check that "
                    f"{tmp_path / 'nope'} exists and is writable, or pass another --storage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]


@pytest.mark.postgres
def test_a_second_coordinator_on_postgresql_is_pointed_to_plab_worker_and_writes_nothing(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PostgreSQL: a session advisory lock, named by the holder's connection. The refusal waits the grace
    period (shortened here); a killed holder's session ends with its process, and the next run starts."""
    from sqlalchemy import create_engine, inspect

    from principlelab.studies import runner_lock

    monkeypatch.setattr(runner_lock, "GRACE_S", 0.5)
    path = write(tmp_path, small("tiny", trials=1))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, pg_url, "tiny"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        line = error_line(invoke("campaign", "run", str(path), "--storage", pg_url))
        assert line.startswith(f"plab: error: campaign 'tiny' is already running on {pg_url} (plab campaign run ")
        assert line.endswith(f":{holder.pid}); to add workers to it, run plab worker --campaign tiny --storage URL "
                             "(see docs/campaigns.md), or wait for it to finish and rerun")
        engine = create_engine(pg_url)
        assert inspect(engine).get_table_names() == []  # nothing written
        engine.dispose()
        with campaign_runner_lock(pg_url, "other"):  # another campaign on the same server is not excluded
            pass
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr(runner_lock, "GRACE_S", 10.0)  # the server ends the killed holder's session meanwhile
    run_campaign(path, "--storage", pg_url)
