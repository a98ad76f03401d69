"""The leaderboard database: schema and upgrades, idempotent atomic writers, SQL aggregates that equal
numpy, paired comparisons, storage errors in one line, and the leaderboard/compare CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from sqlalchemy import create_engine, event, inspect, text

from principlelab.cli import _Group
from principlelab.cli.leaderboard_cmd import compare as compare_cmd
from principlelab.cli.leaderboard_cmd import leaderboard as leaderboard_cmd
from principlelab.core.events import GrowthEvent
from principlelab.core.recipe import SLOTS, make_recipe
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.errors import ConfigError, StorageError, UnknownNameError
from principlelab.registry import get_registry
from principlelab.studies import journal_sql
from principlelab.studies import tables as tablesmod
from principlelab.studies.db import (
    PLAB_TABLES,
    SCHEMA_VERSION,
    GrowthEventRow,
    LeaderboardDB,
    RunRow,
    default_storage_url,
    run_fields,
)
from principlelab.studies.leaderboard import compare, query, result_columns, status

# ------------------------------------------------------------------------------------------ fixtures

RECIPES = {  # key -> slots
    "aaaaaa1111": {"connectivity": "dense", "learning": "backprop", "trigger": "every_k", "growth": "random",
                   "composition": "sequential"},
    "aaaaaa2222": {"connectivity": "dense", "learning": "backprop", "trigger": "every_k", "growth": "split",
                   "composition": "sequential"},
    "bbbbbb3333": {"connectivity": "sparse_random", "learning": "backprop", "trigger": "never",
                   "growth": "none", "composition": "sequential"},
}


def url_for(tmp_path: Path, name: str = "lb.db") -> str:
    return f"sqlite:///{tmp_path / name}"


class Builder:
    """A campaign with one study version per (task, level) and helpers to add runs."""

    def __init__(self, db: LeaderboardDB, name: str = "camp") -> None:
        self.db = db
        self.campaign = db.get_or_create_campaign(name, "hash-" + name, json.dumps({"name": name}))
        self.svs: dict[tuple[str, str, str], Any] = {}
        self.trials: dict[str, int] = {}

    def sv(self, task: str, level: str, fingerprint: str = "fp") -> Any:
        """The study version of ``(task, level)`` with this search-space fingerprint (a new one: version + 1)."""
        if (task, level, fingerprint) not in self.svs:
            self.svs[(task, level, fingerprint)] = self.db.get_or_create_study_version(
                self.campaign.id, task, level, 0 if level == "coarse" else 1, fingerprint, "{}",
                lambda v: f"{self.campaign.name}/{task}/{level}/v{v}")
        return self.svs[(task, level, fingerprint)]

    def run(self, key: str, seed: int, acc: float | None, *, task: str = "digits", level: str = "coarse",
            run_status: str = "complete", events: list[dict[str, Any]] | None = None, fingerprint: str = "fp",
            **extra: Any) -> int:
        sv = self.sv(task, level, fingerprint)
        number = self.trials.get(sv.optuna_study_name, 0)
        self.trials[sv.optuna_study_name] = number + 1
        slots = RECIPES[key]
        run = {"campaign_id": self.campaign.id, "study_version_id": sv.id,
               "optuna_study_name": sv.optuna_study_name, "trial_number": number, "task": task,
               "level": level, "seed": seed, "status": run_status, "recipe_key": key,
               **slots, **{f"{slot}_config": {"k": 1} for slot in SLOTS},
               "recipe_json": {"key": key, **slots}, "test_accuracy": acc,
               "val_accuracy": None if acc is None else acc - 0.01,
               "test_loss": None if acc is None else 1 - acc, "params": 1000 + seed, "macs": 10**10 + seed,
               "wall_s": 1.0 + seed, **extra}
        return self.db.record_run(run, events or [])


@pytest.fixture
def db(tmp_path: Path) -> LeaderboardDB:
    database = LeaderboardDB(url_for(tmp_path))
    yield database
    database.close()


@pytest.fixture
def filled(db: LeaderboardDB) -> tuple[LeaderboardDB, dict[tuple[str, str, str], list[float]]]:
    """Recipes x 8 seeds x (digits, mnist1d) at coarse, some pruned/failed runs; returns the values."""
    rng = np.random.default_rng(0)
    b = Builder(db)
    values: dict[tuple[str, str, str], list[float]] = {}
    base = {"aaaaaa1111": 0.80, "aaaaaa2222": 0.90, "bbbbbb3333": 0.70}
    for task in ("digits", "mnist1d"):
        for key, mean in base.items():
            for seed in range(8):
                acc = float(mean + rng.normal(0, 0.01))
                b.run(key, seed, acc, task=task)
                values.setdefault((key, task, "coarse"), []).append(acc)
    b.run("aaaaaa1111", 8, None, run_status="failed", failure_reason="loss became NaN")
    b.run("aaaaaa1111", 9, None, run_status="failed", failure_reason="loss became NaN")
    b.run("bbbbbb3333", 8, 0.5, run_status="pruned")
    b.run("aaaaaa2222", 0, 0.95, level="fine")
    return db, values


# ------------------------------------------------------------------------------------------ schema


def test_schema_created_prefixed_with_version_and_sqlite_pragmas(db: LeaderboardDB, tmp_path: Path):
    names = set(inspect(db.engine).get_table_names())
    assert names >= PLAB_TABLES and all(n.startswith("plab_") for n in PLAB_TABLES)
    assert {"plab_meta", "plab_campaigns", "plab_study_versions", "plab_runs", "plab_growth_events",
            "plab_promotions"} == PLAB_TABLES
    assert db.schema_version == SCHEMA_VERSION == 3
    columns = {c["name"] for c in inspect(db.engine).get_columns("plab_runs")}
    for slot in SLOTS:
        assert {slot, f"{slot}_config"} <= columns
    indexed = {tuple(ix["column_names"]) for ix in inspect(db.engine).get_indexes("plab_runs")}
    assert ("recipe_key",) in indexed and ("growth",) in indexed and ("status",) in indexed
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def _set_version(url: str, version: int | None) -> None:
    """Fake another schema version with plain sqlite3 (opening it with LeaderboardDB would upgrade it)."""
    if not Path(url.removeprefix("sqlite:///")).exists():
        LeaderboardDB(url).close()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        if version is None:
            conn.execute("DELETE FROM plab_meta WHERE key = 'schema_version'")
        else:
            conn.execute("UPDATE plab_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()


@pytest.mark.parametrize("fake_version", [0, None])
def test_upgrade_runs_each_migration_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fake_version: int | None):
    url = url_for(tmp_path)
    Builder(LeaderboardDB(url)).run("aaaaaa1111", 0, 0.9)
    _set_version(url, fake_version)  # a version-0 database (no or a zero schema_version row)
    calls: list[int] = []
    every = list(range(1, SCHEMA_VERSION + 1))
    monkeypatch.setattr(tablesmod, "MIGRATIONS", {v: (lambda conn, v=v: calls.append(v)) for v in every})
    upgraded = LeaderboardDB(url)
    assert calls == every and upgraded.schema_version == SCHEMA_VERSION
    assert len(query(upgraded)) == 1  # data kept
    LeaderboardDB(url).close()
    assert calls == every  # current: nothing runs again


def test_upgrade_to_a_new_version_alters_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = url_for(tmp_path)
    LeaderboardDB(url).close()

    def add_column(conn: Any) -> None:
        conn.execute(text("ALTER TABLE plab_runs ADD COLUMN note TEXT"))

    new = SCHEMA_VERSION + 1
    monkeypatch.setattr(tablesmod, "SCHEMA_VERSION", new)
    monkeypatch.setattr(tablesmod, "MIGRATIONS", {**tablesmod.MIGRATIONS, new: add_column})
    database = LeaderboardDB(url)
    assert database.schema_version == new
    assert "note" in {c["name"] for c in inspect(database.engine).get_columns("plab_runs")}


def test_failed_migration_leaves_the_version_and_tables_alone(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    url = url_for(tmp_path)
    LeaderboardDB(url).close()

    def broken(conn: Any) -> None:
        conn.execute(text("ALTER TABLE plab_runs ADD COLUMN note TEXT"))
        conn.execute(text("SELECT no_such_function()"))

    monkeypatch.setattr(tablesmod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(tablesmod, "MIGRATIONS", {SCHEMA_VERSION + 1: broken})
    with pytest.raises(StorageError):
        LeaderboardDB(url)
    monkeypatch.setattr(tablesmod, "SCHEMA_VERSION", SCHEMA_VERSION)
    database = LeaderboardDB(url)
    assert database.schema_version == SCHEMA_VERSION  # transactional DDL: the column is gone too
    assert "note" not in {c["name"] for c in inspect(database.engine).get_columns("plab_runs")}


def test_a_version_1_database_gets_the_run_curve_and_structure_columns(tmp_path: Path):
    url = url_for(tmp_path)
    Builder(LeaderboardDB(url)).run("aaaaaa1111", 0, 0.9)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:  # what version 1 looked like
        conn.execute("ALTER TABLE plab_runs DROP COLUMN curve")
        conn.execute("ALTER TABLE plab_runs DROP COLUMN structure")
        conn.execute("ALTER TABLE plab_campaigns DROP COLUMN data_hashes")
    conn.close()
    _set_version(url, 1)
    upgraded = LeaderboardDB(url)
    assert upgraded.schema_version == SCHEMA_VERSION
    assert {"curve", "structure"} <= {c["name"] for c in inspect(upgraded.engine).get_columns("plab_runs")}
    assert len(query(upgraded)) == 1  # data kept


def test_a_version_2_database_gets_the_campaigns_data_hashes_column(tmp_path: Path):
    url = url_for(tmp_path)
    Builder(LeaderboardDB(url)).run("aaaaaa1111", 0, 0.9)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:  # what version 2 looked like
        conn.execute("ALTER TABLE plab_campaigns DROP COLUMN data_hashes")
    conn.close()
    _set_version(url, 2)
    upgraded = LeaderboardDB(url)
    assert upgraded.schema_version == 3
    assert "data_hashes" in {c["name"] for c in inspect(upgraded.engine).get_columns("plab_campaigns")}
    camp = upgraded.get_or_create_campaign("camp", "hash-camp", json.dumps({"name": "camp"}), {"file:a.npz": "ab"})
    assert camp.data_hashes == {"file:a.npz": "ab"}  # an older campaign gets its data hash on the next run
    with pytest.raises(ConfigError, match=r"the data of task 'file:a\.npz' changed"):
        upgraded.get_or_create_campaign("camp", "hash-camp", json.dumps({"name": "camp"}), {"file:a.npz": "cd"})
    assert len(query(upgraded)) == 1  # data kept


def test_newer_schema_and_missing_migration_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = url_for(tmp_path)
    _set_version(url, 7)
    with pytest.raises(StorageError, match="schema version 7, newer than"):
        LeaderboardDB(url)
    _set_version(url, 0)
    monkeypatch.setattr(tablesmod, "MIGRATIONS", {})
    with pytest.raises(StorageError, match="no migration to principlelab schema version 1"):
        LeaderboardDB(url)


def test_tables_live_beside_optunas(tmp_path: Path):
    import optuna

    url = url_for(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    database = LeaderboardDB(url)
    names = set(inspect(database.engine).get_table_names())
    assert names >= PLAB_TABLES and "trials" in names
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2


# ------------------------------------------------------------------------------------------ writers


def test_campaign_is_reused_and_a_different_file_is_refused(db: LeaderboardDB):
    first = db.get_or_create_campaign("quick", "h1", "{}")
    assert db.get_or_create_campaign("quick", "h1", "{}").id == first.id
    with pytest.raises(ConfigError) as info:
        db.get_or_create_campaign("quick", "h2", "{}")
    assert str(info.value) == (f"campaign 'quick' already exists in {db.masked_url} with a different "
                               "campaign file; rename the campaign or use another --storage")
    assert db.campaign_names() == ["quick"]


def test_study_version_lineage(db: LeaderboardDB):
    camp = db.get_or_create_campaign("c", "h", "{}")

    def name(v: int) -> str:
        return f"c/digits/coarse/v{v}"

    v1 = db.get_or_create_study_version(camp.id, "digits", "coarse", 0, "fp1", '{"a": 1}', name)
    assert (v1.version, v1.parent_id, v1.optuna_study_name) == (1, None, "c/digits/coarse/v1")
    assert db.get_or_create_study_version(camp.id, "digits", "coarse", 0, "fp1", "{}", name).id == v1.id
    v2 = db.get_or_create_study_version(camp.id, "digits", "coarse", 0, "fp2", '{"a": 2}', name)
    assert (v2.version, v2.parent_id, v2.optuna_study_name) == (2, v1.id, "c/digits/coarse/v2")
    v3 = db.get_or_create_study_version(camp.id, "digits", "coarse", 0, "fp3", "{}", name)
    assert (v3.version, v3.parent_id) == (3, v2.id)
    other = db.get_or_create_study_version(camp.id, "digits", "fine", 1, "fp2", "{}", lambda v: f"fine/v{v}")
    assert (other.version, other.parent_id) == (1, None)  # lineage is per campaign/task/level
    assert [sv.version for sv in db.study_versions(camp.id, level="coarse")] == [1, 2, 3]


@pytest.mark.parametrize("upsert", ["dialect", "select then write"])
def test_record_run_is_idempotent_and_replaces_fields_and_events(db: LeaderboardDB, upsert: str,
                                                                  monkeypatch: pytest.MonkeyPatch):
    if upsert != "dialect":  # the path of a database without INSERT ... ON CONFLICT
        monkeypatch.setattr("principlelab.studies.db._run_upsert", lambda backend: None)
    b = Builder(db)
    sv = b.sv("digits", "coarse")
    base = {"campaign_id": b.campaign.id, "study_version_id": sv.id,
            "optuna_study_name": sv.optuna_study_name, "trial_number": 3, "task": "digits",
            "level": "coarse", "seed": 0, "recipe_key": "aaaaaa1111", **RECIPES["aaaaaa1111"]}
    first = db.record_run({**base, "status": "failed", "failure_reason": "stale trial"})
    events = [GrowthEvent(operation="add_units", layer=1, units=8, source_units=(1, 2), step=10, epoch=1,
                          slot="growth", principle="random", reason="plateau", loss_before=0.5,
                          loss_after=0.5, details={"init": "zero"}).to_dict(),
              GrowthEvent(operation="add_layer", layer=2, units=16, step=20, epoch=2).to_dict()]
    second = db.record_run({**base, "status": "complete", "test_accuracy": 0.9, "wall_s": 2.5}, events)
    assert second == first
    row = db.get_run(first)
    assert (row.status, row.failure_reason, row.test_accuracy, row.growth_event_count) == ("complete", None,
                                                                                          0.9, 2)
    stored = db.growth_events(first)
    assert [(e.operation, e.units, e.source_units, e.details) for e in stored] == [
        ("add_units", 8, [1, 2], {"init": "zero"}), ("add_layer", 16, [], {})]
    db.record_run({**base, "status": "complete", "test_accuracy": 0.8}, events[:1])
    assert len(db.growth_events(first)) == 1 and len(db.runs_for_study(sv.optuna_study_name)) == 1
    assert db.run_for_trial(sv.optuna_study_name, 3).test_accuracy == 0.8


def test_record_run_writes_nothing_when_an_event_fails(db: LeaderboardDB):
    b = Builder(db)
    sv = b.sv("digits", "coarse")
    good = GrowthEvent(operation="add_units", layer=1, units=4).to_dict()
    run = {"campaign_id": b.campaign.id, "study_version_id": sv.id, "optuna_study_name": sv.optuna_study_name,
           "trial_number": 0, "task": "digits", "level": "coarse", "seed": 0, "status": "complete",
           "recipe_key": "k", "test_accuracy": 0.9}
    with pytest.raises(ConfigError, match="growth event 1 has unknown fields"):
        db.record_run(run, [good, {**good, "bogus": 1}])
    with pytest.raises(StorageError, match="rejected a write") as info:  # NOT NULL fails in the database
        db.record_run(run, [good, {**good, "operation": None}])
    assert "\n" not in str(info.value)
    with db.session(write=False) as session:
        assert session.query(RunRow).count() == 0 and session.query(GrowthEventRow).count() == 0
    # a failed re-record keeps the previous row and its events intact
    run_id = db.record_run(run, [good])
    with pytest.raises(StorageError):
        db.record_run({**run, "test_accuracy": 0.1}, [good, {**good, "operation": None}])
    assert db.get_run(run_id).test_accuracy == 0.9 and len(db.growth_events(run_id)) == 1


def test_record_run_validates_its_input(db: LeaderboardDB):
    with pytest.raises(ConfigError, match="unknown run fields"):
        db.record_run({"nope": 1})
    with pytest.raises(ConfigError, match="missing required run fields"):
        db.record_run({"task": "digits"})
    b = Builder(db)
    with pytest.raises(ConfigError, match="status 'done' must be one of"):
        b.run("aaaaaa1111", 0, 0.9, run_status="done")


def test_nan_metrics_are_stored_as_null(db: LeaderboardDB):
    run_id = Builder(db).run("aaaaaa1111", 0, float("nan"), run_status="failed")
    assert db.get_run(run_id).test_accuracy is None


def test_record_promotion_once_only(db: LeaderboardDB, tmp_path: Path):
    b = Builder(db)
    coarse, fine = b.sv("digits", "coarse"), b.sv("digits", "fine")
    run_id = b.run("aaaaaa1111", 0, 0.9)
    assert db.record_promotion(coarse.id, fine.id, "aaaaaa1111", run_id, 0.9) is True
    assert db.record_promotion(coarse.id, fine.id, "aaaaaa1111", run_id, 0.95) is False
    assert db.record_promotion(coarse.id, fine.id, "aaaaaa2222", None, None) is True
    assert [p.recipe_key for p in db.promotions(to_study_version_id=fine.id)] == ["aaaaaa1111", "aaaaaa2222"]
    with pytest.raises(StorageError):  # a broken foreign key is an error, not "already promoted"
        db.record_promotion(coarse.id, 9999, "aaaaaa3333", None, None)

    results: list[bool] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        other = LeaderboardDB(db.url)  # each worker its own engine, as separate processes would
        barrier.wait()
        results.append(other.record_promotion(coarse.id, fine.id, "bbbbbb3333", None, 0.7))
        other.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]


def test_concurrent_writers_share_one_sqlite_file(db: LeaderboardDB):
    b = Builder(db)
    sv = b.sv("digits", "coarse")
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        other = LeaderboardDB(db.url)
        try:
            for i in range(15):
                other.record_run({"campaign_id": b.campaign.id, "study_version_id": sv.id,
                                  "optuna_study_name": sv.optuna_study_name, "trial_number": offset * 100 + i,
                                  "task": "digits", "level": "coarse", "seed": i, "status": "complete",
                                  "recipe_key": "k", "test_accuracy": 0.5},
                                 [GrowthEvent(operation="add_units", layer=1).to_dict()])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(db.runs_for_study(sv.optuna_study_name)) == 60


def test_writes_begin_immediate_reads_do_not(db: LeaderboardDB):
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: seen.append(statement))
    db.get_or_create_campaign("x", "h", "{}")
    assert "BEGIN IMMEDIATE" in seen
    seen.clear()
    db.campaign_names()
    assert "BEGIN" in seen and "BEGIN IMMEDIATE" not in seen
    seen.clear()
    Builder(db).run("aaaaaa1111", 0, 0.9)  # a run row's transaction (a connection's, not a session's) too
    inserts = [i for i, statement in enumerate(seen) if statement.startswith("INSERT INTO plab_runs")]
    assert len(inserts) == 1 and seen[inserts[0] - 1] == "BEGIN IMMEDIATE"


GROWN = GrowthEvent(operation="add_units:split", layer=1, units=4, slot="growth", principle="random").to_dict()
REWIRED = GrowthEvent(operation="rewire", layer=1, slot="connectivity", principle="set").to_dict()


def test_rewiring_is_not_counted_as_growth(db: LeaderboardDB):
    """``set`` records its prune-and-regrow as events (slot ``connectivity``); the growth count leaves them out."""
    recipe = make_recipe({"task": "digits", "connectivity": "set", "fidelity": {"epochs": 3, "data_fraction": 0.2},
                          "network": {"hidden": [16]}})
    result = Trainer(recipe, get_registry().instantiate(recipe),
                     load_task("digits", fidelity=recipe.fidelity, seed=0)).run()
    assert len(result.growth_events) == 2 and {e.slot for e in result.growth_events} == {"connectivity"}
    assert run_fields(result.to_dict())["growth_event_count"] == 0
    b = Builder(db)
    sv = b.sv("digits", "coarse")
    run_id = db.record_run({"campaign_id": b.campaign.id, "study_version_id": sv.id, "status": "complete",
                            "optuna_study_name": sv.optuna_study_name, "trial_number": 0, "task": "digits",
                            "level": "coarse", "seed": 0, "recipe_key": "aaaaaa1111", **RECIPES["aaaaaa1111"]},
                           [REWIRED, GROWN, REWIRED])
    assert db.get_run(run_id).growth_event_count == 1 and len(db.growth_events(run_id)) == 3


def test_run_fields_from_a_run_result_dict():
    result = {"test_accuracy": 0.9, "val_accuracy": 0.88, "test_loss": 0.3, "val_loss": 0.31, "params": 100,
              "macs": 10**12, "samples_seen": 5000, "wall_s": 1.5, "versions": {"principlelab": "0.1.0"},
              "growth_events": [GROWN, GROWN], "recipe": {"task": "digits", **{
                  slot: {"name": name, "config": {"a": 1}} for slot, name in RECIPES["aaaaaa1111"].items()}}}
    fields = run_fields(result)
    assert fields["growth"] == "random" and fields["growth_config"] == {"a": 1}
    assert fields["growth_event_count"] == 2 and fields["macs"] == 10**12
    assert set(fields) <= tablesmod.RUN_FIELDS


# ------------------------------------------------------------------------------------------ queries


def test_runs_are_ranked_best_first_with_all_columns(filled):
    db, values = filled
    rows = query(db, top=5)
    assert len(rows) == 5 and list(rows[0]) == list(result_columns("run"))
    assert rows[0]["test_accuracy"] == 0.95  # the one fine run
    assert rows[1]["test_accuracy"] == pytest.approx(max(v for vs in values.values() for v in vs))
    accs = [r["test_accuracy"] for r in query(db, top=0)]
    assert accs == sorted(accs, reverse=True) and len(accs) == 49  # complete runs only
    assert len(query(db, top=0, status=None)) == 52
    assert {r["status"] for r in query(db, top=0, status="failed")} == {"failed"}
    assert rows[0]["campaign"] == "camp"


def test_recipe_groups_equal_numpy(filled):
    db, values = filled
    rows = query(db, group_by="recipe", top=0, level="coarse")
    assert len(rows) == len(values)
    for row in rows:
        data = np.array(values[(row["recipe_key"], row["task"], row["level"])])
        assert row["count"] == len(data)
        assert row["mean"] == pytest.approx(data.mean(), abs=1e-12)
        assert row["std"] == pytest.approx(data.std(ddof=1), abs=1e-9)
        assert row["best"] == pytest.approx(data.max())
        assert row["params"] == pytest.approx(1000 + 3.5)
        assert row["growth"] == RECIPES[row["recipe_key"]]["growth"]
        assert row["config"]["key"] == row["recipe_key"]
    assert [r["mean"] for r in rows] == sorted((r["mean"] for r in rows), reverse=True)
    single = query(db, group_by="recipe", level="fine")
    assert len(single) == 1 and single[0]["std"] is None and single[0]["count"] == 1  # no spread over one run
    assert list(single[0]) == list(result_columns("recipe"))


def test_where_filters_and_unknown_principle(filled):
    db, _ = filled
    rows = query(db, where={"growth": "split"}, top=0)
    assert rows and {r["growth"] for r in rows} == {"split"}
    both = query(db, where={"trigger": "every_k", "connectivity": "dense"}, group_by="recipe", task="digits")
    assert {r["recipe_key"] for r in both} == {"aaaaaa1111", "aaaaaa2222"} and {r["task"] for r in both} == {
        "digits"}
    assert query(db, where={"growth": "split", "trigger": "never"}) == []
    with pytest.raises(UnknownNameError, match=r"no run in .* has growth principle 'nope'; "
                                               r"those with runs: none, random, s"):
        query(db, where={"growth": "nope"})
    with pytest.raises(UnknownNameError, match=r"no run in this leaderboard has task 'nope'; "
                                               r"those with runs: digits, mnist1d"):
        query(db, task="nope")
    with pytest.raises(UnknownNameError, match=r"no run in campaign 'camp' has fidelity 'Fine'; "
                                               r"those with runs: coarse"):
        query(db, campaign="camp", level="Fine")


def test_group_by_slot_equals_numpy(filled):
    db, values = filled
    rows = query(db, group_by="growth", task="mnist1d", top=0)
    assert [r["principle"] for r in rows] == ["split", "random", "none"]
    for row in rows:
        key = next(k for k, slots in RECIPES.items() if slots["growth"] == row["principle"])
        data = np.array(values[(key, "mnist1d", "coarse")])
        assert (row["count"], row["recipes"]) == (8, 1)
        assert row["mean"] == pytest.approx(data.mean()) and row["std"] == pytest.approx(data.std(ddof=1))
    trig = query(db, group_by="trigger", task="digits", level="coarse")
    every = next(r for r in trig if r["principle"] == "every_k")
    pooled = values[("aaaaaa1111", "digits", "coarse")] + values[("aaaaaa2222", "digits", "coarse")]
    assert every["count"] == 16 and every["recipes"] == 2
    assert every["std"] == pytest.approx(np.std(pooled, ddof=1))
    assert list(every) == list(result_columns("growth"))


def test_slot_groups_never_span_campaigns(filled):
    """Two campaigns may name different fidelities 'coarse'; without --campaign a slot's row mixed them."""
    db, values = filled
    other = Builder(db, name="other")
    for seed in range(3):
        other.run("aaaaaa1111", seed, 0.2, task="mnist1d")  # growth=random, at a much cheaper 'coarse'
    rows = query(db, group_by="growth", task="mnist1d", top=0)
    random_rows = {r["campaign"]: r for r in rows if r["principle"] == "random"}
    assert set(random_rows) == {"camp", "other"} and random_rows["other"]["count"] == 3
    assert random_rows["camp"]["mean"] == pytest.approx(np.mean(values[("aaaaaa1111", "mnist1d", "coarse")]))
    code, out, _ = invoke("leaderboard", "--storage", db.url, "--group-by", "growth", "--task", "mnist1d")
    assert code == 0 and "other" in out and "camp" in out


