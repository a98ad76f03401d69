"""A campaign pins its ``file:`` tasks' data (:func:`principlelab.core.tasks.pin_file_task`): every trial
trains on the bytes whose SHA-256 the campaign stored, whatever happens to the file during the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from principlelab.core.tasks import FILE_PREFIX, load_task, pin_file_task
from principlelab.core.trainer import Trainer
from principlelab.errors import ConfigError
from principlelab.studies.db import LeaderboardDB
from test_campaign import _save_digits, campaign_toml, run_campaign, runs_by_level, write


def outcomes(url: str) -> list[tuple[Any, ...]]:
    """Each run's level, trial, recipe and numbers (not its wall time)."""
    runs = runs_by_level(LeaderboardDB(url, create=False), "data")
    return sorted((level, r.trial_number, r.seed, r.status, r.recipe_key, r.test_accuracy, r.val_loss, r.params)
                  for level, rows in runs.items() for r in rows)


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_data_file_changed_while_the_campaign_runs_changes_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    change: str):
    """The same campaign twice: once with the file left alone, once with it replaced by other data (5
    classes of digits instead of 10), or deleted, while the second coarse trial trains. Every run of
    both, coarse and fine, is the same: the trials after the change still train on the data read at
    the start. Before pinning, later trials loaded the new file."""
    monkeypatch.chdir(tmp_path)
    _save_digits(tmp_path / "data.npz", classes=10)
    text = campaign_toml("data", trials=4, pruner="none", k=2, seeds=2, coarse_epochs=1, fine_epochs=1).replace(
        'tasks = ["digits"]', 'tasks = ["file:data.npz"]')
    path = write(tmp_path, text)
    run_campaign(path, "--storage", f"sqlite:///{tmp_path / 'reference.db'}")
    reference = outcomes(f"sqlite:///{tmp_path / 'reference.db'}")
    assert len(reference) == 4 + 2 * 2 and all(run[3] == "complete" for run in reference)

    train, calls = Trainer.run, {"n": 0}

    def changing_the_file(self: Trainer) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            if change == "replaced":
                _save_digits(tmp_path / "data.npz", classes=5)
            else:
                (tmp_path / "data.npz").unlink()
        return train(self)

    monkeypatch.setattr(Trainer, "run", changing_the_file)
    run_campaign(path, "--storage", f"sqlite:///{tmp_path / 'changed.db'}")
    assert calls["n"] == 8
    assert outcomes(f"sqlite:///{tmp_path / 'changed.db'}") == reference


def test_a_pin_serves_the_bytes_read_until_its_last_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    name = FILE_PREFIX + "data.npz"
    _save_digits(tmp_path / "data.npz", classes=10)
    digest, release = pin_file_task(name)
    again, release_again = pin_file_task(name)  # a second holder: the same data, counted
    assert again == digest and len(digest) == 64
    _save_digits(tmp_path / "data.npz", classes=3)
    assert load_task(name, fidelity="fine", seed=0).num_classes == 10
    release()
    release()  # a release function releases once
    assert load_task(name, fidelity="fine", seed=0).num_classes == 10  # the other holder keeps it
    release_again()
    assert load_task(name, fidelity="fine", seed=0).num_classes == 3  # the file as it is now
    other, release_other = pin_file_task(name)
    assert other != digest
    release_other()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    _save_digits(moved / "data.npz", classes=10)
    monkeypatch.chdir(moved)  # the same relative name in another directory: another file, the first digest
    copy_digest, release_copy = pin_file_task(name)
    assert copy_digest == digest
    release_copy()
    with pytest.raises(ConfigError, match="only file: tasks are pinned"):
        pin_file_task("digits")
    assert np.isfinite(load_task(name, fidelity="fine", seed=0).x_train.numpy()).all()
