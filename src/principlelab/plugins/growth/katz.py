"""Growth ``katz``: grow at the most Katz-central hidden units (catalog K1, §1.4).

Centrality is computed on the network's unit graph with ``|w|`` edge weights (masks and skip
edges included) by :func:`principlelab.core.katz.katz_centrality`: networkx's convention
``x = alpha A^T x + beta`` (``influence="in"``: walks ending at a unit) or on the reversed graph
(``"out"``: walks starting at a unit, how much it feeds downstream). Deeper layers accumulate more
walks, so units are ranked *within* each hidden layer: the top ``ceil(top_fraction * width)`` of a
layer are ``high`` targets, its bottom as many are ``low`` (highway destinations for
``high_to_low``, sources for ``low_to_high``). Severity is ``1 - rank / width`` within the layer.
Operators and caps are the shared ones of :mod:`operators` (same as ``extrema``).

Cost: one exact layer-wise recursion, one multiply-add per active connection (recorded in each
event's ``details["katz_macs"]``); no signals are needed.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.katz import katz_centrality
from principlelab.core.network import Network
from principlelab.core.principles import GrowthRule
from principlelab.core.signals import Signals
from principlelab.plugins.growth.operators import (
    GrowthBudget,
    OperatorConfig,
    Target,
    apply_operator,
    ranked,
    source_polarity,
)
from principlelab.registry.hookspecs import hookimpl


class KatzGrowth(GrowthRule):
    """Ranks hidden units by Katz centrality within their layer and applies ``operator`` at the
    top ``top_fraction`` of each layer, under per-scale and total caps."""

    name: ClassVar[str] = "katz"

    class Config(OperatorConfig):
        influence: Literal["in", "out"] = Field(
            "in", description="Katz of walks into a unit (networkx) or out of it (reversed graph)")
        alpha: float = Field(0.1, gt=0.0, le=10.0, description="Katz attenuation per hop",
                             json_schema_extra={"search": {"low": 0.01, "high": 1.0, "log": True}})

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.budget = GrowthBudget()

    def scores(self, net: Network) -> list[torch.Tensor]:
        """Katz centrality [widths[k]] (float64) of every unit layer ``k = 0..L``."""
        return katz_centrality(net, alpha=self.config.alpha, influence=self.config.influence)

    def select(self, net: Network) -> tuple[list[Target], list[Target]]:
        """``(high, low)``: per hidden layer the most / least central units, most severe first."""
        scores = self.scores(net)
        high: list[Target] = []
        low: list[Target] = []
        for k in net.hidden_layers:
            x = scores[k]  # [widths[k]]
            width = x.numel()
            n = min(width, math.ceil(self.config.top_fraction * width))
            order = torch.argsort(x, descending=True, stable=True).tolist()
            for rank in range(n):
                high.append(Target(k, order[rank], 1.0 - rank / width, "high"))
                low.append(Target(k, order[width - 1 - rank], 1.0 - rank / width, "low"))
        return ranked(high), ranked(low)

    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        macs = net.forward_macs()
        high, low = self.select(net)
        chosen = low if source_polarity(self.config) == "low" else high
        events = apply_operator(net, chosen, high + low, self.config, self.budget, signals, generator)
        for event in events:
            event.details["selector"] = {"influence": self.config.influence, "alpha": self.config.alpha}
            event.details["katz_macs"] = macs
        return events


@hookimpl
def register_growth_rules(register):  # type: ignore[no-untyped-def]
    register(KatzGrowth)