def test_sort_direction_follows_the_metric(filled):
    db, _ = filled
    losses = [r["test_loss"] for r in query(db, metric="test_loss", top=0)]
    assert losses == sorted(losses)
    params = [r["params"] for r in query(db, metric="params", top=0)]
    assert params == sorted(params)
    worst_first = [r["test_accuracy"] for r in query(db, top=0, descending=False)]
    assert worst_first == sorted(worst_first)
    means = [r["mean"] for r in query(db, group_by="recipe", metric="wall_s", top=0)]
    assert means == sorted(means)


def test_unknown_names_list_the_known_ones(filled):
    db, _ = filled
    with pytest.raises(UnknownNameError, match=r"unknown metric 'accuracy'; known: .*test_accuracy"):
        query(db, metric="accuracy")
    with pytest.raises(UnknownNameError, match=r"unknown slot 'grow'; known: .*growth"):
        query(db, where={"grow": "x"})
    with pytest.raises(UnknownNameError, match="unknown campaign 'nope'; known: camp"):
        query(db, campaign="nope")
    with pytest.raises(UnknownNameError, match="unknown group-by 'seed'"):
        query(db, group_by="seed")


# ------------------------------------------------------------------------------------------ compare


def test_compare_finds_a_clearly_better_principle(filled):
    db, values = filled
    res = compare(db, campaign="camp", a="growth=random", b="growth=split", task="digits")
    assert res["n_pairs"] == 8 and res["significant"] is True and res["better"] == "b"
    a = values[("aaaaaa1111", "digits", "coarse")]
    b = values[("aaaaaa2222", "digits", "coarse")]
    expected = stats.ttest_rel(b, a)
    assert res["t"] == pytest.approx(expected.statistic) and res["p_t"] == pytest.approx(expected.pvalue)
    assert res["p_w"] == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert res["mean_diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert res["verdict"].startswith("B (growth=split) is better than A (growth=random)")
    assert "paired t-test" in res["verdict"] and "\n" not in res["verdict"]
    # the same by recipe-key prefixes, over both tasks (16 pairs); lower-is-better metrics flip "better"
    by_key = compare(db, campaign="camp", a="aaaaaa1", b="aaaaaa2")
    assert (by_key["a"], by_key["b"], by_key["n_pairs"]) == ("aaaaaa1111", "aaaaaa2222", 16)
    loss = compare(db, campaign="camp", a="aaaaaa1", b="aaaaaa2", metric="test_loss")
    assert loss["significant"] and loss["better"] == "b" and loss["mean_diff"] < 0


def test_compare_identical_data_is_not_significant(db: LeaderboardDB):
    b = Builder(db)
    for seed in range(8):
        for key in ("aaaaaa1111", "aaaaaa2222"):  # two recipes, the same accuracy at every seed
            b.run(key, seed, 0.8 + 0.01 * seed)
    b.run("aaaaaa2222", 0, 0.95, level="fine")
    res = compare(db, campaign="camp", a="aaaaaa1111", b="aaaaaa2222")
    # 8 coarse cells; the one fine cell is not mixed in (a level with fewer than 2 pairs is passed over)
    assert res["n_pairs"] == 8 and res["level"] == "coarse" and res["significant"] is False
    assert res["better"] is None and res["shared_runs"] == 0
    assert res["p_t"] is None and res["p"] is None and res["w"] is None and res["mean_diff"] == 0
    assert res["verdict"].startswith("no significant difference") and "all differences zero" in res["verdict"]


def test_compare_refuses_the_same_runs_and_counts_shared_ones(filled):
    db, _ = filled
    with pytest.raises(ConfigError, match="select the same 32 runs at fidelity 'coarse'"):
        compare(db, campaign="camp", a="trigger=every_k", b="connectivity=dense")  # every coarse run, twice
    res = compare(db, campaign="camp", a="trigger=every_k", b="aaaaaa1111", task="digits")  # B is part of A
    assert res["shared_runs"] == res["runs_b"] == 8 and res["runs_a"] == 16
    code, _, err = invoke("compare", "--storage", db.url, "--campaign", "camp", "trigger=every_k", "aaaaaa1111")
    assert code == 0 and "runs are on both sides" in err


@pytest.mark.parametrize(("pairs", "p_sign", "significant"), [(3, 0.25, False), (6, 0.03125, True)])
def test_compare_equal_differences_use_the_sign_test(db: LeaderboardDB, pairs: int, p_sign: float,
                                                     significant: bool):
    """Accuracies move in steps of one test sample: B one sample better at every seed has no variance,
    which made the t-test report t=-1e14, p=1e-28 on 3 pairs."""
    b = Builder(db)
    for seed in range(pairs):
        correct = 250 + seed
        b.run("aaaaaa1111", seed, correct / 270)
        b.run("aaaaaa2222", seed, (correct + 1) / 270)
    res = compare(db, campaign="camp", a="aaaaaa1111", b="aaaaaa2222")
    assert res["test"] == "sign test" and res["p_sign"] == pytest.approx(p_sign) and res["p"] == res["p_sign"]
    assert res["t"] is None and res["p_t"] is None
    assert res["significant"] is significant and res["better"] == ("b" if significant else None)
    assert f"sign test {'(' if significant else ''}p={p_sign:.3g}; every difference is +0.003704, so the t-test has " \
        "no variance" in res["verdict"]
    assert res["mean_diff"] == pytest.approx(1 / 270)


def test_compare_pairs_within_one_level(db: LeaderboardDB):
    """Mixing a coarse cell into fine pairs reversed a verdict; a comparison is made at one level."""
    b = Builder(db)
    for seed, (acc_a, acc_b) in enumerate([(0.90, 0.92), (0.91, 0.93), (0.92, 0.935)]):
        b.run("aaaaaa1111", seed, acc_a, level="fine")
        b.run("aaaaaa2222", seed, acc_b, level="fine")
    for seed in (0, 1):  # coarse: A far ahead (other data, other epochs)
        b.run("aaaaaa1111", seed, 0.9, level="coarse")
        b.run("aaaaaa2222", seed, 0.5, level="coarse")
    res = compare(db, campaign="camp", a="growth=random", b="growth=split")
    assert (res["level"], res["n_pairs"]) == ("fine", 3) and {p["level"] for p in res["pairs"]} == {"fine"}
    assert res["mean_diff"] > 0 and "over 3 paired seeds at fidelity 'fine'" in res["verdict"]
    assert (res["runs_a"], res["runs_b"]) == (3, 3)  # the compared level's runs, not the coarse ones too
    coarse = compare(db, campaign="camp", a="growth=random", b="growth=split", level="coarse")
    assert (coarse["level"], coarse["n_pairs"]) == ("coarse", 2) and coarse["mean_diff"] < 0


@pytest.fixture
def two_versions(db: LeaderboardDB) -> tuple[LeaderboardDB, dict[int, int]]:
    """coarse v1 and v2 (another fingerprint: a changed space or METRICS_VERSION), fine v1 only.
    Returns run id -> study version number."""
    b = Builder(db)
    version: dict[int, int] = {}
    for seed in range(3):
        version[b.run("aaaaaa1111", seed, 0.80 + 0.01 * seed, params=500)] = 1  # v1: params counted the old way
        version[b.run("aaaaaa2222", seed, 0.70 + 0.01 * seed)] = 1
    for seed in range(3):
        version[b.run("aaaaaa1111", seed, 0.60 + 0.01 * seed, params=400, fingerprint="fp2")] = 2
        version[b.run("bbbbbb3333", seed, 0.75, fingerprint="fp2")] = 2
    version[b.run("aaaaaa1111", 0, 0.90, level="fine")] = 1
    return db, version


def test_study_version_filter_keeps_one_version_per_level(two_versions):
    db, version = two_versions
    rows = query(db, campaign="camp", top=0)
    assert {r["id"]: r["version"] for r in rows} == version
    latest = query(db, campaign="camp", top=0, study_version="latest")
    # coarse's newest is v2; fine has only v1, which is its newest
    assert sorted(r["id"] for r in latest) == sorted(
        i for i, v in version.items() if v == 2 or i == max(version))
    assert {(r["level"], r["version"]) for r in latest} == {("coarse", 2), ("fine", 1)}
    assert sorted(r["id"] for r in query(db, campaign="camp", top=0, study_version=1)) == sorted(
        i for i, v in version.items() if v == 1)
    assert [r["id"] for r in query(db, campaign="camp", top=0, study_version=" 2 ")] == [
        r["id"] for r in query(db, campaign="camp", top=0, level="coarse", study_version="latest")]
    with pytest.raises(UnknownNameError, match=r"no run in campaign 'camp' has study version '3'.*: 1, 2"):
        query(db, campaign="camp", study_version=3)
    for bad in ("0", "newest", "-1", "1.5"):
        with pytest.raises(ConfigError, match="study version must be 'latest' or a version number >= 1"):
            query(db, campaign="camp", study_version=bad)


def test_grouped_rows_say_how_many_study_versions_they_pool(two_versions):
    db, _ = two_versions
    pooled = {r["recipe_key"]: r for r in query(db, campaign="camp", group_by="recipe", level="coarse", top=0)}
    a = pooled["aaaaaa1111"]
    assert (a["count"], a["versions"]) == (6, 2)
    assert a["mean"] == pytest.approx(np.mean([0.80, 0.81, 0.82, 0.60, 0.61, 0.62]))
    assert a["params"] == pytest.approx(450)  # two meanings of params averaged: what the note warns about
    assert (pooled["aaaaaa2222"]["versions"], pooled["bbbbbb3333"]["versions"]) == (1, 1)
    newest = {r["recipe_key"]: r for r in query(db, campaign="camp", group_by="recipe", level="coarse", top=0,
                                                study_version="latest")}
    assert set(newest) == {"aaaaaa1111", "bbbbbb3333"}
    assert (newest["aaaaaa1111"]["count"], newest["aaaaaa1111"]["versions"]) == (3, 1)
    assert newest["aaaaaa1111"]["mean"] == pytest.approx(0.61) and newest["aaaaaa1111"]["params"] == 400
    by_growth = {r["principle"]: r for r in query(db, campaign="camp", group_by="growth", level="coarse")}
    assert (by_growth["random"]["versions"], by_growth["random"]["count"]) == (2, 6)


def test_compare_names_the_study_versions_it_pairs(two_versions):
    db, _ = two_versions
    pooled = compare(db, campaign="camp", a="aaaaaa1111", b="aaaaaa2222", level="coarse")
    assert pooled["study_versions"] == [1, 2] and pooled["n_pairs"] == 3
    # each cell's A is the mean over both versions' runs of that seed
    assert [p["a"] for p in pooled["pairs"]] == pytest.approx([0.70, 0.71, 0.72])
    v1 = compare(db, campaign="camp", a="aaaaaa1111", b="aaaaaa2222", level="coarse", study_version=1)
    assert v1["study_versions"] == [1] and [p["a"] for p in v1["pairs"]] == pytest.approx([0.80, 0.81, 0.82])
    with pytest.raises(ConfigError, match=r"only 0 .* cell"):  # B has no run in the newest version
        compare(db, campaign="camp", a="aaaaaa1111", b="aaaaaa2222", level="coarse", study_version="latest")


def test_compare_noise_is_not_significant(db: LeaderboardDB):
    b = Builder(db)
    rng = np.random.default_rng(1)
    for seed in range(8):
        b.run("aaaaaa1111", seed, float(0.8 + rng.normal(0, 0.01)))
        b.run("aaaaaa2222", seed, float(0.8 + rng.normal(0, 0.01)))
    res = compare(db, campaign="camp", a="growth=random", b="growth=split")
    assert res["n_pairs"] == 8 and res["p_t"] > 0.05 and not res["significant"]


def test_compare_needs_two_pairs_and_a_clear_side(filled):
    db, _ = filled
    with pytest.raises(ConfigError, match=r"only 0 \(task, fidelity, seed\) cell\(s\).*needs at least 2"):
        compare(db, campaign="camp", a="growth=random", b="growth=split", level="fine")
    with pytest.raises(ConfigError, match="matches several recipe keys"):
        compare(db, campaign="camp", a="aaaaaa", b="growth=split")
    with pytest.raises(ConfigError, match="neither slot=name"):
        compare(db, campaign="camp", a="aaa", b="growth=split")
    with pytest.raises(ConfigError, match="no recipe key starting with 'cccccc'"):
        compare(db, campaign="camp", a="cccccc", b="growth=split")
    with pytest.raises(UnknownNameError, match="unknown slot"):
        compare(db, campaign="camp", a="grow=x", b="growth=split")
    with pytest.raises(UnknownNameError, match="unknown campaign"):
        compare(db, campaign="other", a="growth=random", b="growth=split")
    # a misspelled name is an unknown name listing the known ones, not "0 cells"
    with pytest.raises(UnknownNameError, match=r"no run in campaign 'camp' has growth principle 'splt'; "
                                               r"those with runs: none, random, split"):
        compare(db, campaign="camp", a="growth=random", b="growth=splt")
    with pytest.raises(UnknownNameError, match=r"no run in campaign 'camp' has fidelity 'fne'; "
                                               r"those with runs: coarse"):
        compare(db, campaign="camp", a="growth=random", b="growth=split", level="fne")
    with pytest.raises(UnknownNameError, match=r"no run in campaign 'camp' has task 'digit'; those with runs: digits"):
        compare(db, campaign="camp", a="growth=random", b="growth=split", task="digit")
    with pytest.raises(ConfigError, match=r"A and B are the same \(aaaaaa1111\)"):
        compare(db, campaign="camp", a="aaaaaa1", b="aaaaaa1111")


def test_status_per_study_version(filled):
    db, _ = filled
    report = status(db, "camp")
    coarse, coarse_mnist, fine = report["study_versions"]
    assert (coarse["task"], coarse["level"], coarse["version"]) == ("digits", "coarse", 1)
    assert (coarse_mnist["task"], fine["level"]) == ("mnist1d", "fine")
    assert coarse_mnist["counts"] == {"complete": 24, "pruned": 0, "failed": 0, "rejected": 0}
    assert coarse["counts"] == {"complete": 24, "pruned": 1, "failed": 2, "rejected": 0} and coarse["total"] == 27
    assert coarse["failures"] == [{"reason": "loss became NaN", "count": 2}]
    assert coarse["best"]["recipe_key"] == "aaaaaa2222" and coarse["best"]["growth"] == "split"
    assert fine["best"]["value"] == 0.95
    assert report["totals"] == {"complete": 49, "pruned": 1, "failed": 2, "rejected": 0, "total": 52}
    with pytest.raises(UnknownNameError):
        status(db, "nope")


def test_status_sums_each_failure_reason_over_the_study_versions(filled):
    """The campaign's failure warning ranked reasons per study version and never summed them: a reason
    failing 2 runs at each of two levels read '2x'."""
    db, _ = filled
    b = Builder(db)
    b.run("aaaaaa1111", 1, None, run_status="failed", failure_reason="loss became NaN", level="fine")
    b.run("aaaaaa1111", 2, None, run_status="failed", failure_reason="loss became NaN", task="mnist1d")
    b.run("aaaaaa2222", 3, None, run_status="failed", failure_reason="boom", level="fine")
    assert status(db, "camp")["failure_reasons"] == [{"reason": "loss became NaN", "count": 4},
                                                     {"reason": "boom", "count": 1}]


# ------------------------------------------------------------------------------------- storage errors


def test_unreachable_postgres_is_one_line_with_the_password_masked():
    with pytest.raises(StorageError) as info:
        LeaderboardDB("postgresql+psycopg://nobody:s3cret@127.0.0.1:1/none")
    message = str(info.value)
    assert "\n" not in message and "s3cret" not in message
    assert "postgresql+psycopg://nobody:***@127.0.0.1:1/none" in message and "reachable" in message


def test_missing_driver_bad_url_and_bad_path_are_one_line():
    with pytest.raises(StorageError, match="no database driver for 'postgresql\\+nodriver'") as info:
        LeaderboardDB("postgresql+nodriver://u:pw@host/db")
    assert "pw" not in str(info.value).replace("principlelab[postgres]", "")
    with pytest.raises(StorageError, match="invalid storage URL"):
        LeaderboardDB("not a url")
    with pytest.raises(StorageError, match=r"cannot open database .*check that /nonexistent/dir ") as info:
        LeaderboardDB("sqlite:////nonexistent/dir/x.db")
    assert "\n" not in str(info.value)


def test_reading_a_missing_sqlite_file_errors_and_creates_nothing(tmp_path: Path, monkeypatch):
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match=f"no principlelab database at {path}; run a campaign first"):
        LeaderboardDB(f"sqlite:///{path}", create=False)
    assert not path.exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    code, _, err = invoke("leaderboard")
    assert code == 2 and err.startswith("plab: error: no principlelab database at ") and err.count("\n") == 1
    assert not (tmp_path / "principlelab.db").exists()
    code, _, err = invoke("compare", "--campaign", "c", "growth=a", "growth=b")
    assert code == 2 and "no principlelab database" in err
    assert not (tmp_path / "principlelab.db").exists()


