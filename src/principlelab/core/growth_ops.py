"""The shared growth operations of :class:`~principlelab.core.network.Network`.

Every operation appends (units go after the existing ones, so old tensors are leading slices of
their replacements and optimizer state carries over), records a :class:`GrowthEvent` with its size
and compute delta, and says whether it preserved the network's function.

Unit-adding inits (``add_units``):

- ``zero``: new incoming weights drawn like ``nn.Linear``; outgoing weights zero -> function kept.
- ``clone``: incoming weights copied from ``source_units`` (times ``scale``, plus relative noise);
  outgoing zero -> function kept.
- ``split`` (Net2Wider): incoming copied exactly; each source's outgoing weights divided between the
  source (``1 - r``) and its offspring (``r``), ``r = 0.5 ± noise`` -> function kept exactly, and
  the unequal split breaks the symmetry between the two copies.
- ``relay`` (vertical clone): the new unit in layer ``k`` reads one unit ``j`` of layer ``k - 1``
  (one-hot incoming weight ``scale``) and mirrors it one layer up; outgoing zero -> function kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from principlelab.core.events import GrowthEvent
from principlelab.errors import GrowthError

if TYPE_CHECKING:
    from principlelab.core.network import Block, ParamRemap, Snapshot, _Frozen

UnitInit = Literal["zero", "clone", "split", "relay"]


def _grow(t: torch.Tensor, rows: torch.Tensor | None = None,
          cols: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` with ``rows`` [n, in] appended along dim 0 and/or ``cols`` [out, m] along dim 1."""
    t = t.detach()
    if rows is not None:
        t = torch.cat([t, rows.to(t.dtype)], dim=0)
    if cols is not None:
        t = torch.cat([t, cols.to(t.dtype)], dim=1)
    return t


