"""Connectivity ``dense``: every unit of a layer connected to every unit of the next."""

from __future__ import annotations

from typing import ClassVar

import torch

from principlelab.core.network import Network
from principlelab.core.principles import Connectivity, PrincipleConfig
from principlelab.core.recipe import NetworkSpec
from principlelab.registry.hookspecs import hookimpl


def capped_widths(spec: NetworkSpec, in_features: int, num_classes: int, width_cap: int | None) -> list[int]:
    """``[in_features, *hidden (each at most width_cap), num_classes]``."""
    hidden = [min(w, width_cap) if width_cap else w for w in spec.hidden]
    return [in_features, *hidden, num_classes]


class Dense(Connectivity):
    """A fully connected MLP, initialised like ``torch.nn.Linear``."""

    name: ClassVar[str] = "dense"

    class Config(PrincipleConfig):
        pass

    def build(self, spec: NetworkSpec, *, in_features: int, num_classes: int, width_cap: int | None,
              generator: torch.Generator) -> Network:
        widths = capped_widths(spec, in_features, num_classes, width_cap)
        return Network(widths, activation=spec.activation, max_width=width_cap, generator=generator)


@hookimpl
def register_connectivities(register):  # type: ignore[no-untyped-def]
    register(Dense)
