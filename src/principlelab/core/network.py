"""The growable Network every principle acts on.

Units live in *unit layers* ``0..L``: layer 0 is the input, layer ``L`` the output (linear), layers
``1..L-1`` are hidden with one activation. ``layers[i]`` is the weight block from unit layer ``i`` to
``i + 1``; ``skips[(a, b)]`` (``b >= a + 2``) adds ``h_a @ W.T`` to the pre-activation of layer ``b``.
Blocks may carry a 0/1 connectivity ``mask``. Growth operations live in :mod:`growth_ops`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F

from principlelab.core.events import GrowthEvent
from principlelab.core.growth_ops import GrowthOps

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
ACTIVATION_BOUNDS: dict[str, tuple[float, float] | None] = {
    "relu": None, "tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


@dataclass
class Block:
    """One weight block: ``weight`` [out, in], optional ``bias`` [out], optional ``mask`` [out, in]."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def effective_weight(self) -> torch.Tensor:
        """The weight with the connectivity mask applied, [out, in]."""
        return self.weight if self.mask is None else self.weight * self.mask

    def active_weights(self) -> int:
        """Number of connections that exist (mask ones, or all entries when dense)."""
        return self.weight.numel() if self.mask is None else int(self.mask.sum().item())

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]


class ParamRemap:
    """Which parameter tensors growth replaced, for carrying optimizer state over.

    Growth only appends rows/columns, so every old tensor is the leading slice of its replacement
    (``new[:old.shape[0], :old.shape[1]]``). ``added`` lists tensors with no predecessor.
    """

    def __init__(self) -> None:
        self.replaced: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.added: list[torch.Tensor] = []

    def record(self, old: torch.Tensor, new: torch.Tensor) -> None:
        for key, (origin, latest) in self.replaced.items():
            if latest is old:  # grown twice in one growth call: keep the chain's origin
                self.replaced[key] = (origin, new)
                return
        for i, fresh in enumerate(self.added):
            if fresh is old:
                self.added[i] = new
                return
        self.replaced[id(old)] = (old, new)

    def new_for(self, old: torch.Tensor) -> torch.Tensor:
        """The tensor that replaced ``old`` (``old`` itself if it was not replaced)."""
        pair = self.replaced.get(id(old))
        return old if pair is None or pair[0] is not old else pair[1]

    def __bool__(self) -> bool:
        return bool(self.replaced or self.added)


@dataclass
class Snapshot:
    """A frozen copy of the network's structure and weights at one step."""

    step: int
    tag: str
    network: Network


@dataclass
class _Frozen:
    rows: torch.Tensor  # [F] unit indices whose incoming weights are frozen
    values: dict[str, torch.Tensor] = field(default_factory=dict)