def test_read_commands_work_in_a_read_only_folder(tmp_path: Path, filled, monkeypatch: pytest.MonkeyPatch):
    """A read opened the file as a writer would: SQLite creates -shm/-journal files beside it, and in a
    read-only folder status, leaderboard and report failed with 'unable to open database file'."""
    import os

    db, _ = filled
    path, expected = db.sqlite_file, query(db, top=0)
    db.close()
    folder = sorted(p.name for p in path.parent.iterdir())
    writable = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else writable(p, mode))
    with LeaderboardDB(f"sqlite:///{path}", create=False) as read:  # (root can write anywhere: say it cannot)
        assert read.engine.url.database.startswith("file:") and query(read, top=0) == expected
    assert sorted(p.name for p in path.parent.iterdir()) == folder  # no lock file created beside it
    code, out, err = invoke("leaderboard", "--storage", f"sqlite:///{path}", "--json", "--top", "0")
    assert code == 0 and len(json.loads(out)) == len(expected), err


def test_reading_a_database_without_plab_tables_errors(tmp_path: Path):
    path = tmp_path / "foreign.db"
    sqlite3.connect(path).execute("CREATE TABLE other (x INTEGER)").connection.close()
    with pytest.raises(StorageError, match="no principlelab tables in"):
        LeaderboardDB(f"sqlite:///{path}", create=False)


