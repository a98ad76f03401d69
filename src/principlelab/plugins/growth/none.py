"""Growth ``none``: the network keeps its initial structure."""

from __future__ import annotations

from typing import ClassVar

import torch

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.principles import GrowthRule, PrincipleConfig
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


class NoGrowth(GrowthRule):
    """Adds nothing."""

    name: ClassVar[str] = "none"

    class Config(PrincipleConfig):
        pass

    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        return []


@hookimpl
def register_growth_rules(register):  # type: ignore[no-untyped-def]
    register(NoGrowth)