class Network(GrowthOps):
    """A growable MLP with masks, skip edges, frozen units and snapshots.

    Args:
        widths: unit-layer widths ``[in_features, *hidden, num_classes]``.
        activation: hidden activation name (``relu``, ``tanh``, ``sigmoid``).
        max_width: cap on every hidden layer's width (growth included); ``None`` for no cap.
        generator: RNG for the initial weights (PyTorch ``nn.Linear`` default init).

    Attributes a principle reads (growth changes them only through the growth operations below):
        widths: the current unit-layer widths (a list; ``widths[k]`` is unit layer ``k``).
        layers: the main weight blocks; ``layers[i]`` feeds unit layer ``i + 1``.
        skips: skip-edge blocks by ``(source unit layer, target unit layer)``.
        hidden: the hidden post-activations ``[B, widths[k]]`` of the latest forward pass.
        frozen, snapshots, events: frozen units by layer, snapshots taken, growth events so far.
        max_width, activation: the width cap (``None``: none) and the hidden activation's name.
    """

    def __init__(self, widths: Sequence[int], *, activation: str = "relu", max_width: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        assert len(widths) >= 2 and all(w >= 1 for w in widths), f"bad widths {list(widths)}"
        assert activation in ACTIVATIONS, f"unknown activation {activation!r}"
        self.widths = list(widths)
        self.activation = activation
        self.max_width = max_width
        self.layers = [self._new_block(widths[i + 1], widths[i], generator) for i in range(len(widths) - 1)]
        self.skips: dict[tuple[int, int], Block] = {}
        self.frozen: dict[int, _Frozen] = {}
        self.snapshots: list[Snapshot] = []
        self.events: list[GrowthEvent] = []
        self.hidden: list[torch.Tensor] = []
        self.version = 0
        self._remap = ParamRemap()
        self._counts: tuple[int, int, int, int, int] | None = None

    # ----------------------------------------------------------------------------- structure
    @property
    def depth(self) -> int:
        """Number of weight layers ``L`` (the output is unit layer ``L``)."""
        return len(self.layers)

    @property
    def hidden_layers(self) -> range:
        """Unit-layer indices of the hidden layers, ``1..L-1``."""
        return range(1, self.depth)

    @staticmethod
    def _new_block(n_out: int, n_in: int, generator: torch.Generator | None, *, bias: bool = True) -> Block:
        bound = 1.0 / n_in**0.5
        weight = (torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound
        b = (torch.rand(n_out, generator=generator) * 2 - 1) * bound if bias else None
        return Block(weight.requires_grad_(), None if b is None else b.requires_grad_())

    def parameters(self) -> list[torch.Tensor]:
        """Every trainable tensor: layer weights and biases, then skip weights (sorted by edge)."""
        params = [t for block in self.layers for t in block.tensors()]
        return params + [self.skips[key].weight for key in sorted(self.skips)]

    def blocks_into(self, layer: int) -> list[tuple[int, Block]]:
        """``(source unit layer, block)`` for every block feeding unit layer ``layer``."""
        found = [(layer - 1, self.layers[layer - 1])]
        return found + [(a, blk) for (a, b), blk in sorted(self.skips.items()) if b == layer]

    def blocks_out_of(self, layer: int) -> list[tuple[int, Block]]:
        """``(target unit layer, block)`` for every block reading unit layer ``layer``."""
        found = [(layer + 1, self.layers[layer])] if layer < self.depth else []
        return found + [(b, blk) for (a, b), blk in sorted(self.skips.items()) if a == layer]

    def _changed(self) -> None:
        self.version += 1
        self._counts = None

    def _counts_now(self) -> tuple[int, int, int, int, int]:
        """``(params, MACs, hidden units, params into the output layer, MACs into the output layer)``."""
        if self._counts is None:
            def count(blocks: list[Block]) -> tuple[int, int]:
                weights = sum(b.active_weights() for b in blocks)
                return weights + sum(b.bias.numel() for b in blocks if b.bias is not None), weights

            params, macs = count([*self.layers, *self.skips.values()])
            out_params, out_macs = count([block for _, block in self.blocks_into(self.depth)])
            self._counts = (params, macs, sum(self.widths[1:-1]), out_params, out_macs)
        return self._counts

    def num_params(self, *, output_layer: bool = True) -> int:
        """Active parameters: existing connections plus biases; ``output_layer=False`` leaves out the
        blocks into the output layer (for a readout that does not use it)."""
        counts = self._counts_now()
        return counts[0] if output_layer else counts[0] - counts[3]

    def forward_macs(self, *, output_layer: bool = True) -> int:
        """Forward multiply-accumulates per sample (one per active connection); ``output_layer=False``
        leaves out the blocks into the output layer."""
        counts = self._counts_now()
        return counts[1] if output_layer else counts[1] - counts[4]

    def num_hidden_units(self) -> int:
        return self._counts_now()[2]

    # ------------------------------------------------------------------------------- compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output scores [B, widths[-1]] for ``x`` [B, widths[0]]; keeps hidden activations.

        ``self.hidden[k - 1]`` is the post-activation [B, widths[k]] of hidden layer ``k``.
        """
        states = self._hidden_states(x)
        return self._pre_activation(self.depth, states)

    def forward_hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden activations only (``self.hidden``, one [B, widths[k]] per hidden layer) for ``x``
        [B, widths[0]]; the output layer is not computed. For a readout that does not use it."""
        return self._hidden_states(x)[1:]

    def _hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[x, h_1, ..., h_{L-1}]``; sets ``self.hidden``."""
        act = ACTIVATIONS[self.activation]
        states = [x]
        for layer in range(1, self.depth):
            states.append(act(self._pre_activation(layer, states)))
        self.hidden = states[1:]
        return states

    def _pre_activation(self, layer: int, states: list[torch.Tensor]) -> torch.Tensor:
        """Pre-activation [B, widths[layer]] of unit layer ``layer`` from the layers below it."""
        block = self.layers[layer - 1]
        z = F.linear(states[layer - 1], block.effective_weight(), block.bias)
        for (a, b), skip in self.skips.items():
            if b == layer:
                z = z + F.linear(states[a], skip.effective_weight())
        return z

    __call__ = forward

    def restore_frozen(self) -> None:
        """Write frozen units' saved incoming weights back (call after every optimizer step)."""
        with torch.no_grad():
            for layer, frozen in self.frozen.items():
                for src, block in self.blocks_into(layer):
                    key = f"w{src}"
                    if key in frozen.values:
                        block.weight[frozen.rows] = frozen.values[key]
                bias = self.layers[layer - 1].bias
                if bias is not None and "b" in frozen.values:
                    bias[frozen.rows] = frozen.values["b"]

    # ------------------------------------------------------------------------------ analysis
    def to_graph(self) -> nx.DiGraph:
        """A DiGraph of units ``(layer, index)`` with an edge per nonzero active weight, weight=|w|."""
        graph = nx.DiGraph()
        for k, width in enumerate(self.widths):
            graph.add_nodes_from(((k, j) for j in range(width)), layer=k)
        edges = [(i, i + 1, blk) for i, blk in enumerate(self.layers)]
        edges += [(a, b, blk) for (a, b), blk in self.skips.items()]
        for a, b, blk in edges:
            w = blk.effective_weight().detach().abs().numpy()
            rows, cols = np.nonzero(w)
            graph.add_weighted_edges_from(
                ((a, int(c)), (b, int(r)), float(w[r, c])) for r, c in zip(rows, cols, strict=True))
        return graph

    def copy(self) -> Network:
        """A deep copy with detached leaf tensors (no shared storage, no autograd history)."""
        twin = copy.copy(self)
        twin.layers = [self._copy_block(b) for b in self.layers]
        twin.skips = {k: self._copy_block(b) for k, b in self.skips.items()}
        twin.frozen = {k: _Frozen(f.rows.clone(), {n: v.clone() for n, v in f.values.items()})
                       for k, f in self.frozen.items()}
        twin.widths = list(self.widths)
        twin.snapshots = list(self.snapshots)
        twin.events = list(self.events)
        twin.hidden = []
        twin._remap = ParamRemap()
        return twin

    @staticmethod
    def _copy_block(block: Block) -> Block:
        def leaf(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().clone().requires_grad_(t.requires_grad)
        mask = None if block.mask is None else block.mask.clone()
        weight = leaf(block.weight)
        assert weight is not None
        return Block(weight, leaf(block.bias), mask)

    def take_snapshot(self, *, step: int, tag: str = "") -> Snapshot:
        """Store and return a frozen copy of the current network (for compositions and reports)."""
        twin = self.copy()
        twin.snapshots = []
        snap = Snapshot(step=step, tag=tag, network=twin)
        self.snapshots.append(snap)
        return snap

    def pop_param_remap(self) -> ParamRemap:
        """The tensors replaced since the last call (the optimizer must follow them)."""
        remap, self._remap = self._remap, ParamRemap()
        return remap

    def describe(self) -> str:
        """One line: widths, skip edges, sparsity and size."""
        skips = ", ".join(f"{a}->{b}" for a, b in sorted(self.skips)) or "none"
        return (f"widths {self.widths}, activation {self.activation}, skips {skips}, "
                f"{self.num_params()} params, {self.forward_macs()} MACs/sample")
