"""Two principles and the hooks that register them: all a third-party plugin needs.

The entry point ``[project.entry-points.principlelab] example = "principlelab_example.plugin"`` in
``pyproject.toml`` makes principlelab import this module and call its ``@hookimpl`` functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from principlelab.core.principles import Firing, GrowthRule, PrincipleConfig, Trigger
from principlelab.registry import hookimpl

if TYPE_CHECKING:
    import torch

    from principlelab.core.events import GrowthEvent
    from principlelab.core.network import Network
    from principlelab.core.signals import Signals


class NarrowestFirst(GrowthRule):
    """Widens the narrowest hidden layer first (ties: the earliest) by ``units`` zero-init units."""

    name: ClassVar[str] = "narrowest_first"

    class Config(PrincipleConfig):
        units: int = Field(4, ge=1, le=256, description="units added per growth",
                           json_schema_extra={"search": {"low": 1, "high": 32, "log": True}})

    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        # net.widths = [in_features, *hidden, num_classes]; hidden layers are unit layers 1..L-1.
        layer = min(net.hidden_layers, key=lambda k: net.widths[k])  # min() keeps the first of ties
        return net.add_units(layer, self.config.units, init="zero", generator=generator)


class LossBelow(Trigger):
    """Fires once, the first time the training loss drops below ``threshold``."""

    name: ClassVar[str] = "loss_below"

    class Config(PrincipleConfig):
        threshold: float = Field(0.5, gt=0, le=10, description="loss below which to grow once")

    def __init__(self, config: PrincipleConfig | dict[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.fired = False

    def on_step(self, signals: Signals) -> Firing | None:
        if self.fired or not signals.last_loss < self.config.threshold:  # NaN before the first step
            return None
        self.fired = True
        return Firing(reason=f"loss {signals.last_loss:.4g} < {self.config.threshold:g}")


@hookimpl
def register_growth_rules(register: Callable[[type], None]) -> None:
    register(NarrowestFirst)


@hookimpl
def register_triggers(register: Callable[[type], None]) -> None:
    register(LossBelow)
