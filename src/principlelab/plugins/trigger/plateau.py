"""Trigger ``plateau``: grow when the loss stops improving (catalog T3, T12).

At the end of every epoch the trigger reads the epoch's loss (validation loss by default, or the
mean training loss) and keeps the best value seen since the last growth. An epoch *improves* when
its loss is below ``best * (1 - min_delta)`` (a relative improvement, so the rule does not depend
on the loss scale). After ``patience`` consecutive epochs without improvement it fires, then
ignores ``cooldown`` epochs and restarts from the loss after the growth (the old best is not
comparable once the network has changed).

This is the patience form of a plateau (as in ``ReduceLROnPlateau``). The seed's T3 variant
(002:5287-5302: window 20, ``std/mean < 0.01``, then fire on a renewed drop) is not used: on
mini-batch losses ``std/mean < 0.01`` almost never holds, and "fire when the plateau ends" grows
after the network has already escaped it. It runs only at epoch ends: no per-step cost.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.principles import Firing, PrincipleConfig, Trigger
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


class PlateauTracker:
    """Best-so-far bookkeeping shared with ``signal_economy``'s plateau signal."""

    def __init__(self, min_delta: float) -> None:
        self.min_delta = min_delta
        self.best = math.inf
        self.stale = 0  # consecutive epochs without improvement

    def update(self, loss: float) -> bool:
        """Record one epoch's loss; True if it improved on the best by ``min_delta`` (relative)."""
        if not math.isfinite(loss):
            self.stale += 1
            return False
        if loss < self.best * (1 - self.min_delta) or not math.isfinite(self.best):
            self.best, self.stale = loss, 0
            return True
        self.stale += 1
        return False

    def reset(self, loss: float | None = None) -> None:
        """Start over from ``loss`` (or from nothing)."""
        self.best = math.inf if loss is None else loss
        self.stale = 0


def epoch_loss(signals: Signals, metric: str) -> float | None:
    """The latest epoch's validation loss or mean training loss (None if there is none yet)."""
    values = signals.val_losses if metric == "val_loss" else signals.epoch_train_losses
    return values[-1] if values else None


class Plateau(Trigger):
    """Fires after ``patience`` epochs whose loss did not improve by ``min_delta`` (relative)."""

    name: ClassVar[str] = "plateau"
    required_signals: ClassVar[frozenset[str]] = frozenset({"loss"})

    class Config(PrincipleConfig):
        patience: int = Field(3, ge=1, le=1000, description="epochs without improvement before firing",
                              json_schema_extra={"search": {"low": 1, "high": 10}})
        min_delta: float = Field(0.01, ge=0.0, lt=1.0,
                                 description="an improvement is loss < best * (1 - min_delta)",
                                 json_schema_extra={"search": {"low": 1e-4, "high": 0.1, "log": True}})
        cooldown: int = Field(2, ge=0, le=1000, description="epochs after a firing that are ignored",
                              json_schema_extra={"search": {"low": 0, "high": 10}})
        metric: Literal["val_loss", "train_loss"] = Field(
            "val_loss", description="which epoch loss to watch",
            json_schema_extra={"search": {"choices": ["val_loss", "train_loss"]}})
        max_firings: int = Field(100, ge=1, le=100_000, description="stop firing after this many")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.tracker = PlateauTracker(self.config.min_delta)
        self.cooling = 0  # epochs still to ignore
        self.fired = 0

    def on_step(self, signals: Signals) -> Firing | None:
        return None

    def on_epoch_end(self, signals: Signals) -> Firing | None:
        cfg = self.config
        loss = epoch_loss(signals, cfg.metric)
        if loss is None:
            return None
        if self.cooling > 0:
            self.cooling -= 1
            self.tracker.reset(loss)
            return None
        self.tracker.update(loss)
        if self.tracker.stale < cfg.patience or self.fired >= cfg.max_firings:
            return None
        self.fired += 1
        stale, best = self.tracker.stale, self.tracker.best
        self.cooling = cfg.cooldown
        self.tracker.reset(loss)
        return Firing(reason=f"{cfg.metric} {loss:.4g} has not improved on {best:.4g} by "
                             f"{cfg.min_delta:.0%} for {stale} epochs (patience {cfg.patience})")

    def on_growth(self, events: list[GrowthEvent], signals: Signals) -> None:
        """Nothing extra: the tracker was restarted when the trigger fired."""


@hookimpl
def register_triggers(register):  # type: ignore[no-untyped-def]
    register(Plateau)
