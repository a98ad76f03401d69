"""Connectivity ``set``: Sparse Evolutionary Training (Mocanu et al. 2018; catalog N1b).

Build: Erdős-Rényi masks of density ``density`` on every layer (the output layer only if
``sparse_output``), weights rescaled to the dense init's variance like ``sparse_random``.

Rewire, at the end of every ``every``-th epoch, per sparse block: drop the ``zeta`` fraction
(``floor(zeta * active)``) of active connections with the smallest ``|w|`` (ties broken by position)
and regrow as many at positions drawn uniformly from those inactive *before* the drop, so the number
of active connections (the density) is unchanged. Dropped weights are zeroed. Regrown weights start
at ``N(0, regrow_std^2)`` (default ``regrow_init="normal"``, std 0.1: the paper's "new random
weights", the authors' sparse implementation's randn/10) or at 0 (``"zero"``, the authors' Keras
implementation and RigL: the regrowth adds nothing to the function, but a zero weight is the first
candidate for the next drop). Dropping non-zero weights changes the function, so an event says
``function_preserving`` only if every dropped weight was 0 and the regrowth was zero-initialised.
Incoming connections of frozen units are never rewired. One event per rewired block: operation
``rewire``, ``layer`` = the unit layer it feeds, ``details = {dropped, regrown, block, active,
density, init}``; the events are also appended to ``net.events``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Block, Network
from principlelab.core.principles import Connectivity, PrincipleConfig
from principlelab.core.recipe import NetworkSpec
from principlelab.plugins.connectivity.dense import capped_widths
from principlelab.plugins.connectivity.sparse_random import sparsify
from principlelab.registry.hookspecs import hookimpl


def evolve_block(block: Block, zeta: float, generator: torch.Generator, *, init: str = "zero",
                 std: float = 0.1, locked_rows: torch.Tensor | None = None) -> tuple[int, bool]:
    """Drop the ``zeta`` smallest-|w| active connections of ``block`` and regrow as many at random
    previously inactive positions (never in ``locked_rows``). Returns ``(count, preserving)``."""
    assert block.mask is not None
    mask = block.mask.clone()
    active = mask.bool()
    inactive = ~active
    if locked_rows is not None and locked_rows.numel():
        active[locked_rows] = False  # frozen units keep their incoming connections as they are
        inactive[locked_rows] = False
    n_active, n_free = int(active.sum()), int(inactive.sum())
    count = min(int(zeta * n_active), n_free)
    if count == 0:
        return 0, True
    with torch.no_grad():
        w = block.weight.view(-1)
        magnitude = torch.where(active.view(-1), w.detach().abs(), torch.full_like(w, float("inf")))
        drop = torch.argsort(magnitude, stable=True)[:count]
        free = inactive.view(-1).nonzero().squeeze(1)
        grow = free[torch.randperm(free.numel(), generator=generator)[:count]]
        preserving = bool((w[drop] == 0).all()) and init == "zero"
        flat = mask.view(-1)
        flat[drop] = 0.0
        flat[grow] = 1.0
        block.mask = mask
        w[drop] = 0.0
        if init == "zero":
            w[grow] = 0.0
        else:
            w[grow] = torch.randn(count, generator=generator, dtype=w.dtype) * std
    return count, preserving


class SET(Connectivity):
    """Erdős-Rényi sparse layers whose weakest connections move to random new places each epoch."""

    name: ClassVar[str] = "set"

    class Config(PrincipleConfig):
        density: float = Field(0.25, gt=0.0, le=1.0, description="fraction of connections present",
                               json_schema_extra={"search": {"low": 0.02, "high": 0.5, "log": True}})
        zeta: float = Field(0.3, ge=0.0, lt=1.0, description="fraction of active connections moved",
                            json_schema_extra={"search": {"low": 0.05, "high": 0.5}})
        every: int = Field(1, ge=1, le=1000, description="rewire at the end of every this many epochs")
        regrow_init: Literal["zero", "normal"] = Field(
            "normal", description="initial value of a regrown weight",
            json_schema_extra={"search": {"choices": ["zero", "normal"]}})
        regrow_std: float = Field(0.1, gt=0.0, le=10.0, description="std of regrown weights ('normal')")
        sparse_output: bool = Field(False, description="also sparsify and rewire the output layer")

    def build(self, spec: NetworkSpec, *, in_features: int, num_classes: int, width_cap: int | None,
              generator: torch.Generator) -> Network:
        widths = capped_widths(spec, in_features, num_classes, width_cap)
        net = Network(widths, activation=spec.activation, max_width=width_cap, generator=generator)
        density, last = self.config.density, net.depth - 1
        for i, block in enumerate(net.layers):
            if i == last and not self.config.sparse_output:
                continue
            sparsify(block, density, generator)
        net._changed()
        return net

    def rewire(self, net: Network, *, epoch: int, generator: torch.Generator) -> list[GrowthEvent]:
        cfg = self.config
        if (epoch + 1) % cfg.every or cfg.zeta == 0:
            return []
        events, last = [], net.depth - 1
        for i, block in enumerate(net.layers):
            if block.mask is None or (i == last and not cfg.sparse_output):
                continue
            frozen = net.frozen.get(i + 1)
            count, preserving = evolve_block(block, cfg.zeta, generator, init=cfg.regrow_init,
                                             std=cfg.regrow_std,
                                             locked_rows=None if frozen is None else frozen.rows)
            if count == 0:
                continue
            active = int(block.mask.sum())
            events.append(GrowthEvent(
                operation="rewire", layer=i + 1, function_preserving=preserving,
                details={"dropped": count, "regrown": count, "block": i, "active": active,
                         "density": active / block.mask.numel(), "init": cfg.regrow_init}))
        if events:
            net._changed()
            net.events.extend(events)
        return events


@hookimpl
def register_connectivities(register):  # type: ignore[no-untyped-def]
    register(SET)
