"""Learning rule ``forward_forward``: Hinton's Forward-Forward algorithm (arXiv 2212.13345, 2022).

Every hidden layer is trained on its own, with no gradient crossing layers, to give a high
*goodness* ``g = sum_j h_j**2`` (its activations squared, summed over its units) on *positive* data
and a low goodness on *negative* data. The supervised variant is used: positive data is an input
with its correct label embedded, negative data the same input with a wrong label drawn uniformly
from the other classes. A class is predicted by embedding each label in turn and picking the one
with the highest goodness accumulated over the hidden layers.

Pieces, per step on a batch ``x`` [B, D], ``y`` [B] (see docs/principles/learning_forward_forward.md):

- **Label embedding.** The rule owns a weight ``E`` [width_1, C]; the first hidden layer's
  pre-activation is ``norm(x) @ W1.T + label_scale * E[:, label] + b1``. This is exactly a first
  layer reading the input with a one-hot label (times ``label_scale``) concatenated, with the
  weight ``[W1 | E]``; the network keeps ``in_features = D`` and ``E`` lives here. ``E`` follows
  the growth of hidden layer 1 (new units get zero label columns) and is trained with ``W1``.
- **Normalisation.** The input of every layer is length-normalised and detached: ``h / (|h| + eps)
  * sqrt(dim)`` by default (unit length, then rescaled to a root-mean-square of 1 per component),
  so the next layer sees only the direction of the previous layer's activity and no gradient flows
  back. The raw input is normalised by ``input_norm`` the same way before the label is added.
- **Loss.** Per hidden layer ``k`` with ``theta_k = theta_per_unit * width_k``: ``mean_B
  softplus(theta_k - g_pos) + mean_B softplus(g_neg - theta_k)`` (the logistic loss of
  ``p(positive) = sigmoid(g - theta_k)``). The step's loss is the sum over layers; its backward
  gives each layer its own gradient only, because every layer's input is detached.
- **Prediction.** Scores [B, C] are, for each label c, the goodness summed over hidden layers
  (the first left out when ``skip_first_layer_goodness`` and there are at least two). All C labels
  run as one batch of C*B rows after a shared first-layer matmul. :meth:`evaluate`'s loss is the
  cross-entropy of these scores taken as logits.

The network's output layer (its last weight block) and skip edges into it are not used and not
trained, nor counted in the run's parameters; skip edges into hidden layers are (by the target
layer's local loss, reading the detached, normalised source layer; a skip from the input reads
``norm(x)`` without the label). The composition is ignored (FF has its own readout) and its
parameters are not counted.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.network import ACTIVATIONS, Block, Network, ParamRemap
from principlelab.core.optim import migrate_optimizer
from principlelab.core.principles import Composition, LearningRule, PrincipleConfig
from principlelab.core.signals import Signals
from principlelab.plugins.learning.backprop import _adamw, _fusable
from principlelab.registry.hookspecs import hookimpl

Norm = Literal["unit_sqrt_dim", "unit", "none"]
NORM_EPS = 1e-6
PREDICT_ROWS = 16384
"""Most rows (samples times labels) one prediction pass runs at once."""


def normalise(h: torch.Tensor, mode: str) -> torch.Tensor:
    """Each row of ``h`` [N, d] scaled to unit length (``unit``), then by ``sqrt(d)`` (``unit_sqrt_dim``).

    ``none`` returns ``h`` unchanged. The epsilon keeps an all-zero row at zero.
    """
    if mode == "none":
        return h
    scaled = h / (h.norm(dim=1, keepdim=True) + NORM_EPS)
    return scaled * h.shape[1] ** 0.5 if mode == "unit_sqrt_dim" else scaled


def goodness(h: torch.Tensor) -> torch.Tensor:
    """``sum_j h_j**2`` per row of ``h`` [N, width]: [N]."""
    return h.square().sum(1)


def layer_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float) -> torch.Tensor:
    """``mean softplus(theta - g_pos) + mean softplus(g_neg - theta)`` (0-dim)."""
    return F.softplus(theta - g_pos).mean() + F.softplus(g_neg - theta).mean()


class ForwardForward(LearningRule):
    """Hinton's Forward-Forward: layer-local goodness losses, label embedding, goodness readout."""

    name: ClassVar[str] = "forward_forward"
    uses_composition: ClassVar[bool] = False  # FF has its own readout
    reads_output_layer: ClassVar[bool] = False
    incompatible_with: ClassVar[dict[str, frozenset[str]]] = {
        "composition": frozenset({"capsule_routing"})}  # routing needs end-to-end gradients

    class Config(PrincipleConfig):
        lr: float = Field(3e-3, gt=0.0, le=1.0, description="AdamW learning rate of every hidden layer",
                          json_schema_extra={"search": {"low": 5e-4, "high": 1e-2, "log": True}})
        weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="decoupled (AdamW) weight decay",
                                    json_schema_extra={"search": {"choices": [0.0, 1e-5, 1e-4, 1e-3, 1e-2]}})
        theta_per_unit: float = Field(
            0.2, gt=0.0, le=100.0, description="goodness threshold per unit: theta_k = this * width_k",
            json_schema_extra={"search": {"low": 0.05, "high": 1.0, "log": True}})
        label_scale: float = Field(
            1.0, gt=0.0, le=100.0, description="value of the one-hot label entry (before E)",
            json_schema_extra={"search": {"low": 0.3, "high": 5.0, "log": True}})
        input_norm: Norm = Field("unit_sqrt_dim", description="normalisation of the raw input x",
                                 json_schema_extra={"choices": ["unit_sqrt_dim", "unit", "none"]})
        hidden_norm: Norm = Field(
            "unit_sqrt_dim", description="normalisation of each hidden layer's output before the next",
            json_schema_extra={"choices": ["unit_sqrt_dim", "unit"]})
        skip_first_layer_goodness: bool = Field(
            False, description="leave hidden layer 1 out of the prediction (only with >= 2 hidden layers)",
            json_schema_extra={"choices": [False, True]})
        seed: int | None = Field(
            None, ge=0, le=2**63 - 1,
            description="seed of the negative labels; None: torch.initial_seed() at setup (the run's seed)")

    optimizer: torch.optim.Optimizer
    embedding: torch.Tensor
    generator: torch.Generator

    # ------------------------------------------------------------------------------- state
    def _params(self, net: Network) -> list[torch.Tensor]:
        """``E``, then the blocks into hidden layers (weights, biases, skip edges), in net order."""
        out = net.depth
        params = [self.embedding]
        params += [t for block in net.layers[:-1] for t in block.tensors()]
        return params + [net.skips[key].weight for key in sorted(net.skips) if key[1] < out]

    def setup(self, net: Network, composition: Composition) -> None:
        cfg = self.config
        seed = cfg.seed if cfg.seed is not None else torch.initial_seed()
        self.generator = torch.Generator().manual_seed(seed)
        width, classes = net.widths[1], net.widths[-1]
        assert classes >= 2, f"forward_forward needs at least 2 classes for negative labels, got {classes}"
        bound = 1.0 / classes**0.5  # nn.Linear's init for the C label inputs
        init = torch.Generator().manual_seed((seed + 1) % 2**64)
        embedding = (torch.rand(width, classes, generator=init) * 2 - 1) * bound
        self.embedding = embedding.to(net.layers[0].weight).requires_grad_()
        self._first_block: Block = net.layers[0]
        self.optimizer = _adamw(self._params(net), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def on_growth(self, net: Network, composition: Composition, remap: ParamRemap) -> None:
        """Grow ``E`` with hidden layer 1 (zero rows for new units) and carry the optimizer state."""
        ours = ParamRemap()
        ours.replaced, ours.added = dict(remap.replaced), list(remap.added)
        old, width = self.embedding, net.widths[1]
        if net.layers[0] is not self._first_block:  # add_layer(after=0): a new first layer
            self._first_block = net.layers[0]
            self.embedding = old.new_zeros(width, old.shape[1]).requires_grad_()
            ours.added.append(self.embedding)
        elif old.shape[0] != width:
            assert old.shape[0] < width, f"hidden layer 1 shrank from {old.shape[0]} to {width} units"
            rows = old.new_zeros(width - old.shape[0], old.shape[1])
            self.embedding = torch.cat([old.detach(), rows]).requires_grad_()
            ours.record(old, self.embedding)
        params = self._params(net)
        migrate_optimizer(self.optimizer, ours, params)
        group = self.optimizer.param_groups[0]
        if group.get("fused") and not _fusable(params):
            group["fused"] = False

    def keeps_function(self, event: GrowthEvent) -> bool:
        """Only a change that adds no unit keeps FF's scores: a new unit adds its own activity to its layer's
        goodness, and the next layer reads its layer normalised over the new width, whatever its init (zero
        outgoing weights included). So ``add_units`` and ``add_layer`` change the predictions; a zero skip
        edge or highway, a freeze and a snapshot do not."""
        return event.function_preserving and event.units == 0

    # ------------------------------------------------------------------------------ compute
    def _first_base(self, net: Network, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(norm(x) [B, D], norm(x) @ W1.T + b1 [B, width_1])``; the label term is added later."""
        x0 = normalise(x, self.config.input_norm)
        block = net.layers[0]
        return x0, F.linear(x0, block.effective_weight(), block.bias)

    def _hidden(self, net: Network, x0: torch.Tensor, z1: torch.Tensor) -> list[torch.Tensor]:
        """Post-activations of every hidden layer given ``norm(x)`` [N, D] and layer 1's pre-activation.

        Each layer reads the detached, normalised output of the layers feeding it (``x0`` is the
        input's state, without the label), so gradients stay inside their layer.
        """
        act = ACTIVATIONS[net.activation]
        mode = self.config.hidden_norm
        hidden = [act(z1)]
        states = [x0, normalise(hidden[0].detach(), mode)]
        for k in range(2, net.depth):
            z = None
            for a, block in net.blocks_into(k):
                bias = block.bias if a == k - 1 else None
                term = F.linear(states[a], block.effective_weight(), bias)
                z = term if z is None else z + term
            assert z is not None
            hidden.append(act(z))
            if k < net.depth - 1:
                states.append(normalise(hidden[-1].detach(), mode))
        return hidden

    def _label_term(self, labels: torch.Tensor) -> torch.Tensor:
        """``label_scale * E[:, labels].T``: [N, width_1] (the one-hot columns of ``[W1 | E]``)."""
        return self.config.label_scale * self.embedding.t()[labels]

    def step(self, net: Network, composition: Composition, x: torch.Tensor, y: torch.Tensor,
             signals: Signals) -> torch.Tensor:
        classes = net.widths[-1]
        offset = torch.randint(1, classes, y.shape, generator=self.generator).to(y.device)
        wrong = (y + offset) % classes  # uniform over the C - 1 wrong labels
        self.optimizer.zero_grad(set_to_none=True)
        x0, base = self._first_base(net, x)
        z1 = torch.cat([base, base]) + self._label_term(torch.cat([y, wrong]))
        hidden = self._hidden(net, torch.cat([x0, x0]), z1)
        batch = x.shape[0]
        losses = []
        for k, h in enumerate(hidden, start=1):
            g = goodness(h)
            losses.append(layer_loss(g[:batch], g[batch:], self.config.theta_per_unit * net.widths[k]))
        loss = torch.stack(losses).sum()  # each layer's gradient is its own loss's: inputs are detached
        loss.backward()
        if signals.wants_grad_norms:
            signals.record_grad_norms(net)
        frozen_rows = net.frozen[1].rows if 1 in net.frozen else None
        kept = self.embedding.detach()[frozen_rows].clone() if frozen_rows is not None else None
        self.optimizer.step()
        if net.frozen:
            net.restore_frozen()
            if kept is not None:
                with torch.no_grad():
                    self.embedding[frozen_rows] = kept
        net.hidden = [h.detach()[:batch] for h in hidden]  # positive pass: for activation statistics
        return loss.detach()

    def predict(self, net: Network, composition: Composition, x: torch.Tensor) -> torch.Tensor:
        """Goodness [B, C] of every label, summed over the hidden layers (see the module docstring).

        All labels run as one batch of C*B rows; ``x`` is cut so a batch stays under
        :data:`PREDICT_ROWS` rows (bounding the memory of large evaluation chunks).
        """
        step = max(1, PREDICT_ROWS // net.widths[-1])
        if x.shape[0] > step:
            return torch.cat([self._predict(net, x[i:i + step]) for i in range(0, x.shape[0], step)])
        return self._predict(net, x)

    def _predict(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        classes, batch = net.widths[-1], x.shape[0]
        x0, base = self._first_base(net, x)
        label = self.config.label_scale * self.embedding.t()  # [C, width_1]
        z1 = (base.unsqueeze(0) + label.unsqueeze(1)).reshape(classes * batch, -1)  # class-major rows
        hidden = self._hidden(net, x0.repeat(classes, 1), z1)
        if self.config.skip_first_layer_goodness and len(hidden) > 1:
            hidden = hidden[1:]
        total = torch.stack([goodness(h) for h in hidden]).sum(0)  # [C*B]
        return total.reshape(classes, batch).t()

    def evaluate(self, net: Network, composition: Composition, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the goodness scores as logits, and their argmax."""
        scores = self.predict(net, composition, x)
        return F.cross_entropy(scores, y), scores.argmax(1)

    # ------------------------------------------------------------------------------ compute cost
    @staticmethod
    def _hidden_macs(net: Network) -> tuple[int, int]:
        """``(first block MACs, MACs of every other block into a hidden layer)`` per sample."""
        first = net.layers[0].active_weights()
        rest = sum(b.active_weights() for b in net.layers[1:-1])
        rest += sum(b.active_weights() for (_, dst), b in net.skips.items() if dst < net.depth)
        return first, rest

    def macs_per_sample(self, net: Network, composition: Composition) -> int:
        """Training MACs per sample: ``2 * (first + 2 * rest) + 2 * width_1``.

        Forward: the first block once (its matmul is shared by the positive and the negative
        copy), every other hidden block twice (positive and negative). Backward: weight gradients
        only (every layer's input is detached, so no input gradient is computed), the same count
        again. The label embedding adds one column per pass (``width_1`` per copy). The output
        layer is never run in training.
        """
        first, rest = self._hidden_macs(net)
        return 2 * (first + 2 * rest) + 2 * net.widths[1]

    def parameters(self) -> list[torch.Tensor]:
        """The label embedding E [width_1, C] (the network's own tensors are counted by the network)."""
        embedding = getattr(self, "embedding", None)
        return [] if embedding is None else [embedding]

    def eval_macs_per_sample(self, net: Network, composition: Composition) -> int:
        """Evaluation runs one pass per class label (see :meth:`predict_macs_per_sample`)."""
        return self.predict_macs_per_sample(net)

    def predict_macs_per_sample(self, net: Network) -> int:
        """Prediction MACs per sample: the first block once, every other hidden block C times."""
        first, rest = self._hidden_macs(net)
        return first + net.widths[-1] * rest


@hookimpl
def register_learning_rules(register):  # type: ignore[no-untyped-def]
    register(ForwardForward)
