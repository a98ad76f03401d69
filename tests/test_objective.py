"""The campaign objective's own work around training (studies/objective.py)."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from principlelab.core.recipe import Fidelity
from principlelab.core.tasks import TaskData, load_task
from principlelab.studies import objective as objective_module
from principlelab.studies.objective import Objective


def same_data(a: TaskData, b: TaskData) -> bool:
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
               for x, y in ((getattr(a, f.name), getattr(b, f.name)) for f in fields(a)))


def test_the_task_is_loaded_once_per_seed_and_each_trial_gets_its_own_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []

    def counting_load(name: str, *, fidelity: Any, seed: int) -> TaskData:
        loads.append(seed)
        return load_task(name, fidelity=fidelity, seed=seed)

    monkeypatch.setattr(objective_module, "load_task", counting_load)
    objective = Objective(SimpleNamespace())  # type: ignore[arg-type]
    fidelity = Fidelity(epochs=1, data_fraction=0.5)
    recipe = SimpleNamespace(task="digits", fidelity=fidelity, seed=3)
    expected = load_task("digits", fidelity=fidelity, seed=3)

    first = objective._task(recipe)  # type: ignore[arg-type]
    assert same_data(first, expected)
    first.x_train.zero_()  # a trial that changes its data in place
    first.y_val[:] = 0
    second = objective._task(recipe)  # type: ignore[arg-type]
    assert same_data(second, expected), "a trial's in-place change reached the next trial"
    other_seed = objective._task(SimpleNamespace(task="digits", fidelity=fidelity, seed=4))  # type: ignore[arg-type]
    assert same_data(other_seed, load_task("digits", fidelity=fidelity, seed=4))
    assert not torch.equal(other_seed.y_train, expected.y_train)  # another training subset
    assert loads == [3, 4]

    whole = Objective(SimpleNamespace())  # type: ignore[arg-type]
    all_data = Fidelity(epochs=1, data_fraction=1.0)
    for seed in (3, 4):  # the seed picks only the training subset: with all the data, one load
        data = whole._task(SimpleNamespace(task="digits", fidelity=all_data, seed=seed))  # type: ignore[arg-type]
        assert same_data(data, load_task("digits", fidelity=all_data, seed=seed))
    assert loads == [3, 4, 3]
