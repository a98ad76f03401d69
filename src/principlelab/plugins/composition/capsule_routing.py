"""Composition ``capsule_routing``: dynamic routing between capsules (Sabour, Frosst, Hinton 2017).

Catalog N4. The network's last hidden layer ``h`` [B, W] is projected to primary capsules, each
primary capsule predicts every class capsule, and routing by agreement combines the predictions:

- ``u = squash((h @ P.T + p).view(B, N, D))``: N primary capsules of D dims ([B, N, D]);
  ``P`` [N*D, W] is a learned projection owned by the composition (not a fixed grouping of units),
  so growth of the last hidden layer only appends zero columns to ``P`` (function-preserving).
- ``û_{j|i} = W_ij u_i`` with ``W`` [N, C, K, D] gives predictions [B, N, C, K] (K = class dims).
- routing: ``b = 0``; ``routing_iterations`` times: ``c = softmax_j(b)``, ``s_j = Σ_i c_ij û_{j|i}``,
  ``v = squash(s)``, ``b += û·v``; finally ``v = squash(Σ_i softmax_j(b)_ij û_{j|i})``.
- scores [B, C] are the capsule lengths ``‖v_j‖`` in [0, 1); the loss is the margin loss.

The network's own output layer is unused: only the hidden layers are computed (``net.forward_hidden``),
its weights get no gradient, and it is neither charged in MACs nor counted in the run's parameters
(``reads_output_layer = False``). No reconstruction decoder.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from principlelab.core.network import Network, ParamRemap
from principlelab.core.principles import Composition, PrincipleConfig
from principlelab.errors import GrowthError
from principlelab.registry.hookspecs import hookimpl

EPS = 1e-8


def squash(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``(‖s‖² / (1 + ‖s‖²)) · s / ‖s‖`` along ``dim``; any shape, lengths end up in [0, 1)."""
    sq = (s * s).sum(dim, keepdim=True)
    return s * (sq / (1.0 + sq) / torch.sqrt(sq + EPS))


def route(u_hat: torch.Tensor, iterations: int) -> torch.Tensor:
    """Routing by agreement: predictions ``u_hat`` [B, N, C, K] -> class capsules ``v`` [B, C, K].

    ``iterations`` agreement updates of the logits ``b`` [B, N, C] (softmax over the C classes);
    0 is uniform coupling ``c_ij = 1/C``. Sabour et al.'s "r iterations" equals ``iterations = r - 1``
    (their last logit update does not reach the output).
    """
    b = u_hat.new_zeros(u_hat.shape[:3])
    for _ in range(iterations):
        v = squash((b.softmax(2).unsqueeze(-1) * u_hat).sum(1))  # [B, C, K]
        b = b + (u_hat * v.unsqueeze(1)).sum(-1)
    return squash((b.softmax(2).unsqueeze(-1) * u_hat).sum(1))


