"""``plab campaign run`` end to end on tiny campaigns: coarse -> promote -> fine, lineage, resuming,
Optuna user attributes, Pareto promotion, failed trials, and bad input that writes nothing."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from click.testing import CliRunner, Result

from ctrl_c import ctrl_c_at_training
from principlelab.cli import main
from principlelab.core.recipe import SLOTS
from principlelab.studies.db import LeaderboardDB, RunRow
from principlelab.studies.optuna_setup import make_storage

SEARCH = {"connectivity": ["dense", "sparse_random"], "learning": ["backprop"], "trigger": ["never", "every_k"],
          "growth": ["none", "random"], "composition": ["sequential"]}


def campaign_toml(name: str = "tiny", *, trials: int = 8, pruner: str | None = None, search: dict | None = None,
                  rule: str = "top_k", k: int = 2, fine_epochs: int = 2, seeds: int = 2,
                  coarse_epochs: int = 2, fine: bool = True, seed: int = 0) -> str:
    """A tiny digits campaign: hidden [16], coarse on 20% of the data, random sampler."""
    search = {**SEARCH, **(search or {})}
    lines = [f'name = "{name}"', 'tasks = ["digits"]', f"seed = {seed}", "", "[network]", "hidden = [16]", "",
             "[search]", *(f"{slot} = {names!r}".replace("'", '"') for slot, names in search.items()), "",
             "[[levels]]", 'name = "coarse"', "data_fraction = 0.2", f"epochs = {coarse_epochs}",
             f"trials = {trials}", 'sampler = "random"']
    if pruner is not None:
        lines.append(f'pruner = "{pruner}"')
    if fine:
        lines += ["", "[[levels]]", 'name = "fine"', f"epochs = {fine_epochs}", f"seeds = {seeds}"]
    lines += ["", "[promotion]", f'rule = "{rule}"', f"k = {k}"]
    return "\n".join(lines) + "\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def run_campaign(path: Path, *extra: str) -> Result:
    result = invoke("campaign", "run", str(path), *extra)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


def write(directory: Path, text: str, name: str = "campaign.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def runs_by_level(db: LeaderboardDB, campaign: str) -> dict[str, list[RunRow]]:
    """Every run of a campaign, per level name."""
    camp = db.get_campaign(campaign)
    assert camp is not None
    out: dict[str, list[RunRow]] = defaultdict(list)
    for sv in db.study_versions(camp.id):
        out[sv.level].extend(db.runs_for_study_version(sv.id))
    return out


def study_versions(db: LeaderboardDB, campaign: str) -> dict[str, Any]:
    camp = db.get_campaign(campaign)
    assert camp is not None
    return {sv.level: sv for sv in db.study_versions(camp.id)}


def snapshot(db_file: Path) -> list[str]:
    """Every row of every table (Optuna's and principlelab's), as SQL."""
    with sqlite3.connect(db_file) as conn:
        return list(conn.iterdump())


# ------------------------------------------------------------------------------- one full campaign


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny campaign (8 coarse trials, hyperband, top-2, 2 seeds), run once for this module."""
    directory = tmp_path_factory.mktemp("tiny")
    path = write(directory, campaign_toml())
    url = f"sqlite:///{directory}/x.db"
    result = run_campaign(path, "--storage", url)
    return {"path": path, "url": url, "result": result, "db": LeaderboardDB(url, create=False)}


def test_campaign_prints_the_rank_correlation_and_a_leaderboard(tiny: dict[str, Any]):
    out, err = tiny["result"].stdout, " ".join(tiny["result"].stderr.split())  # rich wraps the banner
    assert "digits coarse -> fine: coarse-vs-fine rank correlation over 2 recipes: Spearman rho=" in out
    assert "Kendall tau=" in out
    assert "leaderboard by recipe: test_accuracy (mean ± std over runs)" in out
    assert "fidelity=fine" in out  # the printed board is the last level's
    assert "campaign 'tiny': 1 task(s), levels coarse -> fine, storage sqlite:///" in err
    # two promoted recipes cannot show that coarse predicts fine: the campaign says so
    assert ("warning: on digits, only 2 recipe(s) reached the fine level with a value at both levels: too few to "
            "tell whether the coarse level predicts it (3 are needed); promote more recipes ([promotion] k)") in err


