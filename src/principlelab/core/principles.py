"""The five principle interfaces: Connectivity, LearningRule, Trigger, GrowthRule, Composition.

Each is a small ABC with one to three abstract methods and no-op lifecycle hooks (the shape of
Optuna's ``BaseSampler``/``BasePruner``). A principle class has a registry key ``name`` and a nested
pydantic ``Config`` whose fields carry defaults, bounds (``ge``/``le``/``gt``/``lt``) and search hints
(``json_schema_extra={"search": {"low": .., "high": .., "log": ..}}`` or ``{"choices": [...]}``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from principlelab.errors import ConfigError, format_validation_error

if TYPE_CHECKING:
    from principlelab.core.events import GrowthEvent
    from principlelab.core.network import Network, ParamRemap
    from principlelab.core.recipe import NetworkSpec
    from principlelab.core.signals import Signals


class PrincipleConfig(BaseModel):
    """Base of every principle's ``Config``: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Principle(ABC):
    """Common base: a registry ``name``, a ``slot``, a validated ``config``.

    ``incompatible_with`` maps a slot to principle names this one cannot run with; the registry
    rejects such recipes before any training (and the search space never samples them twice).
    """

    name: ClassVar[str]
    slot: ClassVar[str]
    incompatible_with: ClassVar[dict[str, frozenset[str]]] = {}
    Config: ClassVar[type[PrincipleConfig]] = PrincipleConfig

    def __init__(self, config: PrincipleConfig | dict[str, Any] | None = None, **overrides: Any) -> None:
        self.config = self.validate_config({**(dict(config) if config else {}), **overrides})

    @classmethod
    def validate_config(cls, values: dict[str, Any] | PrincipleConfig) -> Any:
        """The class's ``Config`` from a dict; a bad field raises a one-line :class:`ConfigError`."""
        if isinstance(values, cls.Config):
            return values
        try:
            return cls.Config(**dict(values))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(f"{cls.slot}.{cls.name}", exc, cls.Config)) from None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({fields})"


class Connectivity(Principle):
    """Decides the initial wiring (weights and masks) and, optionally, rewires each epoch."""

    slot: ClassVar[str] = "connectivity"

    @abstractmethod
    def build(self, spec: NetworkSpec, *, in_features: int, num_classes: int,
              width_cap: int | None, generator: torch.Generator) -> Network:
        """A new :class:`Network` with widths ``[in_features, *spec.hidden (capped), num_classes]``."""

    def rewire(self, net: Network, *, epoch: int, generator: torch.Generator) -> list[GrowthEvent]:
        """Called at the end of every epoch; return the events of any rewiring (default: none)."""
        return []


class LearningRule(Principle):
    """Decides how weights change each step and how a prediction is read out.

    A rule with its own readout sets ``uses_composition = False`` (the composition is built but never
    run, trained or counted) and, if that readout never uses the network's output layer,
    ``reads_output_layer = False`` (the blocks into the output layer are then not counted in the run's
    parameters). Otherwise the composition's ``reads_output_layer`` decides.
    """

    slot: ClassVar[str] = "learning"
    uses_composition: ClassVar[bool] = True
    """False for a rule with its own readout: the composition is built but never run, trained or counted."""
    reads_output_layer: ClassVar[bool] = True
    """False when the rule's predictions never use the network's output layer (the blocks into it): those
    are then not counted in the run's parameters. With :attr:`uses_composition`, the composition decides."""

    def counts_output_layer(self, composition: Composition) -> bool:
        """Whether the run's predictions use the network's output layer (so its parameters and, in the
        default MAC counts, its multiply-accumulates count)."""
        if not self.reads_output_layer:
            return False
        return composition.reads_output_layer if self.uses_composition else True

    @abstractmethod
    def setup(self, net: Network, composition: Composition) -> None:
        """Create optimizer state for ``net`` and ``composition`` parameters."""

    @abstractmethod
    def step(self, net: Network, composition: Composition, x: torch.Tensor, y: torch.Tensor,
             signals: Signals) -> torch.Tensor:
        """One update on a batch ``x`` [B, in_features], ``y`` [B] (int64 class ids).

        Returns the batch loss as a detached 0-dim tensor (never ``.item()``: no host sync). A rule
        that reads gradients calls ``signals.record_grad_norms(net)`` when ``signals.wants_grad_norms``.
        """

    def predict(self, net: Network, composition: Composition, x: torch.Tensor) -> torch.Tensor:
        """Class scores [B, num_classes] for ``x`` [B, in_features]; default: the composition."""
        return composition.forward(net, x)

    def evaluate(self, net: Network, composition: Composition, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, predicted classes)`` on held-out ``x`` [B, in], ``y`` [B]: 0-dim and [B] int64.

        Default: the composition's loss of :meth:`predict`'s scores and their argmax. Called
        under ``torch.no_grad``.
        """
        scores = self.predict(net, composition, x)
        return composition.loss(scores, y), scores.argmax(1)

    def macs_per_sample(self, net: Network, composition: Composition) -> int:
        """Training multiply-accumulates per sample: forward plus backward (about 2x forward) of what is
        trained, and one forward pass of the composition's frozen parts."""
        network = net.forward_macs(output_layer=self.counts_output_layer(composition))
        return 3 * (network + composition.forward_macs(net)) + composition.frozen_forward_macs(net)

    def parameters(self) -> list[torch.Tensor]:
        """Trainable tensors the rule owns beyond the network's (e.g. a label embedding); default none."""
        return []

    def eval_macs_per_sample(self, net: Network, composition: Composition) -> int:
        """Multiply-accumulates per evaluated sample (default: one forward pass of everything)."""
        network = net.forward_macs(output_layer=self.counts_output_layer(composition))
        return network + composition.forward_macs(net) + composition.frozen_forward_macs(net)

    def on_growth(self, net: Network, composition: Composition, remap: ParamRemap) -> None:
        """The network changed shape: carry optimizer state of existing weights over (see remap)."""

    def keeps_function(self, event: GrowthEvent) -> bool:
        """Whether this rule's predictions are unchanged by ``event``, a structural change just made; the
        trainer records the answer as the event's ``function_preserving``. Default: the event's own claim,
        which is about the network's output. A rule whose readout reads more than that overrides it."""
        return event.function_preserving


