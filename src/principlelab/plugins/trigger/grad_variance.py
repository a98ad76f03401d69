"""Trigger ``grad_variance``: grow when the variance of the gradient norm shifts (catalog T2, variant B).

Per step ``t`` the global gradient norm is ``g_t = sqrt(sum_l n_{t,l}**2)`` over the per-layer norms
``n_{t,l}`` of :attr:`Signals.grad_norms` (one row per step). Every ``check_every`` steps, once
``past_window + recent_window`` norms exist since the last growth, the trigger compares

    recent = var(g[-recent_window:]),   past = var(g[-(recent_window + past_window):-recent_window])

and fires when ``|recent - past| / (past + eps) > threshold`` (the seed's "most vetted" procedure:
windows 10/10, history 20, relative change 0.5; ``eps`` is the catalog's proposed guard). After a
firing it stays silent for ``stabilization_steps`` steps, and its windows only use norms recorded
after the growth, so the jump that growth itself causes is never compared with the old regime.

Granularity (catalog §5.9): per step, because an epoch is 10-60 steps on the built-in tasks and 20
epoch-level norms would exceed most runs. Cost: one host sync per ``check_every`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.principles import Firing, PrincipleConfig, Trigger
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


def global_norm(layer_norms: Sequence[float]) -> float:
    """``sqrt(sum n**2)`` of one step's per-layer gradient norms."""
    return math.sqrt(sum(n * n for n in layer_norms))


def _var(values: Sequence[float]) -> float:
    """Population variance (the seed's ``np.var``)."""
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def variance_change(norms: Sequence[float], recent: int, past: int,
                    eps: float = 1e-12) -> tuple[float, float, float] | None:
    """``(relative change, recent var, past var)`` of the last ``recent + past`` values, or None
    when fewer exist. The relative change is ``|recent_var - past_var| / (past_var + eps)``."""
    if len(norms) < recent + past:
        return None
    window = norms[len(norms) - recent - past:]
    past_var, recent_var = _var(window[:past]), _var(window[past:])
    return abs(recent_var - past_var) / (past_var + eps), recent_var, past_var


class GradVarianceDetector:
    """The stateful part shared with ``signal_economy``: which norms count, when to look."""

    def __init__(self, recent: int, past: int, eps: float) -> None:
        self.recent, self.past, self.eps = recent, past, eps
        self.start = 0  # index into Signals.grad_norms of the first row after the last growth

    def restart(self, signals: Signals) -> None:
        """Forget the norms recorded so far (call after a growth; syncs pending norms once)."""
        self.start = len(signals.grad_norms)

    def measure(self, signals: Signals) -> tuple[float, float, float] | None:
        """The variance change over the post-growth norms (one host sync), or None if too few."""
        rows = signals.grad_norms
        if len(rows) - self.start < self.recent + self.past:
            return None
        norms = [global_norm(r) for r in rows[len(rows) - self.recent - self.past:]]
        return variance_change(norms, self.recent, self.past, self.eps)


class GradVariance(Trigger):
    """Fires when the global gradient norm's variance changes by more than ``threshold`` (relative)."""

    name: ClassVar[str] = "grad_variance"
    required_signals: ClassVar[frozenset[str]] = frozenset({"grad_norms"})

    class Config(PrincipleConfig):
        recent_window: int = Field(10, ge=2, le=1000, description="steps in the recent window",
                                   json_schema_extra={"search": {"low": 5, "high": 50, "log": True}})
        past_window: int = Field(10, ge=2, le=1000, description="steps in the past window (just before it)",
                                 json_schema_extra={"search": {"low": 5, "high": 50, "log": True}})
        threshold: float = Field(0.5, gt=0.0, le=100.0,
                                 description="fire when |recent_var - past_var| / past_var exceeds this",
                                 json_schema_extra={"search": {"low": 0.1, "high": 5.0, "log": True}})
        stabilization_steps: int = Field(
            100, ge=0, le=100_000, description="steps after a firing during which it cannot fire "
            "(the seed's 10 epochs, expressed in steps for short runs)",
            json_schema_extra={"search": {"low": 20, "high": 500, "log": True}})
        warmup_steps: int = Field(0, ge=0, le=100_000, description="steps at the start during which it "
                                  "cannot fire (0: as the seed; the first check needs the windows full)",
                                  json_schema_extra={"search": {"low": 0, "high": 300}})
        check_every: int = Field(10, ge=1, le=1000, description="evaluate every this many steps (one sync)")
        eps: float = Field(1e-12, gt=0.0, le=1.0, description="added to the past variance (catalog proposal)")
        max_firings: int = Field(100, ge=1, le=100_000, description="stop firing after this many")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.detector = GradVarianceDetector(cfg.recent_window, cfg.past_window, cfg.eps)
        self.fired = 0
        self.quiet_until = cfg.warmup_steps  # no firing at steps <= this
        self.history: list[tuple[int, float]] = []  # (step, relative change) of every check

    def on_step(self, signals: Signals) -> Firing | None:
        cfg = self.config
        if (signals.step % cfg.check_every or signals.step <= self.quiet_until
                or self.fired >= cfg.max_firings):
            return None
        measured = self.detector.measure(signals)
        if measured is None:
            return None
        change, recent, past = measured
        self.history.append((signals.step, change))
        if not math.isfinite(change) or change <= cfg.threshold:  # a NaN/inf norm is no evidence of a change
            return None
        self.fired += 1
        self.quiet_until = signals.step + cfg.stabilization_steps
        self.detector.restart(signals)
        return Firing(reason=f"grad-norm variance changed by {change:.2f} (recent {recent:.3g} vs past "
                             f"{past:.3g}) > {cfg.threshold} at step {signals.step}")

    def on_growth(self, events: list[GrowthEvent], signals: Signals) -> None:
        self.detector.restart(signals)  # the norms before the new parameters are not comparable


@hookimpl
def register_triggers(register):  # type: ignore[no-untyped-def]
    register(GradVariance)