def test_every_trial_is_one_run_and_promotions_keep_their_lineage(tiny: dict[str, Any]):
    db: LeaderboardDB = tiny["db"]
    runs = runs_by_level(db, "tiny")
    svs = study_versions(db, "tiny")
    coarse, fine = runs["coarse"], runs["fine"]
    assert len(coarse) == 8  # every trial, complete or pruned
    assert {r.status for r in coarse} <= {"complete", "pruned"} and any(r.status == "complete" for r in coarse)
    assert len(fine) == 2 * 2 and all(r.status == "complete" for r in fine)

    promotions = db.promotions(to_study_version_id=svs["fine"].id)
    assert len(promotions) == 2
    coarse_by_id = {r.id: r for r in coarse}
    promoted_keys = {p.recipe_key for p in promotions}
    for p in promotions:
        assert p.from_study_version_id == svs["coarse"].id
        source = coarse_by_id[p.source_run_id]
        assert source.recipe_key == p.recipe_key and source.status == "complete"
    # the promoted recipes are the coarse top 2 by mean objective (ties: cheaper, then key)
    complete = [r for r in coarse if r.status == "complete"]
    best = sorted({r.recipe_key: r for r in complete}.values(),
                  key=lambda r: (-r.objective, r.params, r.recipe_key))[:2]
    assert promoted_keys == {r.recipe_key for r in best}

    seeds: dict[str, list[int]] = defaultdict(list)
    for run in fine:
        source = coarse_by_id[run.promoted_from_run_id]
        assert source.recipe_key == run.recipe_key and run.recipe_key in promoted_keys
        assert all(getattr(run, slot) == getattr(source, slot) for slot in SLOTS)
        assert run.learning_config == source.learning_config
        seeds[run.recipe_key].append(run.seed)
    assert {key: sorted(s) for key, s in seeds.items()} == {key: [0, 1] for key in promoted_keys}