@dataclass(frozen=True)
class Firing:
    """A trigger's decision to grow now, with a human-readable reason."""

    reason: str


class Trigger(Principle):
    """Decides when to grow. Declares the signals it reads so the trainer computes only those."""

    slot: ClassVar[str] = "trigger"
    required_signals: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def on_step(self, signals: Signals) -> Firing | None:
        """Called after every step; return a :class:`Firing` to grow now."""

    def on_epoch_end(self, signals: Signals) -> Firing | None:
        """Called after every epoch's evaluation; return a :class:`Firing` to grow now."""
        return None

    def on_growth(self, events: list[GrowthEvent], signals: Signals) -> None:
        """The growth this trigger caused happened (``events`` may be empty if nothing grew)."""


class GrowthRule(Principle):
    """Decides where to grow and what to add, through the network's shared growth operations."""

    slot: ClassVar[str] = "growth"
    required_signals: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        """Apply growth operations to ``net``; return their events (empty: nothing grew)."""


class Composition(Principle):
    """Decides how the network's parts combine into the output, and the training loss.

    A composition whose scores never use the network's output layer (it reads ``net.hidden`` after
    ``net.forward_hidden(x)``) sets ``reads_output_layer = False``: the blocks into the output layer are
    then neither charged in MACs nor counted in the run's parameters. The conformance tests check the
    declaration against the gradients.
    """

    slot: ClassVar[str] = "composition"
    reads_output_layer: ClassVar[bool] = True
    """False for a readout that never uses the network's output layer (the blocks into it): it then calls
    ``net.forward_hidden``, and those blocks are neither charged in MACs nor counted in parameters."""

    def build(self, net: Network, *, num_classes: int, generator: torch.Generator) -> None:
        """Create any parameters of the composition itself (default: none)."""

    def parameters(self) -> list[torch.Tensor]:
        """Trainable tensors owned by the composition (default: none)."""
        return []

    def num_params(self, net: Network) -> int:
        """Parameters of the composition the predictions use, counted in the run's ``params``: by default
        every entry of :meth:`parameters`; a composition with frozen parts (copies of the network) adds
        theirs, and one whose tensors have unused entries leaves those out."""
        return sum(t.numel() for t in self.parameters())

    @abstractmethod
    def forward(self, net: Network, x: torch.Tensor) -> torch.Tensor:
        """Class scores [B, num_classes] for input ``x`` [B, in_features]."""

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss (0-dim) of ``scores`` [B, C] against ``y`` [B]; default cross-entropy."""
        return torch.nn.functional.cross_entropy(scores, y)

    def on_growth(self, net: Network, remap: ParamRemap) -> None:
        """The network changed shape; resize the composition's own parameters if needed."""

    def keeps_function(self, event: GrowthEvent) -> bool:
        """Whether the composed scores are unchanged by ``event`` (one of the changes just reported to
        :meth:`on_growth`) when the network's own are; the trainer records an event as function-preserving
        only if the learning rule and the composition both say so. Default: yes."""
        return True

    def forward_macs(self, net: Network) -> int:
        """Multiply-accumulates per sample of the composition's own trained parameters (default 0); a
        training step pays them about 3 times (forward and backward)."""
        return 0

    def frozen_forward_macs(self, net: Network) -> int:
        """Multiply-accumulates per sample of the parts the composition runs without gradients (frozen
        copies of the network; default 0); a training step pays them once."""
        return 0


PRINCIPLE_BASES: dict[str, type[Principle]] = {
    "connectivity": Connectivity,
    "learning": LearningRule,
    "trigger": Trigger,
    "growth": GrowthRule,
    "composition": Composition,
}
"""The ABC of each slot."""
