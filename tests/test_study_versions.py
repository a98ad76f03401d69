"""Study versions and resuming, on SQLite: a newly installed plugin changes the search space, so the
next run of the same campaign file opens a new study version linked to the old one (both stay
queryable); and rerunning an interrupted campaign never repeats a finished trial."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from principlelab.errors import StorageError
from principlelab.studies.optuna_setup import close_storage, make_storage
from slow_principles import slow_principles, small_campaign

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "principlelab-example-plugin"
TIMEOUT_S = 150


# A trigger that never fires but sleeps after every epoch, so a campaign can be killed in mid-trial.
SLOW_PRINCIPLES = slow_principles(0.4)


def hermetic_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD": "1", "PRINCIPLELAB_THREADS": "1", **extra}
    env.pop("PRINCIPLELAB_STORAGE", None)
    return env


def plab(env: dict[str, str], cwd: Path, *args: str) -> str:
    """``python -m principlelab ARGS``; its stdout (fails the test on a non-zero exit)."""
    done = subprocess.run([sys.executable, "-m", "principlelab", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"plab {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def query(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def study_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).trials
    finally:
        close_storage(storage)


@pytest.fixture(scope="module")
def example_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example third-party plugin pip-installed into a directory of its own (for PYTHONPATH)."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    project = tmp / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(project)], check=True, timeout=300)
    return target


def test_installing_a_plugin_opens_a_new_linked_study_version(tmp_path: Path,
                                                              example_plugin_path: Path) -> None:
    name, trials, seeds, k = "versions", 4, 1, 2
    path = tmp_path / "campaign.toml"
    path.write_text(small_campaign(name, trigger='["never", "every_k"]', growth='"all"', trials=trials,
                                   seeds=seeds, k=k))
    url = f"sqlite:///{tmp_path / 'plab.db'}"

    plab(hermetic_env(), tmp_path, "campaign", "run", str(path), "--storage", url)  # fingerprint A
    with_plugin = {**hermetic_env(), "PYTHONPATH": os.pathsep.join(
        [str(example_plugin_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with_plugin.pop("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD")  # a user's environment autoloads plugins
    plab(with_plugin, tmp_path, "campaign", "run", str(path), "--storage", url)  # same file, new space

    versions = query(url, "SELECT id, level, version, parent_id, fingerprint, optuna_study_name, space_json "
                          "FROM plab_study_versions ORDER BY level_index, version")
    assert [(v.level, v.version) for v in versions] == [("coarse", 1), ("coarse", 2), ("fine", 1), ("fine", 2)]
    by_level = {level: [v for v in versions if v.level == level] for level in ("coarse", "fine")}
    for v1, v2 in by_level.values():
        assert v1.parent_id is None and v2.parent_id == v1.id
        assert v1.fingerprint != v2.fingerprint
        assert "narrowest_first" not in v1.space_json and "narrowest_first" in v2.space_json
    coarse1, coarse2 = by_level["coarse"]
    assert (coarse1.optuna_study_name, coarse2.optuna_study_name) == (
        f"{name}/digits/coarse/v1", f"{name}/digits/coarse/v2")
    for version in (coarse1, coarse2):  # each version ran its own trials; the old study is kept
        assert len(study_trials(url, version.optuna_study_name)) == trials

    # the leaderboard holds the complete runs of both versions
    runs = query(url, "SELECT id, study_version_id FROM plab_runs WHERE status = 'complete'")
    version_of = {r.id: r.study_version_id for r in runs}
    rows = json.loads(plab(hermetic_env(), tmp_path, "leaderboard", "--campaign", name, "--storage", url,
                           "--top", "0", "--json"))
    assert sorted(r["id"] for r in rows) == sorted(version_of)
    assert {version_of[r["id"]] for r in rows} == {v.id for v in versions}
    number_of = {v.id: v.version for v in versions}
    assert all(r["version"] == number_of[version_of[r["id"]]] for r in rows)
    # --study-version keeps one version per level: the newest, or the one named
    for wanted, expected in (("latest", 2), ("2", 2), ("1", 1)):
        kept = json.loads(plab(hermetic_env(), tmp_path, "leaderboard", "--campaign", name, "--storage", url,
                               "--top", "0", "--json", "--study-version", wanted))
        assert sorted(r["id"] for r in kept) == sorted(i for i, sv in version_of.items() if number_of[sv] == expected)
    fine_groups = json.loads(plab(hermetic_env(), tmp_path, "leaderboard", "--campaign", name, "--storage", url,
                                  "--top", "0", "--json", "--group-by", "trigger", "--fidelity", "fine"))
    assert sum(g["count"] for g in fine_groups) == sum(
        1 for i, sv in version_of.items() if sv in {v.id for v in by_level["fine"]})
    assert max(g["versions"] for g in fine_groups) <= 2

    state = json.loads(plab(hermetic_env(), tmp_path, "campaign", "status", name, "--storage", url, "--json"))
    shown = {(sv["level"], sv["version"]): sv for sv in state["study_versions"]}
    assert set(shown) == {("coarse", 1), ("coarse", 2), ("fine", 1), ("fine", 2)}
    assert shown[("coarse", 2)]["parent_version"] == 1 and shown[("fine", 2)]["parent_version"] == 1
    assert all(sv["total"] > 0 for sv in shown.values())
    assert state["promotions"] == 2 * k
    table = plab(hermetic_env(), tmp_path, "campaign", "status", name, "--storage", url)
    assert "study versions" in table


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (an exited process nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_rerunning_an_interrupted_campaign_repeats_no_finished_trial(tmp_path: Path) -> None:
    name, trials, seeds, k = "resume", 8, 1, 2
    path = tmp_path / "campaign.toml"
    path.write_text(small_campaign(name, trials=trials, seeds=seeds, k=k))
    (tmp_path / "principles.py").write_text(SLOW_PRINCIPLES)
    url = f"sqlite:///{tmp_path / 'plab.db'}"
    coarse_name = f"{name}/digits/coarse/v1"
    env = hermetic_env(PRINCIPLELAB_HEARTBEAT_INTERVAL="1", PRINCIPLELAB_HEARTBEAT_GRACE="3")

    log = tmp_path / "first.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "principlelab", "campaign", "run", str(path),
                                 "--storage", url], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    storage = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # kill it after 3 finished trials, while a 4th is training
                storage = storage or make_storage(url)
                seen = storage.get_all_trials(storage.get_study_id_from_name(coarse_name), deepcopy=False)
                done = sum(t.state == TrialState.COMPLETE for t in seen)
                training = sum(t.state == TrialState.RUNNING and "principles" in t.user_attrs for t in seen)
            except (KeyError, StorageError, SQLAlchemyError):  # the study (or the database) does not exist yet
                done = training = 0
            if done >= 3 and training:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the campaign ended before it could be interrupted:\n{log.read_text()}"
        samplers = child_pids(proc.pid)  # the sampling process (studies/sample_ahead.py)
        assert samplers, "the campaign forked no sampling process"
        proc.send_signal(signal.SIGKILL)  # the worker only: its sampling process must exit on its own
        exited_by = time.monotonic() + 10
        while time.monotonic() < exited_by and any(running(pid) for pid in samplers):
            time.sleep(0.05)
        assert not any(running(pid) for pid in samplers), "the sampling process outlived its worker"
    finally:
        proc.kill()
        proc.wait()
        if storage is not None:
            close_storage(storage)

    before = {t.number: t for t in study_trials(url, coarse_name)}
    finished_before = {n for n, t in before.items() if t.state.is_finished()}
    assert 3 <= len(finished_before) < trials
    rows_before = {r.trial_number: (r.id, r.created_at, r.status) for r in query(
        url, "SELECT trial_number, id, created_at, status FROM plab_runs WHERE optuna_study_name = :s",
        s=coarse_name)}
    assert set(rows_before) == finished_before

    plab(env, tmp_path, "campaign", "run", str(path), "--storage", url)

    coarse = study_trials(url, coarse_name)
    retried = {t.system_attrs["failed_trial"] for t in coarse if "failed_trial" in t.system_attrs}
    # the trial cut off by the kill and the (up to two) sampled ahead for it (the sampling process wrote what
    # it had been sent before it exited)
    assert 1 <= len(retried) <= 3 and retried == set(before) - finished_before
    assert len(coarse) - len(retried) == trials  # the budget counts each recipe once, finished or not
    assert not [t.number for t in coarse if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number in finished_before:  # finished trials kept their result and were not run again
        assert coarse[number].state == before[number].state
        assert coarse[number].params == before[number].params

    runs = query(url, "SELECT optuna_study_name, trial_number, id, created_at, status, failure_reason "
                      "FROM plab_runs")
    assert not [key for key, n in Counter((r.optuna_study_name, r.trial_number) for r in runs).items() if n > 1]
    coarse_runs = {r.trial_number: r for r in runs if r.optuna_study_name == coarse_name}
    assert set(coarse_runs) == {t.number for t in coarse}
    for number in finished_before:
        assert (coarse_runs[number].id, coarse_runs[number].created_at, coarse_runs[number].status) == \
            rows_before[number]
    for number in retried:
        assert coarse_runs[number].status == "failed" and "worker lost" in coarse_runs[number].failure_reason
    fine = study_trials(url, f"{name}/digits/fine/v1")
    assert len(fine) == k * seeds and all(t.state == TrialState.COMPLETE for t in fine)