def test_a_rerun_right_after_a_kill_during_promotion_trains_every_promoted_recipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Killed between recording a promotion and enqueueing its seeds, a campaign rerun at once went on
    without that recipe: the promotion counted as another worker's until the heartbeat grace (60 s) was
    over. On SQLite only this process runs the campaign, so it is enqueued at once."""
    path = write(tmp_path, campaign_toml("killed"))
    url = f"sqlite:///{tmp_path / 'plab.db'}"

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # as a SIGKILL right after the first promotion row was committed

    monkeypatch.setattr(optuna.Study, "enqueue_trial", killed)
    assert invoke("campaign", "run", str(path), "--storage", url).exit_code == 130
    with LeaderboardDB(url, create=False) as db:
        fine = study_versions(db, "killed")["fine"]
        assert len(db.promotions(to_study_version_id=fine.id)) == 1 and runs_by_level(db, "killed")["fine"] == []
    monkeypatch.undo()
    run_campaign(path, "--storage", url)
    with LeaderboardDB(url, create=False) as db:
        promoted = {p.recipe_key for p in db.promotions(to_study_version_id=study_versions(db, "killed")["fine"].id)}
        fine_seeds: dict[str, list[int]] = defaultdict(list)
        for run in runs_by_level(db, "killed")["fine"]:
            fine_seeds[run.recipe_key].append(run.seed)
    assert len(promoted) == 2 and {key: sorted(s) for key, s in fine_seeds.items()} == {k: [0, 1] for k in promoted}


@pytest.mark.parametrize("sample_ahead", ["--sample-ahead", "--no-sample-ahead"])
def test_status_shows_how_far_a_stopped_campaign_got(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     sample_ahead: str):
    """After a stop it read '2 runs (complete 2)' with no target and no sign of the levels to come."""
    path = write(tmp_path, campaign_toml("stopped"))
    url = f"sqlite:///{tmp_path / 'plab.db'}"
    ctrl_c_at_training(monkeypatch, 3)
    assert invoke("campaign", "run", str(path), "--storage", url, sample_ahead).exit_code == 130
    status = invoke("campaign", "status", "stopped", "--storage", url)
    assert status.exit_code == 0, status.stderr
    assert ("progress: digits coarse 2 of 8 trials; digits fine not started  (unfinished: rerun the campaign to "
            "resume)") in status.stdout
    monkeypatch.undo()
    run_campaign(path, "--storage", url)
    status = invoke("campaign", "status", "stopped", "--storage", url)
    assert "progress: digits coarse 8 of 8 trials; digits fine 4 of 4 trials\n" in status.stdout


def test_trials_carry_the_principles_as_user_attributes(tiny: dict[str, Any]):
    db: LeaderboardDB = tiny["db"]
    svs = study_versions(db, "tiny")
    coarse = optuna.load_study(study_name=svs["coarse"].optuna_study_name, storage=make_storage(tiny["url"]))
    assert len(coarse.trials) == 8
    for trial in coarse.trials:
        run = db.run_for_trial(svs["coarse"].optuna_study_name, trial.number)
        assert trial.user_attrs["principles"] == {slot: getattr(run, slot) for slot in SLOTS}
        assert trial.user_attrs["principles"]["learning"] == "backprop"
    fine = optuna.load_study(study_name=svs["fine"].optuna_study_name, storage=make_storage(tiny["url"]))
    assert len(fine.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in fine.trials)
    for trial in fine.trials:
        run = db.run_for_trial(svs["fine"].optuna_study_name, trial.number)
        assert trial.user_attrs["promoted_from"] == run.promoted_from_run_id
        assert trial.user_attrs["recipe_key"] == run.recipe_key and trial.user_attrs["seed"] == run.seed
        assert set(trial.user_attrs["principles"]) == set(SLOTS)


def test_rerunning_the_same_file_resumes_without_new_trials(tiny: dict[str, Any]):
    db: LeaderboardDB = tiny["db"]
    svs = study_versions(db, "tiny")

    def state() -> tuple[dict[str, list[tuple[int, str, float | None]]], int]:
        runs = runs_by_level(db, "tiny")
        return ({level: [(r.id, r.status, r.objective) for r in rows] for level, rows in runs.items()},
                len(db.promotions()))

    before = state()
    rows_before = snapshot(Path(tiny["url"].removeprefix("sqlite:///")))
    again = run_campaign(tiny["path"], "--storage", tiny["url"])
    assert state() == before
    # nothing written at all: loading the studies appends no creation logs to Optuna's journal either
    assert snapshot(Path(tiny["url"].removeprefix("sqlite:///"))) == rows_before
    assert study_versions(db, "tiny").keys() == svs.keys()
    assert [len(optuna.load_study(study_name=sv.optuna_study_name, storage=make_storage(tiny["url"])).trials)
            for sv in svs.values()] == [8, 4]
    assert "coarse-vs-fine rank correlation over 2 recipes" in again.stdout
    assert "leaderboard by recipe" in again.stdout


def test_leaderboard_status_and_compare_read_the_campaign(tiny: dict[str, Any]):
    url = tiny["url"]
    result = invoke("leaderboard", "--storage", url, "--campaign", "tiny", "--fidelity", "fine",
                    "--group-by", "recipe", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(row["count"] == 2 and row["level"] == "fine" for row in rows)

    result = invoke("campaign", "status", "tiny", "--storage", url, "--json")
    assert result.exit_code == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["promotions"] == 2 and state["totals"]["total"] == 8 + 4
    assert [(sv["level"], sv["total"]) for sv in state["study_versions"]] == [("coarse", 8), ("fine", 4)]

    a, b = (row["recipe_key"] for row in rows)
    result = invoke("compare", "--storage", url, "--campaign", "tiny", "--fidelity", "fine", a, b, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["n_pairs"] == 2  # seeds 0 and 1 of both recipes


# ------------------------------------------------------------------------------ Pareto promotion


def test_pareto_promotion_picks_only_non_dominated_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # the default storage: principlelab.db in the current directory
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    path = write(tmp_path, campaign_toml("front", trials=8, pruner="none", rule="pareto", k=10, fine_epochs=1,
                                         seeds=1))
    run_campaign(path)
    assert (tmp_path / "principlelab.db").is_file()
    db = LeaderboardDB("sqlite:///principlelab.db", create=False)
    runs = runs_by_level(db, "front")
    grouped: dict[str, list[RunRow]] = defaultdict(list)
    for run in runs["coarse"]:
        if run.status == "complete":
            grouped[run.recipe_key].append(run)
    points = {key: (sum(r.objective for r in rs) / len(rs), sum(r.params for r in rs) / len(rs))
              for key, rs in grouped.items()}

    def dominated(key: str) -> bool:
        value, cost = points[key]
        return any(v >= value and c <= cost and (v > value or c < cost) for v, c in points.values())

    front = {key for key in points if not dominated(key)}
    assert len(points) >= 3 and front and len(front) < len(points)  # the rule had something to reject
    promoted = {p.recipe_key for p in db.promotions(to_study_version_id=study_versions(db, "front")["fine"].id)}
    assert promoted == front
    assert sorted(r.recipe_key for r in runs["fine"]) == sorted(front)  # one seed each


# ------------------------------------------------------------------------------- failing trials

NAN_RULE = '''
import torch
from principlelab.core import LearningRule, PrincipleConfig
from principlelab.registry import hookimpl


class NanLoss(LearningRule):
    """Diverges at once: every step's loss is NaN."""

    name = "nan_loss"

    class Config(PrincipleConfig):
        pass

    def setup(self, net, composition):
        pass

    def step(self, net, composition, x, y, signals):
        return torch.tensor(float("nan"))


