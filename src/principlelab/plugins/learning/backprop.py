"""Learning rule ``backprop``: end-to-end gradient descent with SGD (momentum) or Adam.

The optimizer follows growth: new parameters join it, and the moments of existing weights are
carried over (zero-padded for the new rows/columns), so growing does not reset what was learned.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.network import Network, ParamRemap
from principlelab.core.optim import migrate_optimizer
from principlelab.core.principles import Composition, LearningRule, PrincipleConfig
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


class Backprop(LearningRule):
    """Minimises the composition's loss by backpropagation through the whole network."""

    name: ClassVar[str] = "backprop"

    class Config(PrincipleConfig):
        optimizer: Literal["adam", "sgd"] = Field("adam", description="update rule")
        lr: float = Field(3e-3, gt=0.0, le=10.0, description="learning rate",
                          json_schema_extra={"search": {"low": 1e-4, "high": 3e-2, "log": True}})
        momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum (ignored by Adam)")
        weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 penalty (decoupled for Adam: AdamW)",
                                    json_schema_extra={"search": {"low": 1e-6, "high": 1e-2, "log": True}})

    optimizer: torch.optim.Optimizer

    def _params(self, net: Network, composition: Composition) -> list[torch.Tensor]:
        return net.parameters() + composition.parameters()

    def setup(self, net: Network, composition: Composition) -> None:
        cfg, params = self.config, self._params(net, composition)
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
        else:
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay, foreach=False)

    def step(self, net: Network, composition: Composition, x: torch.Tensor, y: torch.Tensor,
             signals: Signals) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = composition.loss(composition.forward(net, x), y)
        loss.backward()
        if signals.wants_grad_norms:
            signals.record_grad_norms(net)
        self.optimizer.step()
        if net.frozen:
            net.restore_frozen()
        return loss.detach()

    def on_growth(self, net: Network, composition: Composition, remap: ParamRemap) -> None:
        migrate_optimizer(self.optimizer, remap, self._params(net, composition))


@hookimpl
def register_learning_rules(register):  # type: ignore[no-untyped-def]
    register(Backprop)
