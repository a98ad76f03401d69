"""Signals: what principles observe, computed once per step and shared.

Cheap signals (the loss, samples and compute spent) are recorded every step without a host sync:
losses stay tensors until someone reads them. Gradient norms are recorded only when a principle
declares ``"grad_norms"`` in ``required_signals``. Per-unit activation statistics are computed on
first request in a step from the hidden activations the network kept, and cached for that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from principlelab.core.network import ACTIVATION_BOUNDS
from principlelab.errors import ConfigError

if TYPE_CHECKING:
    from principlelab.core.network import Network

KNOWN_SIGNALS = frozenset({"loss", "grad_norms", "activation_stats"})


@dataclass(frozen=True)
class LayerStats:
    """Per-unit statistics of one hidden layer over a batch; every tensor is [width].

    ``saturated``/``dead`` are the fractions of the batch in which a unit is saturated (within
    ``eps`` of its activation's bound; for ReLU within ``eps`` of the layer's batch maximum) or dead
    (at most ``dead_eps`` from the activation's floor: 0 for ReLU and sigmoid, -1 for tanh).
    ``top``/``bottom`` mark the units whose mean activation is in the top/bottom ``percentile`` %.
    """

    layer: int
    mean: torch.Tensor
    max_abs: torch.Tensor
    saturated: torch.Tensor
    dead: torch.Tensor
    top: torch.Tensor
    bottom: torch.Tensor


def layer_stats(layer: int, a: torch.Tensor, activation: str, *, eps: float = 0.05, dead_eps: float = 1e-6,
                percentile: float = 5.0) -> LayerStats:
    """Statistics of activations ``a`` [B, width] of hidden layer ``layer`` (see :class:`LayerStats`)."""
    a = a.detach()
    mean = a.mean(0)
    max_abs = a.abs().amax(0)
    bounds = ACTIVATION_BOUNDS[activation]
    if bounds is None:  # ReLU: "saturated" = near the layer's largest activation in this batch
        ceiling = a.amax()
        saturated = (a >= (1 - eps) * ceiling).float().mean(0) if ceiling > 0 else torch.zeros_like(mean)
        floor = 0.0
    else:
        low, high = bounds
        span = high - low
        saturated = ((a <= low + eps * span) | (a >= high - eps * span)).float().mean(0)
        floor = low
    dead = (a <= floor + dead_eps).float().mean(0)
    k = max(1, round(a.shape[1] * percentile / 100))
    order = torch.argsort(mean)
    top = torch.zeros_like(mean, dtype=torch.bool)
    bottom = torch.zeros_like(mean, dtype=torch.bool)
    top[order[-k:]] = True
    bottom[order[:k]] = True
    return LayerStats(layer, mean, max_abs, saturated, dead, top, bottom)


class Signals:
    """The shared observations of one run.

    Args:
        net: the network being trained (its ``hidden`` activations feed ``activation_stats``).
        required: signal names some principle declared (subset of :data:`KNOWN_SIGNALS`).

    Attributes the trainer keeps current (principles read them, never write them):
        epoch, step: the current epoch (from 0) and the number of training steps so far.
        total_epochs, steps_per_epoch: the run's length (for schedules).
        batch_x, batch_y: the latest training batch ``[B, in]`` and its labels ``[B]``.
        epoch_train_losses: the mean training loss of every finished epoch.
        val_losses, val_accuracies: the validation loss and accuracy after every finished epoch.
        samples_seen, train_macs, eval_macs: compute spent so far (``total_macs = train_macs + eval_macs``).
    """

    def __init__(self, net: Network, required: frozenset[str] = frozenset()) -> None:
        unknown = set(required) - KNOWN_SIGNALS
        assert not unknown, f"unknown signals {sorted(unknown)}; known {sorted(KNOWN_SIGNALS)}"
        self.net = net
        self.required = required
        self.wants_grad_norms = "grad_norms" in required
        self.step = 0
        self.epoch = 0
        self.total_epochs: int | None = None  # set by the trainer: the run's length, for schedules
        self.steps_per_epoch: int | None = None
        self.batch_x: torch.Tensor | None = None  # the latest training batch [B, in] and labels [B]
        self.batch_y: torch.Tensor | None = None
        self.samples_seen = 0
        self.train_macs = 0
        self.eval_macs = 0
        self.val_losses: list[float] = []
        self.val_accuracies: list[float] = []
        self.epoch_train_losses: list[float] = []
        self._losses: list[float] = []
        self._epoch_start = 0  # index in _losses of the current epoch's first step
        self._pending_losses: list[torch.Tensor] = []
        self._grad_norms: list[list[float]] = []
        self._pending_grad_norms: list[torch.Tensor] = []
        self._stats_key: tuple[object, ...] | None = None
        self._stats: list[LayerStats] = []

    # ------------------------------------------------------------------ written by the trainer
    def record_step(self, loss: torch.Tensor, batch_size: int, macs: int) -> None:
        """One training step happened: ``loss`` is a detached 0-dim tensor."""
        self.step += 1
        self.samples_seen += batch_size
        self.train_macs += macs
        self._pending_losses.append(loss)

    def record_grad_norms(self, net: Network) -> None:
        """Record the gradient norm of each weight layer (call after backward, before the update)."""
        norms = [b.weight.grad.norm() if b.weight.grad is not None
                 else torch.zeros((), device=b.weight.device) for b in net.layers]
        self._pending_grad_norms.append(torch.stack(norms))

    def close_epoch(self) -> float:
        """Materialise the epoch's losses; return their mean (NaN if the loss diverged)."""
        self._sync()
        epoch = self._losses[self._epoch_start:]
        self._epoch_start = len(self._losses)
        mean = sum(epoch) / len(epoch) if epoch else float("nan")
        self.epoch_train_losses.append(mean)
        return mean

    def _sync(self) -> None:
        if self._pending_losses:
            self._losses.extend(torch.stack(self._pending_losses).tolist())
            self._pending_losses.clear()
        if self._pending_grad_norms:  # one sync; rows differ in length once add_layer ran mid-epoch
            flat = torch.cat(self._pending_grad_norms).tolist()
            at = 0
            for norms in self._pending_grad_norms:
                self._grad_norms.append(flat[at:at + norms.numel()])
                at += norms.numel()
            self._pending_grad_norms.clear()

    # --------------------------------------------------------------------- read by principles
    @property
    def losses(self) -> list[float]:
        """Training loss of every step so far."""
        self._sync()
        return self._losses

    @property
    def last_loss(self) -> float:
        """Training loss of the latest step (NaN before the first)."""
        if self._pending_losses:
            return float(self._pending_losses[-1])
        return self._losses[-1] if self._losses else float("nan")

    @property
    def grad_norms(self) -> list[list[float]]:
        """Per step, the gradient norm of each weight layer.

        Recorded only when a principle of the run declares ``"grad_norms"`` in its
        ``required_signals``; reading it otherwise raises :class:`ConfigError` (it would be empty).
        """
        if not self.wants_grad_norms:
            raise ConfigError("signals.grad_norms was read, but no principle of this run declares 'grad_norms' "
                              "in its required_signals, so none were recorded; add it to the reading principle's "
                              "required_signals")
        self._sync()
        return self._grad_norms

    def activation_stats(self, *, eps: float = 0.05, dead_eps: float = 1e-6,
                         percentile: float = 5.0) -> list[LayerStats]:
        """Per hidden layer statistics of the latest training batch, cached for this step."""
        key = (self.step, self.net.version, eps, dead_eps, percentile)
        if key != self._stats_key:
            hidden = self.net.hidden
            self._stats = [layer_stats(k + 1, a, self.net.activation, eps=eps, dead_eps=dead_eps,
                                       percentile=percentile) for k, a in enumerate(hidden)]
            self._stats_key = key
        return self._stats

    @property
    def total_macs(self) -> int:
        """Compute spent so far: training (forward + backward) plus evaluation forwards."""
        return self.train_macs + self.eval_macs
