"""Growth ``random``: add n units at random hidden layers (the baseline every targeted rule must beat).

Uses the same unit operators as the targeted rules (``split``, ``clone``, ``zero``), so a comparison
at equal parameter count isolates *where* units go from *how* they are added.
"""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.principles import GrowthRule, PrincipleConfig
from principlelab.core.signals import Signals
from principlelab.registry.hookspecs import hookimpl


class RandomGrowth(GrowthRule):
    """Each of ``units`` new units goes to a uniformly random hidden layer with room, copying a
    uniformly random unit there (for ``split``/``clone``); stops at ``max_total`` added units."""

    name: ClassVar[str] = "random"

    class Config(PrincipleConfig):
        units: int = Field(8, ge=1, le=4096, description="units added per firing",
                           json_schema_extra={"search": {"low": 1, "high": 64, "log": True}})
        operator: Literal["split", "clone", "zero"] = Field("split", description="how a unit is added")
        noise: float = Field(0.05, ge=0.0, le=0.5, description="symmetry-breaking noise of split/clone")
        max_total: int = Field(1024, ge=1, le=10**6, description="total units this rule may add in a run")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.added = 0

    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        cfg = self.config
        budget = min(cfg.units, cfg.max_total - self.added)
        room = {k: net.room(k) for k in net.hidden_layers}
        picks: Counter[int] = Counter()
        for _ in range(budget):
            open_layers = [k for k in room if room[k] > picks[k]]
            if not open_layers:
                break
            picks[open_layers[int(torch.randint(len(open_layers), (1,), generator=generator))]] += 1
        events: list[GrowthEvent] = []
        for layer, n in sorted(picks.items()):
            if cfg.operator == "zero":
                events += net.add_units(layer, n, init="zero", generator=generator)
            else:
                sources = torch.randint(net.widths[layer], (n,), generator=generator).tolist()
                events += net.add_units(layer, init=cfg.operator, source_units=sources,
                                        noise=cfg.noise, generator=generator)
        self.added += sum(e.units for e in events)
        return events


@hookimpl
def register_growth_rules(register):  # type: ignore[no-untyped-def]
    register(RandomGrowth)
