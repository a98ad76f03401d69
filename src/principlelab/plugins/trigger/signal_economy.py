"""Trigger ``signal_economy``: growth paid for by credits from cheap and expensive signals (catalog T9).

Cheap signals run on a schedule and, when present, add their *value* to one credit account:

- ``spike`` (cost 1, value 10): every ``check_every`` steps, the gradient-norm variance change of
  ``grad_variance`` (windows 10/10, relative change > 0.5; one host sync per check).
- ``plateau`` (cost 1, value 5): every epoch end, the validation loss did not improve on its best
  by ``plateau_min_delta`` (relative). The catalog's "gradient_plateau" row (5 credits) is read as
  this loss plateau, the seed's preferred simple trigger (T3).

The expensive signal ``cit`` (cost 100, value 80; CIT, T8) is *bought* with credits at the price
``cit_cost * exchange_rate`` (default 50, the "consideration" phase), at most
``max_cit_per_cycle`` times between firings, and only if ``value / price >= min_roi``. It runs on
the current training batch's hidden activations; a boundary between hidden layers ``k, k+1`` is
``PR(k+1)/PR(k) < cit_dim_ratio`` (PR: participation ratio of the activation covariance) and
``acc(k+1)/acc(k) > cit_info_ratio`` (acc: nearest-class-mean accuracy of the layer at predicting
the batch's labels, a cheap linear-probe proxy of the seed's MI(layer; target)) and linear CKA
``< cit_max_similarity``. A boundary adds its value (net +30 at the
defaults: growth comes sooner); no boundary loses the price (growth comes later): the purchase
changes the decision both ways. The trigger fires when credits reach ``threshold`` and resets.

Defects of the seed's economy fixed here (catalog T9 [BUG], §5.5): (a) CIT was affordable only at
the firing threshold, so it never changed a decision -> bought below the threshold, its result moves
the credits before the firing check; (b) the ROI rule sum(value)/sum(cost) > 2 made CIT lower ROI
-> ROI is judged per purchase and normalised by cost (``value / price``, break-even 1); (c)
"success" was undefined -> a growth succeeds when the best validation loss of the
``success_epochs`` full epochs after it is below ``(1 - success_min_delta)`` times the validation
loss before it. Every ``revalue_every`` outcomes, each signal that earned credits towards those
firings is revalued ``value *= 0.5 + success_rate`` (AdaptiveGrowthEconomy, 002:7612-7645), kept
within ``max_revaluation`` times its configured value. ``log`` records every earning, purchase,
firing and revaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field

from principlelab.core.events import GrowthEvent
from principlelab.core.principles import Firing, PrincipleConfig, Trigger
from principlelab.core.signals import Signals
from principlelab.plugins.trigger.grad_variance import GradVarianceDetector
from principlelab.plugins.trigger.plateau import PlateauTracker
from principlelab.registry.hookspecs import hookimpl

CHEAP = ("spike", "plateau")


def participation_ratio(a: torch.Tensor) -> float:
    """``(sum lambda)^2 / sum lambda^2`` of the covariance of ``a`` [B, w] (0 if it is constant)."""
    x = a.detach().double() - a.detach().double().mean(0)
    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T  # same nonzero eigenvalues
    fro2 = float((gram * gram).sum())
    return float(gram.trace()) ** 2 / fro2 if fro2 > 0 else 0.0


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA of ``a`` [B, w1] and ``b`` [B, w2] (Kornblith et al. 2019); 0 if either is constant."""
    x = a.detach().double() - a.detach().double().mean(0)
    y = b.detach().double() - b.detach().double().mean(0)
    denom = float(torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y))
    return float(torch.linalg.matrix_norm(y.T @ x)) ** 2 / denom if denom > 0 else 0.0


