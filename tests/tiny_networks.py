"""A tiny :class:`Network` for the network and growth-operation tests: widths 5 -> 4 -> 6 -> 3."""

from __future__ import annotations

import torch

from principlelab.core.network import Network

WIDTHS = [5, 4, 6, 3]  # input 5, hidden layers 1 (4 units) and 2 (6 units), output 3


def tiny_net(activation: str = "relu", *, masked: bool = False, skips: bool = False, seed: int = 0,
             max_width: int | None = None) -> Network:
    """A seeded network of :data:`WIDTHS`; ``skips`` adds random-weight skips 0->2 and 1->3; ``masked``
    masks every block at random (about 60% of the weights kept)."""
    g = torch.Generator().manual_seed(seed)
    net = Network(WIDTHS, activation=activation, generator=g, max_width=max_width)
    if skips:
        net.add_skip(0, 2)
        net.add_skip(1, 3)
        with torch.no_grad():
            for blk in net.skips.values():
                blk.weight.copy_(torch.randn(blk.weight.shape, generator=g) * 0.3)
    if masked:
        for blk in [*net.layers, *net.skips.values()]:
            blk.mask = (torch.rand(blk.weight.shape, generator=g) < 0.6).float()
        net._changed()
    net.pop_param_remap()
    return net


def tiny_inputs(n: int, seed: int = 1) -> torch.Tensor:
    """``[n, 5]`` seeded standard-normal inputs."""
    return torch.randn(n, WIDTHS[0], generator=torch.Generator().manual_seed(seed))
