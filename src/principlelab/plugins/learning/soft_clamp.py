"""Learning rule ``soft_clamp``: backprop whose per-unit step size shrinks with the unit's age (catalog L6).

Every hidden unit has a birth epoch: 0 for units present at the start, the current epoch for units
added by growth (a new layer's units are all newborn). Its age is ``epoch - birth`` and its scale

- ``exp``: ``max(min_scale, exp(-decay * age))`` (default),
- ``inverse``: ``max(min_scale, 1 / (1 + decay * age))``,
- ``linear``: ``max(min_scale, 1 - decay * age)`` (the seed's ``1 - age/max_age`` with
  ``max_age = 1/decay``, 002:8478-8482).

Each step, after the optimizer's update, the change of every hidden unit's incoming weights (main
and skip blocks) and bias is multiplied by a scale: ``p = old + scale * (new - old)``, a bias by its
unit's, a weight by the larger of its two units' (a connection is as young as its younger end, so a
newborn unit's outgoing weights learn at its rate; input units count as old). Scaling the
*update*, not the gradient, is deliberate: Adam divides the gradient by its running RMS, so a
constant per-unit gradient factor cancels out of the step (the same reason a loss weight is nearly a
no-op under Adam, catalog §5.10); scaling the update works for SGD and Adam alike and leaves the
optimizer's moments untouched. The output layer and the composition's parameters are not clamped.
The default floor ``min_scale > 0`` keeps old units plastic (soft, not hard, clamping: the seed
demoted hard clamping for being irreversible and rigid, 002:8390-8396).

Cost per step: one copy of the clamped tensors and one fused multiply-add each, skipped entirely
while every scale is 1 (e.g. the whole first epoch). Scales are recomputed only when the epoch
changes or the network grows.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.network import Network, ParamRemap
from principlelab.core.principles import Composition
from principlelab.core.signals import Signals
from principlelab.plugins.learning.backprop import Backprop
from principlelab.registry.hookspecs import hookimpl


class SoftClamp(Backprop):
    """Backprop with per-unit update scales that decay with the unit's age in epochs."""

    name: ClassVar[str] = "soft_clamp"

    class Config(Backprop.Config):
        decay: float = Field(0.05, ge=0.0, le=10.0, description="decay of the update scale per epoch of age",
                             json_schema_extra={"search": {"low": 0.005, "high": 0.5, "log": True}})
        min_scale: float = Field(0.1, ge=0.0, le=1.0, description="floor of the update scale",
                                 json_schema_extra={"search": {"low": 0.0, "high": 0.5}})
        schedule: Literal["exp", "inverse", "linear"] = Field(
            "exp", description="scale as a function of age",
            json_schema_extra={"search": {"choices": ["exp", "inverse", "linear"]}})

    births: list[torch.Tensor]
    """Per hidden layer ``k`` (index ``k - 1``), the birth epoch of each unit [width_k] (float)."""

    def setup(self, net: Network, composition: Composition) -> None:
        super().setup(net, composition)
        self.epoch = 0
        self.births = [torch.zeros(net.widths[k]) for k in net.hidden_layers]
        self._keys = [net.layers[k - 1].weight for k in net.hidden_layers]
        self._scales: list[torch.Tensor] | None = None
        self._scales_epoch = -1
        self._all_one = True
        self._factor_cache: tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def scale_of(self, age: torch.Tensor) -> torch.Tensor:
        """The update scale for ages ``age`` (epochs, any shape)."""
        cfg = self.config
        if cfg.schedule == "exp":
            scale = torch.exp(-cfg.decay * age)
        elif cfg.schedule == "inverse":
            scale = 1.0 / (1.0 + cfg.decay * age)
        else:
            scale = 1.0 - cfg.decay * age
        return scale.clamp(min=cfg.min_scale, max=1.0)

    def scales(self) -> list[torch.Tensor]:
        """Per hidden layer, the current update scale of each unit."""
        if self._scales is None or self._scales_epoch != self.epoch:
            self._scales = [self.scale_of(self.epoch - b) for b in self.births]
            self._scales_epoch = self.epoch
            self._all_one = all(bool((s == 1).all()) for s in self._scales)  # one sync per epoch
        return self._scales

    def step(self, net: Network, composition: Composition, x: torch.Tensor, y: torch.Tensor,
             signals: Signals) -> torch.Tensor:
        self.epoch = signals.epoch
        scales = self.scales()
        if self._all_one:
            return super().step(net, composition, x, y, signals)
        self.optimizer.zero_grad(set_to_none=True)
        loss = composition.loss(composition.forward(net, x), y)
        loss.backward()
        if signals.wants_grad_norms:
            signals.record_grad_norms(net)
        clamped = self._factors(net, scales)
        old = [t.detach().clone() for t, _ in clamped]
        self.optimizer.step()
        with torch.no_grad():
            for (t, factor), before in zip(clamped, old):
                t.sub_(before).mul_(factor).add_(before)  # old + scale * (new - old)
        if net.frozen:
            net.restore_frozen()
        return loss.detach()

    def _factors(self, net: Network, scales: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every clamped tensor with its update factor, kept while ``scales`` are.

        A weight's factor [n_out, n_in] is the larger scale of its two units: a connection is as young
        as its younger end, so a newborn unit's outgoing weights into old units learn at its own rate,
        not theirs (input units count as old: their factor is the receiving unit's). A bias's is its
        unit's [n_out].
        """
        if self._factor_cache is not None and self._factor_cache[0] is scales:
            return self._factor_cache[1]
        factors = []
        for k, scale in zip(net.hidden_layers, scales):
            for source, block in net.blocks_into(k):
                rows = scale.unsqueeze(1)  # [n_out, 1]: broadcast, unless a source unit is younger than a row's
                younger = source > 0 and bool(scales[source - 1].max() > scale.min())
                factors.append((block.weight, torch.maximum(rows, scales[source - 1]) if younger else rows))
            bias = net.layers[k - 1].bias
            if bias is not None:
                factors.append((bias, scale))
        self._factor_cache = (scales, factors)
        return factors

    def on_growth(self, net: Network, composition: Composition, remap: ParamRemap) -> None:
        super().on_growth(net, composition, remap)
        carried = {id(remap.new_for(key)): births for key, births in zip(self._keys, self.births)}
        births = []
        for k in net.hidden_layers:
            old = carried.get(id(net.layers[k - 1].weight), torch.zeros(0))
            born = torch.full((net.widths[k] - old.numel(),), float(self.epoch))
            births.append(torch.cat([old, born]))
        self.births = births
        self._keys = [net.layers[k - 1].weight for k in net.hidden_layers]
        self._scales = None


def age_scale(age: float, decay: float, min_scale: float) -> float:
    """The default (``exp``) scale of one age, for documentation and tests."""
    return max(min_scale, min(1.0, math.exp(-decay * age)))


@hookimpl
def register_learning_rules(register):  # type: ignore[no-untyped-def]
    register(SoftClamp)