def centroid_accuracy(a: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the nearest class mean of ``a`` [B, w] at predicting ``labels`` [B]."""
    classes, inverse = torch.unique(labels, return_inverse=True)
    means = torch.zeros(len(classes), a.shape[1], dtype=a.dtype).index_add_(0, inverse, a.detach())
    means /= torch.bincount(inverse, minlength=len(classes)).unsqueeze(1).to(a.dtype)
    return float((torch.cdist(a.detach(), means).argmin(1) == inverse).float().mean())


@dataclass
class CitResult:
    """One CIT check: whether some adjacent pair of hidden layers is a boundary, and the numbers."""

    boundary: bool
    summary: str


def cit_check(hidden: list[torch.Tensor], labels: torch.Tensor, dim_ratio: float, info_ratio: float,
              max_similarity: float) -> CitResult:
    """The CIT test on every adjacent pair of ``hidden`` activations (each [B, w_k]) of one batch
    whose labels are ``labels`` [B]."""
    hidden = [h.detach() for h in hidden]
    prs = [participation_ratio(h) for h in hidden]
    accs = [centroid_accuracy(h, labels) for h in hidden]
    parts, found = [], []
    for k in range(len(hidden) - 1):
        if prs[k] <= 0 or accs[k] <= 0:
            continue
        d, i = prs[k + 1] / prs[k], accs[k + 1] / accs[k]
        s = linear_cka(hidden[k], hidden[k + 1])
        parts.append(f"{k + 1}->{k + 2}: dim {d:.2f} info {i:.2f} cka {s:.2f}")
        if d < dim_ratio and i > info_ratio and s < max_similarity:
            found.append(f"{k + 1}->{k + 2}")
    verdict = f"boundary at {', '.join(found)}" if found else "no boundary"
    return CitResult(bool(found), f"{verdict} ({'; '.join(parts) or 'no comparable pair'})")


class SignalEconomy(Trigger):
    """Fires when credits from cheap signals (and bought CIT checks) reach ``threshold``."""

    name: ClassVar[str] = "signal_economy"
    required_signals: ClassVar[frozenset[str]] = frozenset({"loss", "grad_norms", "activation_stats"})

    class Config(PrincipleConfig):
        threshold: float = Field(100.0, gt=0.0, le=1e6, description="credits at which growth fires",
                                 json_schema_extra={"search": {"low": 50.0, "high": 300.0, "log": True}})
        check_every: int = Field(10, ge=1, le=1000, description="steps between cheap spike checks (one sync)")
        recent_window: int = Field(10, ge=2, le=1000, description="spike: steps in the recent window")
        past_window: int = Field(10, ge=2, le=1000, description="spike: steps in the past window")
        spike_threshold: float = Field(0.5, gt=0.0, le=100.0, description="spike: relative variance change",
                                       json_schema_extra={"search": {"low": 0.1, "high": 5.0, "log": True}})
        spike_value: float = Field(10.0, ge=0.0, le=1e6, description="credits per gradient spike")
        spike_cost: float = Field(1.0, ge=0.0, le=1e6, description="compute units per spike check")
        plateau_value: float = Field(5.0, ge=0.0, le=1e6, description="credits per plateau epoch")
        plateau_cost: float = Field(1.0, ge=0.0, le=1e6, description="compute units per plateau check")
        plateau_min_delta: float = Field(0.01, ge=0.0, lt=1.0, description="plateau: relative improvement "
                                         "of the validation loss that does not count as a plateau")
        cit_value: float = Field(80.0, ge=0.0, le=1e6, description="credits a CIT boundary adds",
                                 json_schema_extra={"search": {"low": 20.0, "high": 160.0}})
        cit_cost: float = Field(100.0, gt=0.0, le=1e6, description="compute units of one CIT check")
        exchange_rate: float = Field(0.5, gt=0.0, le=10.0, description="credits paid per compute unit "
                                     "when buying CIT (price = cit_cost * exchange_rate)",
                                     json_schema_extra={"search": {"low": 0.1, "high": 0.9}})
        max_cit_per_cycle: int = Field(1, ge=0, le=100, description="CIT buys between firings (0: never)",
                                       json_schema_extra={"search": {"low": 0, "high": 3}})
        min_roi: float = Field(1.0, ge=0.0, le=100.0, description="buy CIT only if value / price >= this")
        cit_dim_ratio: float = Field(0.7, gt=0.0, le=10.0, description="CIT: PR(k+1)/PR(k) must be below")
        cit_info_ratio: float = Field(0.9, ge=0.0, le=10.0, description="CIT: acc(k+1)/acc(k) must be above")
        cit_max_similarity: float = Field(1.0, gt=0.0, le=1.0, description="CIT: linear CKA must be below "
                                          "(the seed's 0.5; 1.0 disables the condition)")
        revalue: bool = Field(True, description="revalue signals by the success of the growth they caused")
        revalue_every: int = Field(3, ge=1, le=100, description="outcomes of a signal per revaluation",
                                   json_schema_extra={"search": {"low": 1, "high": 10}})
        success_epochs: int = Field(1, ge=1, le=100, description="full epochs after a growth that are judged")
        success_min_delta: float = Field(0.0, ge=0.0, lt=1.0, description="relative val-loss improvement "
                                         "that counts as success")
        max_revaluation: float = Field(10.0, ge=1.0, le=1000.0, description="values stay within this "
                                       "factor of their configured value")
        max_firings: int = Field(100, ge=1, le=100_000, description="stop firing after this many")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.base = {"spike": cfg.spike_value, "plateau": cfg.plateau_value, "cit": cfg.cit_value}
        self.values = dict(self.base)
        self.cost = {"spike": cfg.spike_cost, "plateau": cfg.plateau_cost, "cit": cfg.cit_cost}
        self.credits = 0.0
        self.earned: dict[str, float] = {}  # credits earned per signal this cycle
        self.cit_bought = 0  # purchases this cycle
        self.compute_spent = 0.0
        self.fired = 0
        self.log: list[dict[str, Any]] = []
        self.outcomes: dict[str, list[bool]] = {s: [] for s in self.base}
        self.pending: list[dict[str, Any]] = []  # growths awaiting their outcome
        self._fired_with: dict[str, float] | None = None
        self.detector = GradVarianceDetector(cfg.recent_window, cfg.past_window, 1e-12)
        self.plateau = PlateauTracker(cfg.plateau_min_delta)

    # ------------------------------------------------------------------------------ state
    @property
    def price(self) -> float:
        """Credits one CIT check costs."""
        return self.config.cit_cost * self.config.exchange_rate

    @property
    def phase(self) -> str:
        """The seed's phases (002:7706-7722) at 30/70/100 % of the threshold."""
        share = self.credits / self.config.threshold
        return ("accumulation" if share < 0.3 else "consideration" if share < 0.7
                else "anticipation" if share < 1 else "growth")

    def _entry(self, signals: Signals, kind: str, signal: str, before: float, cost: float,
               reason: str) -> None:
        self.log.append({"step": signals.step, "epoch": signals.epoch, "kind": kind, "signal": signal,
                         "credits_before": before, "credits_after": self.credits, "cost": cost,
                         "reason": reason})

    def _earn(self, signals: Signals, signal: str, reason: str) -> None:
        before, value = self.credits, self.values[signal]
        self.credits += value
        self.earned[signal] = self.earned.get(signal, 0.0) + value
        self._entry(signals, "earn", signal, before, 0.0, f"+{value:g}: {reason}")

    # ----------------------------------------------------------------------------- hooks
    def on_step(self, signals: Signals) -> Firing | None:
        if signals.step % self.config.check_every:
            return None
        self.compute_spent += self.cost["spike"]
        measured = self.detector.measure(signals)
        if measured is not None and measured[0] > self.config.spike_threshold:
            self._earn(signals, "spike", f"grad-norm variance changed by {measured[0]:.2f}")
        return self._settle(signals)

    def on_epoch_end(self, signals: Signals) -> Firing | None:
        self._resolve_outcomes(signals)
        if signals.val_losses:
            self.compute_spent += self.cost["plateau"]
            had_best = self.plateau.best < float("inf")
            if not self.plateau.update(signals.val_losses[-1]) and had_best:
                self._earn(signals, "plateau", f"val loss {signals.val_losses[-1]:.4g} did not improve on "
                           f"{self.plateau.best:.4g} by {self.config.plateau_min_delta:.0%}")
        return self._settle(signals)

    def on_growth(self, events: list[GrowthEvent], signals: Signals) -> None:
        self.detector.restart(signals)
        self.plateau.reset()
        if events and self._fired_with:
            before = signals.val_losses[-1] if signals.val_losses else None
            self.pending.append({"epoch": signals.epoch, "step": signals.step, "before": before,
                                 "signals": sorted(self._fired_with)})
        self._fired_with = None

    # ----------------------------------------------------------------------------- economy
    def _settle(self, signals: Signals) -> Firing | None:
        """Buy CIT if affordable and worth it, then fire if the credits reach the threshold."""
        cfg = self.config
        if (self.cit_bought < cfg.max_cit_per_cycle and self.credits >= self.price
                and self.values["cit"] / self.price >= cfg.min_roi and self.cit_available(signals)):
            before, phase = self.credits, self.phase
            self.credits -= self.price
            self.cit_bought += 1
            self.compute_spent += self.cost["cit"]
            result = self.run_cit(signals)
            self._entry(signals, "purchase", "cit", before, self.price,
                        f"{phase} phase, ROI {self.values['cit'] / self.price:.2f}: {result.summary}")
            if result.boundary:
                self._earn(signals, "cit", result.summary)
        if self.credits < cfg.threshold or self.fired >= cfg.max_firings:
            return None
        before, earned = self.credits, {k: v for k, v in self.earned.items() if v > 0}
        parts = ", ".join(f"{k} {v:g}" for k, v in sorted(earned.items()))
        reason = (f"credits {before:g} >= {cfg.threshold:g} (earned: {parts}; CIT bought {self.cit_bought}x "
                  f"for {self.cit_bought * self.price:g}); compute spent {self.compute_spent:g}")
        self.credits, self.earned, self.cit_bought = 0.0, {}, 0
        self.fired += 1
        self._fired_with = earned
        self._entry(signals, "firing", "+".join(sorted(earned)), before, 0.0, reason)
        return Firing(reason=reason)

    def cit_available(self, signals: Signals) -> bool:
        """CIT needs two hidden layers' activations of a labelled batch of at least 3 samples."""
        hidden, labels = signals.net.hidden, signals.batch_y
        return (len(hidden) >= 2 and hidden[0].shape[0] >= 3 and labels is not None
                and labels.shape[0] == hidden[0].shape[0])

    def run_cit(self, signals: Signals) -> CitResult:
        """The expensive check on the latest training batch (override in tests or to plug in another probe)."""
        cfg = self.config
        assert signals.batch_y is not None  # cit_available
        return cit_check(signals.net.hidden, signals.batch_y, cfg.cit_dim_ratio, cfg.cit_info_ratio,
                         cfg.cit_max_similarity)

    def _resolve_outcomes(self, signals: Signals) -> None:
        """Judge growths whose ``success_epochs`` full epochs are over; revalue their signals."""
        cfg, waiting = self.config, []
        for growth in self.pending:
            if signals.epoch < growth["epoch"] + cfg.success_epochs:
                waiting.append(growth)
                continue
            after = min(signals.val_losses[-cfg.success_epochs:])
            if growth["before"] is None or not cfg.revalue:
                continue
            success = after < growth["before"] * (1 - cfg.success_min_delta)
            for signal in growth["signals"]:
                self.outcomes[signal].append(success)
                if len(self.outcomes[signal]) >= cfg.revalue_every:
                    self._revalue(signals, signal)
        self.pending = waiting

    def _revalue(self, signals: Signals, signal: str) -> None:
        results = self.outcomes[signal]
        rate = sum(results) / len(results)
        old, base, cap = self.values[signal], self.base[signal], self.config.max_revaluation
        self.values[signal] = min(base * cap, max(base / cap, old * (0.5 + rate)))
        self.outcomes[signal] = []
        self.log.append({"step": signals.step, "epoch": signals.epoch, "kind": "revaluation",
                         "signal": signal, "credits_before": self.credits, "credits_after": self.credits,
                         "cost": 0.0, "reason": f"success rate {rate:.2f} over {len(results)} growths: "
                         f"value {old:g} -> {self.values[signal]:g}"})


@hookimpl
def register_triggers(register):  # type: ignore[no-untyped-def]
    register(SignalEconomy)