@hookimpl
def register_learning_rules(register):
    register(NanLoss)
'''

BOOM_TRIGGER = '''
from principlelab.core import PrincipleConfig, Trigger
from principlelab.registry import hookimpl


class Boom(Trigger):
    """Crashes at the end of the first epoch."""

    name = "boom"

    class Config(PrincipleConfig):
        pass

    def on_step(self, signals):
        return None

    def on_epoch_end(self, signals):
        raise RuntimeError("boom")


@hookimpl
def register_triggers(register):
    register(Boom)
'''

PICKY_TRIGGER = '''
from principlelab.core import PrincipleConfig, Trigger
from principlelab.registry import hookimpl


class Picky(Trigger):
    """Never fires, and refuses to run with random growth."""

    name = "picky"
    incompatible_with = {"growth": frozenset({"random"})}

    class Config(PrincipleConfig):
        pass

    def on_step(self, signals):
        return None


@hookimpl
def register_triggers(register):
    register(Picky)
'''

ONE_CHOICE = {"connectivity": ["dense"], "learning": ["backprop"], "trigger": ["never"], "growth": ["none"]}


def failing_campaign(tmp_path: Path, name: str, plugin: str, search: dict) -> tuple[Result, LeaderboardDB]:
    (tmp_path / "principles.py").write_text(plugin)  # the CLI loads principles.py next to the campaign file
    path = write(tmp_path, campaign_toml(name, trials=6, pruner="none", search={**ONE_CHOICE, **search}, k=1,
                                         seeds=1, fine_epochs=1, coarse_epochs=1))
    url = f"sqlite:///{tmp_path}/x.db"
    result = run_campaign(path, "--storage", url)
    return result, LeaderboardDB(url, create=False)


def check_failures(db: LeaderboardDB, name: str, principle: tuple[str, str], reason: str) -> None:
    slot, bad = principle
    runs = runs_by_level(db, name)
    coarse = runs["coarse"]
    assert len(coarse) == 6  # the campaign went on after each failure
    failed = [r for r in coarse if r.status == "failed"]
    complete = [r for r in coarse if r.status == "complete"]
    assert failed and complete and len(failed) + len(complete) == 6
    assert all(getattr(r, slot) == bad and r.failure_reason == reason for r in failed)
    assert all(getattr(r, slot) != bad and r.failure_reason is None for r in complete)
    # ... and finished: the best complete recipe was promoted and run at the fine level
    assert len(runs["fine"]) == 1 and runs["fine"][0].status == "complete"
    assert getattr(runs["fine"][0], slot) != bad
    study = optuna.load_study(study_name=study_versions(db, name)["coarse"].optuna_study_name,
                              storage=make_storage(db.url))
    failed_trials = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed_trials) == len(failed)
    assert all(t.user_attrs["failure_reason"] == reason and t.user_attrs["principles"][slot] == bad
               for t in failed_trials)


def test_a_diverging_trial_is_recorded_as_failed_and_the_campaign_goes_on(tmp_path: Path):
    result, db = failing_campaign(tmp_path, "diverge", NAN_RULE, {"learning": ["backprop", "nan_loss"]})
    check_failures(db, "diverge", ("learning", "nan_loss"),
                   "TrainingDiverged: training loss became nan in epoch 0")
    status = invoke("campaign", "status", "diverge", "--storage", db.url, "--json")
    assert status.exit_code == 0, status.stderr
    coarse = json.loads(status.stdout)["study_versions"][0]
    assert coarse["level"] == "coarse"
    assert coarse["failures"] == [{"reason": "TrainingDiverged: training loss became nan in epoch 0",
                                   "count": coarse["counts"]["failed"]}]
    assert "leaderboard by recipe" in result.stdout


def test_a_crashing_principle_is_recorded_as_failed_and_the_campaign_finishes(tmp_path: Path):
    result, db = failing_campaign(tmp_path, "crash", BOOM_TRIGGER, {"trigger": ["never", "boom"]})
    check_failures(db, "crash", ("trigger", "boom"), "RuntimeError: boom")
    assert "coarse-vs-fine rank correlation over 1 recipes" in result.stdout
    failed = sum(r.status == "failed" for rows in runs_by_level(db, "crash").values() for r in rows)
    assert (f"warning: {failed} run(s) of campaign 'crash' failed (most often: 'RuntimeError: boom', {failed}x); "
            "plab campaign status crash lists the reasons") in result.stderr


def test_a_campaign_whose_every_trial_fails_still_ends_cleanly(tmp_path: Path):
    result, db = failing_campaign(tmp_path, "allfail", BOOM_TRIGGER, {"trigger": ["boom"]})
    assert {r.status for r in runs_by_level(db, "allfail")["coarse"]} == {"failed"}
    assert "warning: 6 run(s) of campaign 'allfail' failed (most often: 'RuntimeError: boom', 6x)" in result.stderr
    assert "no complete runs on digits at level 'fine': no leaderboard" in result.stderr
    board = invoke("leaderboard", "--storage", db.url, "--campaign", "allfail", "--fidelity", "fine")
    assert board.exit_code == 0 and "no complete runs" in board.stderr  # a declared level, not an unknown one
    typo = invoke("leaderboard", "--storage", db.url, "--campaign", "allfail", "--fidelity", "fne")
    assert typo.exit_code == 2
    assert "no run in campaign 'allfail' has fidelity 'fne'; those with runs: coarse" in typo.stderr


def test_an_incompatible_combination_is_recorded_as_rejected_without_training(tmp_path: Path):
    (tmp_path / "principles.py").write_text(PICKY_TRIGGER)
    path = write(tmp_path, campaign_toml("picky", trials=6, pruner="none", fine=False, coarse_epochs=1,
                                         search={**ONE_CHOICE, "trigger": ["never", "picky"],
                                                 "growth": ["none", "random"]}))
    url = f"sqlite:///{tmp_path}/x.db"
    run_campaign(path, "--storage", url)
    db = LeaderboardDB(url, create=False)
    study = optuna.load_study(study_name=study_versions(db, "picky")["coarse"].optuna_study_name,
                              storage=make_storage(url))
    rejected = [t for t in study.trials if t.params["trigger"] == "picky" and t.params["growth"] == "random"]
    assert rejected and len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.PRUNED and "incompatible" in t.user_attrs["rejected"]
               for t in rejected)
    runs = runs_by_level(db, "picky")["coarse"]
    assert len(runs) == 6  # one run row per trial, rejected ones included
    assert sum(r.status == "rejected" for r in runs) == len(rejected)
    assert all(r.failure_reason.startswith("rejected: ") for r in runs if r.status == "rejected")


# ------------------------------------------------------------------ bad input: one line, nothing written


def error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("plab: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda t: t.replace('tasks = ["digits"]', 'tasks = ["digits"'), "is not valid TOML"),
    (lambda t: t.replace('trigger = ["never", "every_k"]', 'trigger = ["never", "nope"]'),
     "campaign 'tiny', [search]: unknown trigger principle 'nope'; known: "),
    (lambda t: t.replace('composition = ["sequential"]', 'composition = ["sequential"]\nwiring = ["dense"]'),
     "search.wiring: Extra inputs are not permitted (got ['dense']); allowed keys: connectivity, learning, "
     "trigger, growth, composition, fixed"),
    (lambda t: t.replace("epochs = 2\nseeds", "epochs = 0\nseeds"),
     "levels.1.epochs: Input should be greater than or equal to 1 (got 0); allowed: 1 <= epochs <= 100000"),
    (lambda t: t.replace("epochs = 2\nseeds", "epochs = 2\ntrials = 3\nseeds"),
     "campaign.toml': level 'fine' sets trials or time_budget_s, which only the first level uses"),
    (lambda t: t.replace('tasks = ["digits"]', 'tasks = ["digits", "mnist1d", "digits"]'),
     "tasks: each task once: 'digits' is listed more than once (got ['digits', 'mnist1d', 'digits'])"),
], ids=["malformed-toml", "unknown-principle", "unknown-slot", "zero-epochs", "trials-on-a-later-level",
        "a-task-twice"])
def test_a_bad_campaign_file_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              edit: Any, expected: str):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    text = edit(campaign_toml())
    assert text != campaign_toml()
    path = write(tmp_path, text)
    line = error_line(invoke("campaign", "run", str(path)))
    assert expected in line
    if "unknown trigger" in line:
        assert "every_k" in line and "never" in line  # the known names are listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]  # no principlelab.db


def test_workers_on_sqlite_points_to_postgresql_and_writes_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    path = write(tmp_path, campaign_toml())
    line = error_line(invoke("campaign", "run", str(path), "--workers", "2"))
    assert "--workers 2" in line and "SQLite" in line and "PostgreSQL" in line and "postgresql+psycopg://" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]
    line = error_line(invoke("worker", "--campaign", "tiny", "--storage", f"sqlite:///{tmp_path / 'w.db'}"))
    assert line.startswith("plab: error: plab worker (joining a campaign other processes run) needs a database "
                           "server: SQLite") and "--workers" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]


def test_an_unreachable_database_is_one_line_with_the_password_masked(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, campaign_toml())
    line = error_line(invoke("campaign", "run", str(path), "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/x"))
    assert "u:***@127.0.0.1:1/x" in line and "secret" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]


def test_the_same_name_with_another_file_is_refused_and_changes_nothing(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/x.db"
    first = write(tmp_path, campaign_toml("same", trials=1, pruner="none", fine=False, coarse_epochs=1), "a.toml")
    run_campaign(first, "--storage", url)
    before = snapshot(tmp_path / "x.db")
    second = write(tmp_path, campaign_toml("same", trials=2, pruner="none", fine=False, coarse_epochs=1), "b.toml")
    line = error_line(invoke("campaign", "run", str(second), "--storage", url))
    assert "campaign 'same' already exists" in line and "different campaign file" in line
    assert "rename the campaign or use another --storage" in line
    assert snapshot(tmp_path / "x.db") == before


def _save_digits(path: Path, classes: int) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    keep = y < classes
    np.savez(path, X=x[keep].astype(np.float32) / 16, y=y[keep])


def test_changed_data_under_a_file_task_is_refused_and_changes_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """A rerun (or a worker) whose file: task reads other data would add runs on other data to the same
    studies; the campaign stores each file task's SHA-256 and refuses."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/x.db"
    _save_digits(tmp_path / "data.npz", classes=10)
    text = campaign_toml("data", trials=1, pruner="none", fine=False, coarse_epochs=1).replace(
        'tasks = ["digits"]', 'tasks = ["file:data.npz"]')
    path = write(tmp_path, text)
    run_campaign(path, "--storage", url)
    stored = LeaderboardDB(url, create=False).get_campaign("data")
    assert stored is not None and list(stored.data_hashes) == ["file:data.npz"]
    run_campaign(path, "--storage", url)  # the same data: resumes
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "data.npz").write_bytes((tmp_path / "data.npz").read_bytes())
    monkeypatch.chdir(tmp_path / "copy")  # the same bytes elsewhere (relative path): accepted
    run_campaign(path, "--storage", url)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path / "x.db")
    _save_digits(tmp_path / "data.npz", classes=5)  # other data under the same name
    line = error_line(invoke("campaign", "run", str(path), "--storage", url))
    assert "campaign 'data': the data of task 'file:data.npz' changed since the campaign started" in line
    assert "restore the file, or give a campaign on the new data its own name" in line
    assert snapshot(tmp_path / "x.db") == before
    from principlelab.errors import ConfigError
    from principlelab.studies.campaign import CampaignRunner

    with pytest.raises(ConfigError, match="changed since the campaign started"):  # a worker joining checks too
        CampaignRunner.from_storage("data", url)
    assert snapshot(tmp_path / "x.db") == before


def test_an_unknown_task_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    path = write(tmp_path, campaign_toml().replace('tasks = ["digits"]', 'tasks = ["digitz"]'))
    line = error_line(invoke("campaign", "run", str(path)))
    assert "campaign 'tiny', tasks ('digitz' at level 'coarse'): unknown task 'digitz'; known: " in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]


def test_a_retried_trial_keeps_its_recipe_but_not_the_dead_trials_pruner_rungs():
    from principlelab.studies.optuna_setup import retry_callback

    study = optuna.create_study(direction="maximize")
    dead = study.ask()
    dead.suggest_float("x", 0, 1)
    dead.set_user_attr("principles", {"growth": "random"})
    study._storage.set_trial_system_attr(dead._trial_id, "completed_rung_0", 0.5)
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    retry = retry_callback(max_retry=1)
    retry(study, study.trials[0])
    waiting = study.trials[1]
    assert waiting.state == optuna.trial.TrialState.WAITING and waiting.params == study.trials[0].params
    assert waiting.user_attrs == {"principles": {"growth": "random"}}
    assert waiting.system_attrs["failed_trial"] == 0 and waiting.system_attrs["retry_history"] == [0]
    assert not any(k.startswith("completed_rung_") for k in waiting.system_attrs)
    retry(study, waiting)  # a second death exceeds max_retry=1: no more retries
    assert len(study.trials) == 2


@pytest.mark.parametrize("ahead", ["--sample-ahead", "--no-sample-ahead"])
def test_a_time_budget_counts_from_the_levels_first_trial_so_a_rerun_trains_nothing(tmp_path: Path, ahead: str):
    """``time_budget_s`` is the level's, not each run's: rerunning a finished campaign starts no new trial."""
    text = campaign_toml("budget", fine=False).replace("trials = 8", "time_budget_s = 1.0")
    path = write(tmp_path, text)
    url = f"sqlite:///{tmp_path / 'b.db'}"
    run_campaign(path, "--storage", url, ahead)
    db = LeaderboardDB(url)
    first = [(r.id, r.status) for r in runs_by_level(db, "budget")["coarse"]]
    assert len(first) >= 3  # tiny trials: several fit in a second
    run_campaign(path, "--storage", url, ahead)
    assert [(r.id, r.status) for r in runs_by_level(db, "budget")["coarse"]] == first


def test_a_campaign_file_that_is_not_utf8_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    (tmp_path / "campaign.toml").write_bytes(b"# r\xe9sum\xe9\n" + campaign_toml().encode())
    line = error_line(invoke("campaign", "run", "campaign.toml"))
    assert line == ("plab: error: campaign file 'campaign.toml' is not UTF-8 text (TOML files are UTF-8): "
                    "byte 0xe9 at offset 3; save it as UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.toml"]


def test_read_commands_leave_a_database_that_is_not_theirs_byte_for_byte(tmp_path: Path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table t(x)")
    conn.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    before = {path: path.read_bytes() for path in (other, empty)}
    for path in (other, empty):
        for args in (["campaign", "status", "x"], ["leaderboard"], ["report", "x"]):
            line = error_line(invoke(*args, "--storage", f"sqlite:///{path}"))
            assert "no principlelab tables" in line
    assert {path: path.read_bytes() for path in (other, empty)} == before  # not even switched to WAL


def test_a_report_into_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path):
    (tmp_path / "afile").write_text("")
    line = error_line(invoke("report", "x", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                             "--out", str(tmp_path / "afile" / "sub")))
    assert "cannot write the report into" in line and "pick another --out" in line
