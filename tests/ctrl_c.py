"""A Ctrl-C while a given trial trains, for the tests of interrupted campaigns."""

from __future__ import annotations

from typing import Any

import pytest

from principlelab.core.trainer import Trainer


def ctrl_c_at_training(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The ``call``-th ``Trainer.run`` (from 1) raises ``KeyboardInterrupt``; the others train."""
    train, calls = Trainer.run, {"n": 0}

    def interrupted(self: Trainer) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return train(self)

    monkeypatch.setattr(Trainer, "run", interrupted)
