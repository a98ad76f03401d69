"""Composition ``snapshots``: frozen snapshots taken at growth events, composed coarse to fine.

Catalog P1-P7 and the seed's recommended stack (§5.1): "snapshots at growth events, composed by
progressive residual learning or an ensemble, each evaluable alone". Reading adopted here:

- Every :meth:`on_growth` call with a parameter remap (one per growth event that changed
  parameters; rewiring and snapshot-only events have none) stores a frozen copy
  ``S_k = net.take_snapshot(...)`` of the network *right after* the growth; at most
  ``max_snapshots`` are kept, the first ones (the coarsest; later events add none). For a
  function-preserving operation ``S_k`` computes exactly the function the network had before it.
- ``residual`` (progressive residual learning in function space, P2/P5/P6): the refinements are
  ``R_0 = S_1``, ``R_k = S_{k+1} - S_k`` and the live one ``R_K = live - S_K``; the scores are
  ``Σ_k g_k R_k(x)`` with gates ``g`` (init ``refinement_decay**k``, learnable unless
  ``learn_gates`` is off). When a snapshot is taken the live refinement becomes a frozen one with
  the same gate and the new live refinement is exactly zero, so taking a snapshot never changes
  the output; from then on the live network learns the residual over the frozen composition.
  With every gate at 1 the sum telescopes to ``live(x)``.
- ``ensemble`` (P1/P2 "ensemble = all"): the mean of the snapshots' and the live network's scores.
  The weights of the mean change when a snapshot is added, so this mode jumps at growth events: from
  the second snapshot on, the events that added one are recorded as not function-preserving
  (:meth:`keeps_function`; the first snapshot equals the live network, and the mean of the two is it).

Snapshots run under ``torch.no_grad`` (not trained); their MACs count once per sample, in
:meth:`frozen_forward_macs`, for training steps and evaluation alike, and their parameters count in
the run's ``params`` (:meth:`num_params`): every prediction uses them.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network, ParamRemap, Snapshot
from principlelab.core.principles import Composition, PrincipleConfig
from principlelab.registry.hookspecs import hookimpl

TAG = "composition:snapshots"


class Snapshots(Composition):
    """Live network plus frozen growth-event snapshots, as gated residual refinements or a mean."""

    name: ClassVar[str] = "snapshots"

    class Config(PrincipleConfig):
        mode: Literal["residual", "ensemble"] = Field(
            "residual", description="gated residual refinements coarse to fine, or the mean of all parts",
            json_schema_extra={"search": {"choices": ["residual", "ensemble"]}})
        max_snapshots: int = Field(4, ge=1, le=32, description="snapshots kept (the first growth events)",
                                   json_schema_extra={"search": {"low": 1, "high": 8}})
        refinement_decay: float = Field(
            1.0, gt=0.0, le=1.0, description="initial gate of refinement k is decay**k (P6 uses 0.5)",
            json_schema_extra={"search": {"low": 0.25, "high": 1.0}})
        learn_gates: bool = Field(True, description="train the residual gates (residual mode only)")

    gates: torch.Tensor  # [max_snapshots + 1]; gate k weighs refinement k, the live one is gate K
    snapshots: list[Snapshot]
    reweighted: bool = False  # the last on_growth added a snapshot that moved the ensemble mean's weights

    def build(self, net: Network, *, num_classes: int, generator: torch.Generator) -> None:
        cfg = self.config
        self.snapshots = []
        powers = torch.arange(cfg.max_snapshots + 1, dtype=torch.float32)
        self.gates = (cfg.refinement_decay**powers).requires_grad_(self._trains_gates())

    def _trains_gates(self) -> bool:
        return self.config.mode == "residual" and self.config.learn_gates

    def parameters(self) -> list[torch.Tensor]:
        return [self.gates] if self._trains_gates() else []

    def num_params(self, net: Network) -> int:
        """The snapshots' parameters (frozen, but every prediction runs them) plus the gates in use: one
        per part when they are trained (fixed gates are constants of the config)."""
        gates = len(self.snapshots) + 1 if self._trains_gates() else 0
        return gates + sum(snap.network.num_params() for snap in self.snapshots)

    def on_growth(self, net: Network, remap: ParamRemap) -> None:
        """Store a frozen snapshot of the grown network while fewer than ``max_snapshots`` exist.

        Only for a change of parameters (a ``remap``): the trainer also reports changes that keep
        every parameter's shape (a connectivity rule's rewiring, a growth rule's ``snapshot`` or
        ``freeze`` op), which are not growth."""
        self.reweighted = False
        if not remap or len(self.snapshots) >= self.config.max_snapshots:
            return
        step = net.events[-1].step if net.events else -1
        self.snapshots.append(net.take_snapshot(step=step, tag=f"{TAG}:{len(self.snapshots)}"))
        self.reweighted = self.config.mode == "ensemble" and len(self.snapshots) >= 2

    def keeps_function(self, event: GrowthEvent) -> bool:
        """In ensemble mode, not for the changes whose snapshot was the second or later: the mean's weights
        moved (``(S_1 + ... + S_k + L) / (k + 1)`` became ``(S_1 + ... + S_k + 2 L) / (k + 2)``)."""
        return not self.reweighted

    def _snapshot_scores(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each snapshot's scores [B, C] for ``x`` [B, in_features], without autograd."""
        with torch.no_grad():
            return [snap.network.forward(x) for snap in self.snapshots]

    def _compose(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Scores [B, C] of ``parts`` (snapshot scores, oldest first, then the live one)."""
        if self.config.mode == "ensemble":
            return torch.stack(parts).mean(0)
        out = self.gates[0] * parts[0]
        for k in range(1, len(parts)):
            out = out + self.gates[k] * (parts[k] - parts[k - 1])
        return out

    def forward(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        """Composed scores [B, C] for ``x`` [B, in_features]; leaves ``net.hidden`` of the live net."""
        frozen = self._snapshot_scores(x)
        return self._compose([*frozen, net.forward(x)])

    def evaluate_parts(self, net: Network, x: torch.Tensor) -> list[torch.Tensor]:
        """Each part alone: scores [B, C] of every snapshot (oldest first), then of the live network."""
        kept = net.hidden
        with torch.no_grad():
            parts = [*self._snapshot_scores(x), net.forward(x)]
        net.hidden = kept
        return parts

    def evaluate_levels(self, net: Network, x: torch.Tensor) -> list[torch.Tensor]:
        """The composition truncated after each part, coarse to fine: ``len(snapshots) + 1`` scores
        [B, C]; the last equals :meth:`forward` (adaptive inference, catalog P5)."""
        parts = self.evaluate_parts(net, x)
        with torch.no_grad():
            return [self._compose(parts[:k + 1]) for k in range(len(parts))]

    def frozen_forward_macs(self, net: Network) -> int:
        """The frozen snapshots' forward MACs (the live network's are counted by the trainer; the gates'
        few multiplications are not counted)."""
        return sum(snap.network.forward_macs() for snap in self.snapshots)


@hookimpl
def register_compositions(register):  # type: ignore[no-untyped-def]
    register(Snapshots)