class CapsuleRouting(Composition):
    """Primary capsules from the last hidden layer, class capsules by dynamic routing, margin loss."""

    name: ClassVar[str] = "capsule_routing"
    reads_output_layer: ClassVar[bool] = False

    class Config(PrincipleConfig):
        primary_capsules: int = Field(16, ge=1, le=1024, description="number N of primary capsules",
                                      json_schema_extra={"search": {"low": 4, "high": 64, "log": True}})
        primary_dim: int = Field(8, ge=1, le=64, description="dimension D of a primary capsule",
                                 json_schema_extra={"search": {"choices": [4, 8, 16]}})
        class_dim: int = Field(16, ge=1, le=128, description="dimension K of a class capsule",
                               json_schema_extra={"search": {"choices": [8, 16, 32]}})
        routing_iterations: int = Field(2, ge=0, le=10,
                                        description="agreement updates (0: uniform coupling; paper r=3 is 2)",
                                        json_schema_extra={"search": {"low": 0, "high": 4}})
        m_plus: float = Field(0.9, gt=0.0, le=1.0, description="margin loss: target length floor")
        m_minus: float = Field(0.1, ge=0.0, lt=1.0, description="margin loss: non-target length ceiling")
        lam: float = Field(0.5, ge=0.0, le=10.0, description="margin loss: down-weight of absent classes",
                           json_schema_extra={"search": {"low": 0.1, "high": 1.0}})
        transform_std: float = Field(1.0, gt=0.0, le=10.0, description="init std of the transforms W_ij",
                                     json_schema_extra={"search": {"low": 0.05, "high": 2.0, "log": True}})

    proj: torch.Tensor  # P [N*D, W]
    proj_bias: torch.Tensor  # p [N*D]
    transforms: torch.Tensor  # W [N, C, K, D]

    def build(self, net: Network, *, num_classes: int, generator: torch.Generator) -> None:
        cfg = self.config
        width, rows = net.widths[-2], cfg.primary_capsules * cfg.primary_dim
        bound = 1.0 / width**0.5
        self.proj = ((torch.rand(rows, width, generator=generator) * 2 - 1) * bound).requires_grad_()
        self.proj_bias = ((torch.rand(rows, generator=generator) * 2 - 1) * bound).requires_grad_()
        shape = (cfg.primary_capsules, num_classes, cfg.class_dim, cfg.primary_dim)
        self.transforms = (torch.randn(shape, generator=generator) * cfg.transform_std).requires_grad_()

    def parameters(self) -> list[torch.Tensor]:
        return [self.proj, self.proj_bias, self.transforms]

    def primary(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        """Primary capsules ``u`` [B, N, D] for ``x`` [B, in_features] (the network's hidden layers only)."""
        hidden = net.forward_hidden(x)
        h = hidden[-1] if hidden else x  # [B, W]; the input itself for a net without hidden layers
        cfg = self.config
        z = torch.nn.functional.linear(h, self.proj, self.proj_bias)
        return squash(z.view(x.shape[0], cfg.primary_capsules, cfg.primary_dim))

    def capsules(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        """Class capsules ``v`` [B, C, K] for ``x`` [B, in_features]."""
        u = self.primary(net, x)
        u_hat = torch.einsum("ncki,bni->bnck", self.transforms, u)  # [B, N, C, K]
        return route(u_hat, self.config.routing_iterations)

    def forward(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        v = self.capsules(net, x)
        return torch.sqrt((v * v).sum(-1) + EPS)  # [B, C] capsule lengths

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Margin loss, summed over classes, mean over the batch; ``scores`` are lengths [B, C]."""
        cfg = self.config
        target = torch.nn.functional.one_hot(y, scores.shape[1]).to(scores.dtype)
        present = torch.relu(cfg.m_plus - scores) ** 2
        absent = torch.relu(scores - cfg.m_minus) ** 2
        return (target * present + cfg.lam * (1 - target) * absent).sum(1).mean()

    def on_growth(self, net: Network, remap: ParamRemap) -> None:
        """Append zero columns to ``P`` for new last-hidden units (the new units start unread)."""
        width, old = net.widths[-2], self.proj
        if width == old.shape[1]:
            return
        if width < old.shape[1]:
            raise GrowthError(f"capsule_routing: the last hidden layer shrank from {old.shape[1]} to {width}")
        pad = torch.zeros(old.shape[0], width - old.shape[1], dtype=old.dtype)
        self.proj = torch.cat([old.detach(), pad], dim=1).requires_grad_()
        remap.record(old, self.proj)

    def forward_macs(self, net: Network) -> int:
        """Projection, transforms, and (iterations + 1) weighted sums plus iterations agreements."""
        n, c, k, d = self.transforms.shape
        r = self.config.routing_iterations
        return int(self.proj.numel() + n * c * k * d + (2 * r + 1) * n * c * k)


@hookimpl
def register_compositions(register):  # type: ignore[no-untyped-def]
    register(CapsuleRouting)
