"""Connectivity ``sparse_random``: a fixed Erdős-Rényi mask of a given density on every layer."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from principlelab.core.network import Block, Network
from principlelab.core.principles import Connectivity, PrincipleConfig
from principlelab.core.recipe import NetworkSpec
from principlelab.plugins.connectivity.dense import capped_widths
from principlelab.registry.hookspecs import hookimpl


def random_mask(n_out: int, n_in: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """A 0/1 mask [n_out, n_in] with each entry on with probability ``density``; every row and
    column keeps at least one connection so no unit is cut off."""
    mask = (torch.rand(n_out, n_in, generator=generator) < density).float()
    rows = torch.randint(0, n_in, (n_out,), generator=generator)
    mask[torch.arange(n_out), rows] = 1.0
    cols = torch.randint(0, n_out, (n_in,), generator=generator)
    mask[cols, torch.arange(n_in)] = 1.0
    return mask


def sparsify(block: Block, density: float, generator: torch.Generator) -> None:
    """Give ``block`` a :func:`random_mask` and scale each unit's weights [n_out, n_in] by
    ``sqrt(n_in / active fan-in)``, so its pre-activation variance is the dense init's.

    The realised fan-in, not ``density``: the row and column guarantee adds connections (a 64 -> 256
    block at density 0.02 has about 0.04), and rows differ; scaling by ``1/sqrt(density)`` gave small
    blocks at low density up to 2.6x the dense variance."""
    n_out, n_in = block.weight.shape
    block.mask = random_mask(n_out, n_in, density, generator)
    with torch.no_grad():
        block.weight.mul_((n_in / block.mask.sum(1, keepdim=True)).sqrt())


class SparseRandom(Connectivity):
    """Each connection exists with probability ``density``; each unit's weights rescaled by
    sqrt(fan-in / active fan-in) so its pre-activation variance matches the dense init."""

    name: ClassVar[str] = "sparse_random"

    class Config(PrincipleConfig):
        density: float = Field(0.25, gt=0.0, le=1.0, description="fraction of connections present",
                               json_schema_extra={"search": {"low": 0.02, "high": 1.0, "log": True}})
        sparse_output: bool = Field(False, description="also sparsify the last (output) layer")

    def build(self, spec: NetworkSpec, *, in_features: int, num_classes: int, width_cap: int | None,
              generator: torch.Generator) -> Network:
        widths = capped_widths(spec, in_features, num_classes, width_cap)
        net = Network(widths, activation=spec.activation, max_width=width_cap, generator=generator)
        density = self.config.density
        last = net.depth - 1
        for i, block in enumerate(net.layers):
            if i == last and not self.config.sparse_output:
                continue
            sparsify(block, density, generator)
        net._changed()
        return net


@hookimpl
def register_connectivities(register):  # type: ignore[no-untyped-def]
    register(SparseRandom)
