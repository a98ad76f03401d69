"""Composition ``sequential``: the output layer's scores, nothing else."""

from __future__ import annotations

from typing import ClassVar

import torch

from principlelab.core.network import Network
from principlelab.core.principles import Composition, PrincipleConfig
from principlelab.registry.hookspecs import hookimpl


class Sequential(Composition):
    """Scores [B, C] are the network's output layer; the loss is cross-entropy."""

    name: ClassVar[str] = "sequential"

    class Config(PrincipleConfig):
        pass

    def forward(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        return net.forward(x)


@hookimpl
def register_compositions(register):  # type: ignore[no-untyped-def]
    register(Sequential)