def test_default_storage_url_precedence(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PRINCIPLELAB_STORAGE", raising=False)
    assert default_storage_url(None) == "sqlite:///principlelab.db"
    monkeypatch.setenv("PRINCIPLELAB_STORAGE", "sqlite:///env.db")
    assert default_storage_url(None) == "sqlite:///env.db"
    assert default_storage_url(None, "sqlite:///camp.db") == "sqlite:///camp.db"
    assert default_storage_url("sqlite:///x.db", "sqlite:///camp.db") == "sqlite:///x.db"


# ----------------------------------------------------------------------------------------------- CLI


def invoke(*args: str) -> tuple[int, str, str]:
    group = _Group(name="plab")
    group.add_command(leaderboard_cmd)
    group.add_command(compare_cmd)
    result = CliRunner().invoke(group, list(args), env={"COLUMNS": "240"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_study_version_column_note_and_filter(two_versions):
    db, _ = two_versions
    url = db.url
    code, out, err = invoke("leaderboard", "--storage", url, "--group-by", "recipe", "--fidelity", "coarse")
    assert code == 0 and "versions" in out
    assert "note: 1 of these rows pool runs of several study versions" in err and "--study-version latest" in err
    code, out, err = invoke("leaderboard", "--storage", url, "--group-by", "recipe", "--fidelity", "coarse",
                            "--study-version", "latest")
    assert code == 0 and "versions" not in out and "several study versions" not in err
    code, out, _ = invoke("leaderboard", "--storage", url, "--fidelity", "coarse")
    assert code == 0 and "version" in out  # runs of two versions: which is which
    code, out, _ = invoke("leaderboard", "--storage", url, "--fidelity", "coarse", "--study-version", "2")
    assert code == 0 and "version" not in out
    code, _, err = invoke("leaderboard", "--storage", url, "--study-version", "9")
    assert code != 0 and "study version '9'" in err and "1, 2" in err
    code, out, err = invoke("compare", "--storage", url, "--campaign", "camp", "aaaaaa1111", "aaaaaa2222",
                            "--fidelity", "coarse")
    assert code == 0 and "come from study versions 1, 2 of level 'coarse'" in err
    code, out, err = invoke("compare", "--storage", url, "--campaign", "camp", "aaaaaa1111", "aaaaaa2222",
                            "--fidelity", "coarse", "--study-version", "1")
    assert code == 0 and "study versions" not in err


def test_cli_leaderboard_json_csv_and_table(filled):
    db, _ = filled
    code, out, err = invoke("leaderboard", "--storage", db.url, "--json", "--top", "3")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 3 and list(rows[0]) == list(result_columns("run"))
    code, out, _ = invoke("leaderboard", "--storage", db.url, "--group-by", "recipe", "--json",
                          "--fidelity", "coarse", "--campaign", "camp")
    grouped = json.loads(out)
    assert len(grouped) == 6 and {"mean", "std", "count", "config", "recipe_key"} <= set(grouped[0])
    code, out, _ = invoke("leaderboard", "--storage", db.url, "--group-by", "growth", "--csv",
                          "--where", "trigger=every_k", "--task", "digits", "--fidelity", "coarse")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and tuple(table[0]) == result_columns("growth")
    assert {r["principle"] for r in table} == {"random", "split"} and table[0]["count"] == "8"
    code, out, _ = invoke("leaderboard", "--storage", db.url, "--group-by", "recipe", "--csv", "--top", "2")
    table = list(csv.DictReader(io.StringIO(out)))
    assert len(table) == 2 and json.loads(table[0]["config"])["key"] == table[0]["recipe_key"]
    code, out, _ = invoke("leaderboard", "--storage", db.url, "--group-by", "recipe", "--metric", "test_loss")
    assert code == 0 and "±" in out and "split" in out
    code, out, _ = invoke("leaderboard", "--storage", db.url)
    assert code == 0 and "test_accuracy" in out
    code, out, _ = invoke("leaderboard", "--storage", db.url, "--csv", "--where", "growth=split",
                          "--where", "trigger=never")
    assert code == 0 and out.strip() == ",".join(result_columns("run"))


def test_cli_leaderboard_errors_are_one_line(filled):
    db, _ = filled
    for args, expected in [(["--metric", "acc"], "unknown metric 'acc'"),
                           (["--where", "growth"], "--where 'growth' must look like slot=name"),
                           (["--where", "grow=x"], "unknown slot 'grow'"),
                           (["--campaign", "zzz"], "unknown campaign 'zzz'; known: camp"),
                           (["--json", "--csv"], "--json and --csv exclude each other")]:
        code, _, err = invoke("leaderboard", "--storage", db.url, *args)
        assert code == 2 and err.startswith("plab: error: ") and expected in err and err.count("\n") == 1
    code, _, err = invoke("leaderboard", "--storage", "postgresql+psycopg://u:topsecret@127.0.0.1:1/x")
    assert code == 2 and "topsecret" not in err and "***" in err and err.count("\n") == 1


def test_cli_compare(filled):
    db, _ = filled
    code, out, err = invoke("compare", "--storage", db.url, "--campaign", "camp", "growth=random",
                            "growth=split", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["significant"] and res["n_pairs"] == 16 and res["better"] == "b"
    code, out, _ = invoke("compare", "--storage", db.url, "--campaign", "camp", "aaaaaa1", "aaaaaa2")
    assert code == 0 and "better than" in out and "paired t-test" in out
    code, _, err = invoke("compare", "--storage", db.url, "--campaign", "camp", "growth=random",
                          "growth=split", "--fidelity", "fine")
    assert code == 2 and "only 0" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ postgres

PG_URL = os.environ.get("PRINCIPLELAB_TEST_POSTGRES_URL")


@pytest.fixture
def pg_db() -> LeaderboardDB:
    if not PG_URL:
        pytest.skip("set PRINCIPLELAB_TEST_POSTGRES_URL to a scratch PostgreSQL database")
    from principlelab.studies.db import Base

    LeaderboardDB(PG_URL).close()
    scratch = LeaderboardDB(PG_URL)
    Base.metadata.drop_all(scratch.engine)
    scratch.close()
    database = LeaderboardDB(PG_URL)
    yield database
    Base.metadata.drop_all(database.engine)
    database.close()


@pytest.mark.postgres
def test_postgres_writers_queries_and_races(pg_db: LeaderboardDB):
    db = pg_db
    assert db.schema_version == SCHEMA_VERSION
    b = Builder(db)
    rng = np.random.default_rng(0)
    values: dict[str, list[float]] = {}
    for key, mean in (("aaaaaa1111", 0.8), ("aaaaaa2222", 0.9)):
        for seed in range(8):
            acc = float(mean + rng.normal(0, 0.01))
            b.run(key, seed, acc, events=[GrowthEvent(operation="add_units", layer=1).to_dict()])
            values.setdefault(key, []).append(acc)
    rows = query(db, group_by="recipe", campaign="camp")
    assert [r["recipe_key"] for r in rows] == ["aaaaaa2222", "aaaaaa1111"]
    for row in rows:
        assert row["mean"] == pytest.approx(np.mean(values[row["recipe_key"]]))
        assert row["std"] == pytest.approx(np.std(values[row["recipe_key"]], ddof=1))
    assert query(db, group_by="growth")[0]["principle"] == "split"
    res = compare(db, campaign="camp", a="aaaaaa1", b="growth=split")
    assert res["significant"] and res["n_pairs"] == 8
    sv = b.sv("digits", "coarse")
    run = {"campaign_id": b.campaign.id, "study_version_id": sv.id, "optuna_study_name": sv.optuna_study_name,
           "trial_number": 0, "task": "digits", "level": "coarse", "seed": 0, "status": "failed",
           "recipe_key": "aaaaaa1111"}
    with pytest.raises(StorageError):
        db.record_run(run, [{"operation": None, "layer": 1}])
    assert db.run_for_trial(sv.optuna_study_name, 0).status == "complete"
    db.record_run(run)
    assert db.run_for_trial(sv.optuna_study_name, 0).status == "failed"
    assert db.growth_events(db.run_for_trial(sv.optuna_study_name, 0).id) == []
    fine = b.sv("digits", "fine")
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        other = LeaderboardDB(PG_URL)
        barrier.wait()
        results.append(other.record_promotion(sv.id, fine.id, "aaaaaa2222", None, 0.9))
        other.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    assert status(db, "camp")["totals"]["total"] == 16
    with pytest.raises(ConfigError, match="already exists"):
        db.get_or_create_campaign("camp", "other-hash", "{}")


@pytest.mark.postgres
def test_a_pooled_connection_the_server_closed_is_replaced(pg_url: str, monkeypatch: pytest.MonkeyPatch):
    """No ``pool_pre_ping`` (a round trip before every write): a connection idle for ``PING_IDLE_S`` is
    pinged before reuse, and one the server closed meanwhile is replaced."""
    db = LeaderboardDB(pg_url)
    b = Builder(db)
    b.run("aaaaaa1111", 0, 0.8)
    monkeypatch.setattr(journal_sql, "PING_IDLE_S", 0.0)  # every reuse counts as idle
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # the server ends every other session of the database: the pooled one too
        assert conn.execute(text("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
    admin.dispose()
    b.run("aaaaaa1111", 1, 0.8)
    assert len(db.runs_for_study(b.sv("digits", "coarse").optuna_study_name)) == 2
    db.close()


@pytest.mark.postgres
def test_a_run_row_without_growth_events_is_one_statement_on_postgresql(pg_url: str):
    """No BEGIN, no COMMIT, no separate DELETE: one statement upserts the row and drops the events of an
    earlier record of the trial; a failing one writes nothing."""
    db = LeaderboardDB(pg_url)
    b = Builder(db)
    sv = b.sv("digits", "coarse")
    run = {"campaign_id": b.campaign.id, "study_version_id": sv.id, "optuna_study_name": sv.optuna_study_name,
           "trial_number": 0, "task": "digits", "level": "coarse", "seed": 0, "status": "pruned",
           "recipe_key": "k", "val_accuracy": 0.5}
    run_id = db.record_run(run, [GROWN, REWIRED])
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda conn, cursor, statement, *args: seen.append(statement))
    assert db.record_run({**run, "status": "complete", "val_accuracy": 0.9}) == run_id
    assert len(seen) == 1 and seen[0].startswith("WITH run AS")
    assert db.get_run(run_id).status == "complete" and db.growth_events(run_id) == []
    assert db.record_run({**run, "trial_number": 1}) != run_id  # a new trial: a new row
    with pytest.raises(StorageError):
        db.record_run({**run, "trial_number": 2, "study_version_id": 10**6})  # no such study version
    assert [r.trial_number for r in db.runs_for_study(sv.optuna_study_name)] == [0, 1]
    db.close()


def test_a_recipe_in_two_campaigns_is_two_rows(db: LeaderboardDB):
    """Two campaigns' levels of one name need not be the same fidelity: never average across them."""
    one, two = Builder(db, "one"), Builder(db, "two")
    for seed in range(3):
        one.run("aaaaaa1111", seed, 0.9)
        two.run("aaaaaa1111", seed, 0.5)
    rows = query(db, group_by="recipe", top=0)
    assert sorted((r["campaign"], r["count"], r["mean"]) for r in rows) == [("one", 3, 0.9), ("two", 3, 0.5)]


def test_the_table_has_one_params_column_and_one_notation_for_macs(db: LeaderboardDB):
    from rich.console import Console

    from principlelab.cli.leaderboard_cmd import leaderboard_table

    b = Builder(db)
    b.run("aaaaaa1111", 0, 0.9, macs=4_581_252)
    b.run("aaaaaa2222", 0, 0.8, macs=1_635_000_000)
    console = Console(width=200, record=True)
    console.print(leaderboard_table(query(db, group_by="recipe", metric="params"), "recipe", "params"))
    text = console.export_text()
    assert text.count("params") == 2  # the title and the metric column: no second params column
    assert "1000 " in text and "± 0" not in text and "4.581e+06" in text and "1.635e+09" in text


def test_ranking_by_a_loss_warns_when_the_losses_may_differ(filled):
    """All 'filled' recipes are backprop + sequential (one loss); a capsule run's margin loss is another."""
    db, _ = filled
    code, out, err = invoke("leaderboard", "--storage", db.url, "--metric", "test_loss", "--group-by", "recipe")
    assert code == 0 and "note:" not in err
    code, _, err = invoke("leaderboard", "--storage", db.url, "--metric", "test_loss", "--group-by", "growth")
    assert code == 0 and "note: test_loss is each run's own loss" in err  # a slot's rows mix recipes
    Builder(db).run("aaaaaa1111", 20, 0.9, composition="capsule_routing", recipe_key="cccccc4444")
    code, out, err = invoke("leaderboard", "--storage", db.url, "--metric", "test_loss", "--json")
    assert code == 0 and "margin loss" in err and json.loads(out)  # stdout stays machine-readable
    code, _, err = invoke("leaderboard", "--storage", db.url, "--metric", "test_accuracy")
    assert code == 0 and "note:" not in err


def test_equal_means_tie_whatever_their_rounding(db: LeaderboardDB):
    """Two recipes with the same mean accuracy (21 of 51 samples) are a tie, ranked by their number of runs, then
    key. The average of 21/51, 25/51 and 17/51 is 1 ulp below 21/51 in floating point, so the recipe of one run
    came first although the other, tied, has three."""
    b = Builder(db)
    for seed, correct in enumerate((21, 25, 17)):
        b.run("aaaaaa2222", seed, correct / 51)
    b.run("bbbbbb3333", 0, 21 / 51)
    assert [(r["recipe_key"], r["count"]) for r in query(db, group_by="recipe", top=0)] == [
        ("aaaaaa2222", 3), ("bbbbbb3333", 1)]
    assert [r["principle"] for r in query(db, group_by="growth", top=0)] == ["split", "none"]
    assert [r["recipe_key"] for r in query(db, group_by="recipe", metric="test_loss", top=0)] == [
        "aaaaaa2222", "bbbbbb3333"]


def check_stds_of_tiny_spreads(db: LeaderboardDB) -> None:
    """The std of values far from zero with a tiny spread is exact, not what cancellation leaves of the sums (MACs
    of 1e10 + {0, 1, 2} gave 181); identical values give 0; an ordinary spread is numpy's."""
    b = Builder(db)
    accuracies = [0.91, 0.93, 0.96]
    for seed, acc in enumerate(accuracies):  # MACs 1e10 + seed (the builder's)
        b.run("aaaaaa1111", seed, acc)
    for _ in range(3):
        b.run("aaaaaa2222", 7, 0.5)  # seed 7 each time: the same MACs and accuracy
    b.run("bbbbbb3333", 0, 0.7, macs=2 * 10**12, params=10**9)
    b.run("bbbbbb3333", 1, 0.7, macs=2 * 10**12 + 3, params=10**9 + 3)
    by_key = {r["recipe_key"]: r for r in query(db, group_by="recipe", metric="macs", top=0)}
    assert by_key["aaaaaa1111"]["std"] == pytest.approx(1.0, rel=1e-12)
    assert by_key["aaaaaa2222"]["std"] == 0.0
    assert by_key["bbbbbb3333"]["std"] == pytest.approx(np.std([0, 3], ddof=1), rel=1e-12)
    by_growth = {r["principle"]: r for r in query(db, group_by="growth", metric="params", top=0)}
    assert by_growth["random"]["std"] == pytest.approx(1.0, rel=1e-12)
    assert by_growth["none"]["std"] == pytest.approx(np.std([0, 3], ddof=1), rel=1e-12)
    by_key = {r["recipe_key"]: r for r in query(db, group_by="recipe", metric="test_accuracy", top=0)}
    assert by_key["aaaaaa1111"]["std"] == pytest.approx(np.std(accuracies, ddof=1), rel=1e-9)
    assert by_key["aaaaaa2222"]["std"] == 0.0


def test_stds_of_tiny_spreads_are_exact(db: LeaderboardDB):
    check_stds_of_tiny_spreads(db)


@pytest.mark.postgres
def test_stds_of_tiny_spreads_are_exact_on_postgres(pg_db: LeaderboardDB):
    check_stds_of_tiny_spreads(pg_db)
