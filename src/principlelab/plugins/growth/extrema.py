"""Growth ``extrema``: grow at saturated, dead or extreme-percentile hidden units (catalog §1.1).

Selection reads the shared per-unit activation statistics of the latest training batch (reduced
over the batch per unit, fixing the seeds' batch-index bug, catalog E2 and §5 item 2). Modes:

- ``saturation`` (E2/E3/E5): a unit within ``eps`` of its activation's bound (both tails, so
  sigmoid's low tail counts) on at least ``min_fraction`` of the batch. ``eps`` is in activation
  units: tanh ``|a| >= 1 - eps``, sigmoid ``a <= eps`` or ``a >= 1 - eps``. Polarity: ``high`` if
  the unit's mean is above the bounds' midpoint. On ReLU it means ``always_max``.
- ``dead`` (E4): at the activation's floor (ReLU: 0) on more than ``dead_fraction`` of the batch.
- ``always_max`` (ReLU max side): ``a >= (1 - eps) * max(batch, layer)`` on ``>= min_fraction``.
- ``percentile`` (E1): mean activation in the layer's top (``high``) / bottom (``low``) ``percentile`` %.
- ``auto``: ``saturation`` for tanh/sigmoid, ``dead`` + ``always_max`` for ReLU.

Severity is the fraction of the batch in the extreme (percentile: distance of the unit's mean from
the layer median, over the largest such distance). Of the n targets the operator can act on, the
``ceil(top_fraction * n)`` most severe are acted on (E7) with the shared operators and caps of
:mod:`operators`; a ``dead`` target gets a fresh unit in its own layer (a copy of it would be dead
too). Nothing extremal: no growth.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.network import ACTIVATION_BOUNDS, Network
from principlelab.core.principles import GrowthRule
from principlelab.core.signals import LayerStats, Signals
from principlelab.plugins.growth.operators import (
    GrowthBudget,
    OperatorConfig,
    Polarity,
    Target,
    apply_operator,
    ranked,
    servable,
    source_polarity,
)
from principlelab.registry.hookspecs import hookimpl

Mode = Literal["auto", "saturation", "dead", "always_max", "percentile"]


class ExtremaGrowth(GrowthRule):
    """Selects extremal hidden units (see the module docstring) and applies ``operator`` at the most
    severe ``top_fraction`` of them, under per-scale and total caps."""

    name: ClassVar[str] = "extrema"
    required_signals: ClassVar[frozenset[str]] = frozenset({"activation_stats"})

    class Config(OperatorConfig):
        mode: Mode = Field("auto", description="which units count as extremal")
        eps: float = Field(0.05, gt=0.0, lt=0.5,
                           description="distance from the bound (tanh/sigmoid: units; ReLU: share of max)",
                           json_schema_extra={"search": {"low": 0.02, "high": 0.25, "log": True}})
        min_fraction: float = Field(0.5, gt=0.0, le=1.0,
                                    description="saturation/always_max: batch fraction at the extreme",
                                    json_schema_extra={"search": {"low": 0.1, "high": 0.9}})
        dead_fraction: float = Field(0.9, ge=0.0, lt=1.0, description="dead: batch fraction (exclusive) at 0",
                                     json_schema_extra={"search": {"low": 0.5, "high": 0.99}})
        percentile: float = Field(5.0, gt=0.0, le=50.0,
                                  description="percentile: top/bottom % of mean activation",
                                  json_schema_extra={"search": {"low": 1.0, "high": 20.0}})

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.budget = GrowthBudget()

    def modes(self, activation: str) -> tuple[str, ...]:
        """The concrete selection modes ``mode`` stands for with this activation."""
        mode = self.config.mode
        bounded = ACTIVATION_BOUNDS[activation] is not None
        if mode == "auto":
            return ("saturation",) if bounded else ("dead", "always_max")
        if mode == "saturation" and not bounded:
            return ("always_max",)
        return (mode,)

    def select(self, net: Network, signals: Signals) -> list[Target]:
        """Every extremal hidden unit of the latest batch, most severe first."""
        cfg = self.config
        bounds = ACTIVATION_BOUNDS[net.activation]
        span = 1.0 if bounds is None else bounds[1] - bounds[0]
        stats = signals.activation_stats(eps=cfg.eps / span, percentile=cfg.percentile)
        best: dict[tuple[int, int], Target] = {}
        for mode in self.modes(net.activation):
            for s in stats:
                for t in self._layer_targets(mode, s, bounds):
                    key = (t.layer, t.unit)
                    if key not in best or t.severity > best[key].severity:
                        best[key] = t
        return ranked(list(best.values()))

    def _layer_targets(self, mode: str, s: LayerStats,
                       bounds: tuple[float, float] | None) -> list[Target]:
        cfg = self.config
        if mode == "dead":
            hit, severity = s.dead > cfg.dead_fraction, s.dead  # [width] bool, [width]
            polarity = torch.zeros_like(hit)  # low
        elif mode in ("saturation", "always_max"):
            hit, severity = s.saturated >= cfg.min_fraction, s.saturated
            mid = 0.0 if bounds is None else (bounds[0] + bounds[1]) / 2
            polarity = s.mean >= mid if bounds is not None else torch.ones_like(hit)
        else:  # percentile
            hit = s.top | s.bottom
            dist = (s.mean - s.mean.median()).abs()
            severity = dist / dist.max().clamp_min(1e-12)
            polarity = s.top
        out = []
        for u in torch.nonzero(hit).flatten().tolist():
            pol: Polarity = "high" if bool(polarity[u]) else "low"
            out.append(Target(s.layer, u, float(severity[u]), pol, dead=mode == "dead"))
        return out

    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        self.budget.observe(net)
        found = self.select(net, signals)
        wanted = source_polarity(self.config)
        # only targets the operator can serve: the most severe ones could all sit where it cannot act
        # (a relay up from the last hidden layer), and growth would do nothing
        candidates = servable(net, [t for t in found if wanted is None or t.polarity == wanted], self.config)
        if not candidates:
            return []
        chosen = candidates[:math.ceil(self.config.top_fraction * len(candidates))]
        events = apply_operator(net, chosen, found, self.config, self.budget, signals, generator)
        for event in events:
            event.details["selector"] = {"mode": self.config.mode, "extremal": len(found)}
        return events


@hookimpl
def register_growth_rules(register):  # type: ignore[no-untyped-def]
    register(ExtremaGrowth)