class GrowthOps:
    """Mixin with the growth operations; see the module docstring for their semantics."""

    if TYPE_CHECKING:
        widths: list[int]
        layers: list[Block]
        skips: dict[tuple[int, int], Block]
        frozen: dict[int, _Frozen]
        events: list[GrowthEvent]
        snapshots: list[Snapshot]
        activation: str
        max_width: int | None
        _remap: ParamRemap

        @property
        def depth(self) -> int: ...
        def num_params(self) -> int: ...
        def forward_macs(self) -> int: ...
        def _changed(self) -> None: ...
        def blocks_into(self, layer: int) -> list[tuple[int, Block]]: ...
        def blocks_out_of(self, layer: int) -> list[tuple[int, Block]]: ...
        def take_snapshot(self, *, step: int, tag: str = "") -> Snapshot: ...
        @staticmethod
        def _new_block(n_out: int, n_in: int, generator: torch.Generator | None, *,
                       bias: bool = True) -> Block: ...

    # --------------------------------------------------------------------------- helpers
    def room(self, layer: int) -> int:
        """How many units hidden layer ``layer`` can still take under ``max_width``."""
        self._check_hidden(layer)
        return 10**9 if self.max_width is None else max(0, self.max_width - self.widths[layer])

    def _check_hidden(self, layer: int) -> None:
        if not 1 <= layer < len(self.widths) - 1:
            raise GrowthError(
                f"layer {layer} is not a hidden layer; hidden layers are 1..{len(self.widths) - 2}")

    def _set(self, block: Block, attr: str, new: torch.Tensor) -> None:
        old = getattr(block, attr)
        fresh = new.requires_grad_() if attr != "mask" else new
        setattr(block, attr, fresh)
        if attr != "mask":
            self._remap.record(old, fresh)

    def _record(self, event: GrowthEvent, params_before: int, macs_before: int) -> GrowthEvent:
        self._changed()
        self._recapture_frozen()
        event.params_delta = self.num_params() - params_before
        event.macs_delta = self.forward_macs() - macs_before
        self.events.append(event)
        return event

    def _recapture_frozen(self) -> None:
        """Re-save frozen units' incoming weights from the current blocks after a structural change.

        Growth can append columns to (``split``: also rescale) the blocks feeding a frozen layer and
        renumber layers (``add_layer``); the saved values must match the blocks ``restore_frozen``
        writes them into. Growth preserves the frozen values themselves, so re-saving loses nothing.
        """
        for layer, frozen in self.frozen.items():
            values = {f"w{a}": block.weight.detach()[frozen.rows].clone()
                      for a, block in self.blocks_into(layer)}
            bias = self.layers[layer - 1].bias
            if bias is not None:
                values["b"] = bias.detach()[frozen.rows].clone()
            frozen.values = values

    @staticmethod
    def _mask_like(block: Block, shape: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
        """A random 0/1 mask with ``block``'s density (ones if the block is dense)."""
        assert block.mask is not None
        density = float(block.mask.mean())
        return (torch.rand(shape, generator=generator) < density).float()

    # ------------------------------------------------------------------------- operations
    def add_units(self, layer: int, n: int = 1, *, init: UnitInit = "zero",
                  source_units: Sequence[int] | None = None, scale: float = 1.0, noise: float = 0.0,
                  generator: torch.Generator | None = None) -> list[GrowthEvent]:
        """Append ``n`` units to hidden layer ``layer`` (``len(source_units)`` for clone/split/relay).

        ``source_units`` index layer ``layer`` for clone/split and layer ``layer - 1`` for relay.
        Returns one event (an empty list when the layer is at its width cap).
        """
        self._check_hidden(layer)
        sources = list(source_units) if source_units is not None else []
        if init != "zero":
            if not sources:
                raise GrowthError(f"init={init!r} needs source_units")
            n = len(sources)
            limit = self.widths[layer - 1] if init == "relay" else self.widths[layer]
            bad = [s for s in sources if not 0 <= s < limit]
            if bad:
                raise GrowthError(f"source units {bad} out of range 0..{limit - 1} for init={init!r}")
        if n < 1:
            raise GrowthError(f"add_units needs n >= 1, got {n}")
        n = min(n, self.room(layer))
        if n == 0:
            return []
        sources = sources[:n]
        params_before, macs_before = self.num_params(), self.forward_macs()
        src = torch.tensor(sources, dtype=torch.long)
        with torch.no_grad():
            self._grow_incoming(layer, n, init, src, scale, noise, generator)
            self._grow_outgoing(layer, n, init, src, noise, generator)
        self.widths[layer] += n
        event = GrowthEvent(operation=f"add_units:{init}", layer=layer, units=n, source_units=tuple(sources),
                            function_preserving=True, details={"scale": scale, "noise": noise})
        return [self._record(event, params_before, macs_before)]

    def _grow_incoming(self, layer: int, n: int, init: UnitInit, src: torch.Tensor, scale: float,
                       noise: float, generator: torch.Generator | None) -> None:
        for a, block in self.blocks_into(layer):
            is_main = a == layer - 1
            n_in = block.weight.shape[1]
            if init in ("clone", "split"):
                rows = block.weight[src].detach().clone()
                if init == "clone":
                    rows = rows * scale
                    if noise:
                        rows = rows * (1 + noise * torch.randn(rows.shape, generator=generator))
                mask_rows = None if block.mask is None else block.mask[src].clone()
            elif init == "relay" and is_main:
                onehot = torch.zeros(n, n_in)
                onehot[torch.arange(n), src] = 1.0
                rows = onehot * scale
                mask_rows = None if block.mask is None else onehot
            elif is_main and init == "zero":
                rows = self._new_block(n, n_in, generator, bias=False).weight.detach()
                mask_rows = None if block.mask is None else self._mask_like(block, (n, n_in), generator)
            else:  # skip edges into a relay/zero unit start at zero and, if masked, closed
                rows = torch.zeros(n, n_in)
                mask_rows = None if block.mask is None else torch.zeros(n, n_in)
            self._set(block, "weight", _grow(block.weight, rows=rows))
            if block.mask is not None and mask_rows is not None:
                self._set(block, "mask", _grow(block.mask, rows=mask_rows))
            if block.bias is not None:
                if init in ("clone", "split"):
                    extra = block.bias[src].detach().clone() * (scale if init == "clone" else 1.0)
                else:
                    extra = torch.zeros(n)
                self._set(block, "bias", _grow(block.bias, rows=extra))

    def _grow_outgoing(self, layer: int, n: int, init: UnitInit, src: torch.Tensor, noise: float,
                       generator: torch.Generator | None) -> None:
        for _, block in self.blocks_out_of(layer):
            n_out = block.weight.shape[0]
            if init == "split":
                ratio = 0.5 + noise * (torch.rand(n, generator=generator) * 2 - 1)  # [n]
                cols = torch.zeros(n_out, n)
                weight = block.weight.detach().clone()
                for i, s in enumerate(src.tolist()):  # sequential: a unit split twice halves twice
                    cols[:, i] = weight[:, s] * ratio[i]
                    weight[:, s] = weight[:, s] * (1 - ratio[i])
                block.weight.data.copy_(weight)
                mask_cols = None if block.mask is None else block.mask[:, src].clone()
            else:
                cols = torch.zeros(n_out, n)
                if block.mask is None:
                    mask_cols = None
                elif init == "clone":
                    mask_cols = block.mask[:, src].clone()
                elif block is not self.layers[layer]:  # a masked skip block (a highway) stays closed
                    mask_cols = torch.zeros(n_out, n)
                else:
                    mask_cols = self._mask_like(block, (n_out, n), generator)
            self._set(block, "weight", _grow(block.weight, cols=cols))
            if block.mask is not None and mask_cols is not None:
                self._set(block, "mask", _grow(block.mask, cols=mask_cols))

    def add_layer(self, after: int, *, generator: torch.Generator | None = None) -> list[GrowthEvent]:
        """Insert a hidden layer right after unit layer ``after`` with identity weights, zero bias.

        Function-preserving when the activation is ReLU and ``after`` is a hidden layer (its values
        are non-negative, so ``relu(I h) = h``); the event says so either way.
        """
        if not 0 <= after < self.depth:
            raise GrowthError(f"add_layer(after={after}) needs 0 <= after < {self.depth}")
        width = self.widths[after]
        if self.max_width is not None and width > self.max_width:
            raise GrowthError(f"a layer of width {width} exceeds the width cap {self.max_width}")
        params_before, macs_before = self.num_params(), self.forward_macs()
        new = self._new_block(width, width, generator)
        with torch.no_grad():
            new.weight.copy_(torch.eye(width))
            assert new.bias is not None
            new.bias.zero_()
        self.layers.insert(after, new)
        self._remap.added.extend(new.tensors())
        self.widths.insert(after + 1, width)

        def shift(k: int) -> int:
            return k + 1 if k > after else k
        self.skips = {(shift(a), shift(b)): blk for (a, b), blk in self.skips.items()}
        self.frozen = {shift(k): f for k, f in self.frozen.items()}
        preserving = self.activation == "relu" and after >= 1
        event = GrowthEvent(operation="add_layer:identity", layer=after + 1, units=width,
                            function_preserving=preserving)
        return [self._record(event, params_before, macs_before)]

    def add_skip(self, src: int, dst: int, *, init: Literal["zero"] = "zero",
                 mask: torch.Tensor | None = None) -> list[GrowthEvent]:
        """Add a zero-initialised skip edge from unit layer ``src`` to ``dst`` (``dst >= src + 2``).

        ``mask`` [widths[dst], widths[src]] (0/1) makes it a sparse block: only those routes exist.
        """
        if not (src >= 0 and src + 2 <= dst <= self.depth):
            raise GrowthError(f"skip {src}->{dst} must satisfy 0 <= src and src + 2 <= dst <= {self.depth}")
        if (src, dst) in self.skips:
            raise GrowthError(f"skip edge {src}->{dst} already exists")
        params_before, macs_before = self.num_params(), self.forward_macs()
        from principlelab.core.network import Block
        shape = (self.widths[dst], self.widths[src])
        if mask is not None and tuple(mask.shape) != shape:
            raise GrowthError(f"skip {src}->{dst} mask has shape {tuple(mask.shape)}, expected {shape}")
        block = Block(torch.zeros(shape).requires_grad_(), mask=None if mask is None else mask.float().clone())
        self.skips[(src, dst)] = block
        self._remap.added.append(block.weight)
        event = GrowthEvent(operation=f"add_skip:{init}", layer=dst, details={"src": src, "dst": dst})
        return [self._record(event, params_before, macs_before)]

    def freeze(self, layer: int, units: Sequence[int]) -> list[GrowthEvent]:
        """Freeze the incoming weights and biases of ``units`` of hidden layer ``layer``.

        Learning rules call ``Network.restore_frozen()`` after each optimizer step. Connections
        that later growth adds into frozen units (new columns, new skip edges) are frozen too.
        """
        self._check_hidden(layer)
        from principlelab.core.network import _Frozen
        old = self.frozen.get(layer)
        rows = torch.tensor(sorted(set(units) | set(old.rows.tolist() if old else [])), dtype=torch.long)
        if rows.numel() and not (int(rows.min()) >= 0 and int(rows.max()) < self.widths[layer]):
            raise GrowthError(
                f"units {list(units)} out of range for layer {layer} of width {self.widths[layer]}")
        frozen = _Frozen(rows)
        for a, block in self.blocks_into(layer):
            frozen.values[f"w{a}"] = block.weight.detach()[rows].clone()
        bias = self.layers[layer - 1].bias
        if bias is not None:
            frozen.values["b"] = bias.detach()[rows].clone()
        self.frozen[layer] = frozen
        event = GrowthEvent(operation="freeze", layer=layer, source_units=tuple(int(u) for u in units))
        return [self._record(event, self.num_params(), self.forward_macs())]

    def snapshot(self, *, step: int, tag: str = "") -> list[GrowthEvent]:
        """Take a snapshot as a growth operation (recorded as an event; structure unchanged)."""
        self.take_snapshot(step=step, tag=tag)
        event = GrowthEvent(operation="snapshot", layer=self.depth,
                            details={"tag": tag, "index": len(self.snapshots) - 1})
        self.events.append(event)
        return [event]
