"""Triggers grad_variance (T2), plateau (T3) and signal_economy (T9) on constructed signal streams."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.principles import Firing
from principlelab.core.recipe import make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.plugins.composition.sequential import Sequential
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.random import RandomGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.trigger.grad_variance import GradVariance, variance_change
from principlelab.plugins.trigger.plateau import Plateau
from principlelab.plugins.trigger.signal_economy import (
    CitResult,
    SignalEconomy,
    centroid_accuracy,
    cit_check,
    participation_ratio,
)
from principlelab.testing import TriggerConformance

LOW = [1.0, 1.2]  # period 2: every 10-step window has variance 0.01
HIGH = [1.0, 2.0]  # variance 0.25


def _net() -> Network:
    net = Network([4, 6, 5, 3], generator=torch.Generator().manual_seed(0))
    net.forward(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)))  # keeps hidden activations
    return net


def _signals(required: frozenset[str] = frozenset()) -> Signals:
    """Signals of :func:`_net` with the labels of its kept batch of 12."""
    signals = Signals(_net(), required)
    signals.batch_y = torch.arange(12) % 3
    return signals


def push(signals: Signals, g: float) -> None:
    """One step whose global gradient norm is ``g``."""
    net = signals.net
    for block in net.layers:
        block.weight.grad = torch.zeros_like(block.weight)
    net.layers[0].weight.grad[0, 0] = g
    signals.record_grad_norms(net)
    signals.record_step(torch.tensor(1.0), 8, 0)


def regimes(*blocks: list[float], length: int = 10) -> list[float]:
    """Blocks of ``length`` steps, each repeating its pattern."""
    return [pattern[i % len(pattern)] for pattern in blocks for i in range(length)]


def run_steps(trigger: Any, norms: list[float], signals: Signals | None = None) -> list[tuple[int, Firing]]:
    signals = signals or _signals(frozenset(trigger.required_signals))
    fired = []
    for g in norms:
        push(signals, g)
        firing = trigger.on_step(signals)
        if firing is not None:
            fired.append((signals.step, firing))
            trigger.on_growth([], signals)
    return fired


# ------------------------------------------------------------------------------------- T2
def test_variance_change_formula() -> None:
    assert variance_change([1.0] * 5, 10, 10) is None
    change, recent, past = variance_change(regimes(LOW, HIGH), 10, 10)
    assert recent == pytest.approx(0.25) and past == pytest.approx(0.01)
    assert change == pytest.approx(24.0)


def test_grad_variance_silent_on_stationary_stream() -> None:
    trigger = GradVariance()
    assert run_steps(trigger, regimes(LOW, LOW, LOW, LOW, LOW, LOW, LOW, LOW)) == []
    assert len(trigger.history) == 7 and all(c == pytest.approx(0.0, abs=1e-9) for _, c in trigger.history)


def test_grad_variance_fires_on_variance_jump() -> None:
    fired = run_steps(GradVariance(), regimes(LOW, LOW, LOW, HIGH, HIGH))
    assert [step for step, _ in fired] == [40]  # first check whose recent window is all HIGH
    assert "24.00" in fired[0][1].reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_grad_variance_does_not_fire_on_a_non_finite_norm(bad: float) -> None:
    """A NaN change compared False with the threshold, so the trigger fired ('changed by nan');
    signal_economy's spike test already did not."""
    stream = regimes(LOW, LOW, LOW, LOW, LOW)
    stream[35] = bad
    assert run_steps(GradVariance(), stream) == []
    assert run_steps(SignalEconomy(), stream) == []


def test_grad_variance_respects_stabilization() -> None:
    stream = regimes(LOW, LOW, LOW, HIGH, HIGH, HIGH, LOW, LOW, LOW, LOW, LOW)  # jumps at 30 and 60
    assert [s for s, _ in run_steps(GradVariance(stabilization_steps=0), stream)] == [40, 70]
    assert [s for s, _ in run_steps(GradVariance(stabilization_steps=50), stream)] == [40]


def test_grad_variance_warmup_and_check_every() -> None:
    stream = regimes(LOW, HIGH, HIGH, HIGH)
    assert [s for s, _ in run_steps(GradVariance(), stream)] == [20]
    assert run_steps(GradVariance(warmup_steps=20), stream) == []
    fired = run_steps(GradVariance(check_every=7), stream)  # step 21: steps 12..21 vs 2..11
    assert [s for s, _ in fired] == [21]


# ------------------------------------------------------------------------------------- T3
def epochs(trigger: Any, losses: list[float], metric: str = "val_loss") -> list[int]:
    signals = _signals(frozenset(trigger.required_signals))
    fired = []
    for epoch, loss in enumerate(losses):
        signals.epoch = epoch
        (signals.val_losses if metric == "val_loss" else signals.epoch_train_losses).append(loss)
        if trigger.on_epoch_end(signals) is not None:
            fired.append(epoch)
            trigger.on_growth([], signals)
    return fired


def test_plateau_silent_while_improving() -> None:
    assert epochs(Plateau(), [0.95**k for k in range(15)]) == []


def test_plateau_fires_after_patience_then_cools_down() -> None:
    losses = [1.0, 0.8, 0.7] + [0.7] * 9
    assert epochs(Plateau(patience=3, cooldown=2), losses) == [5, 10]
    assert epochs(Plateau(patience=3, cooldown=0), losses) == [5, 8, 11]
    assert epochs(Plateau(patience=1, cooldown=0, max_firings=2), losses) == [3, 4]


def test_plateau_min_delta_is_relative() -> None:
    creeping = [1.0, 0.995, 0.992, 0.991, 0.9905]  # never 1 % below the best
    assert epochs(Plateau(patience=3, min_delta=0.01), creeping) == [3]
    assert epochs(Plateau(patience=3, min_delta=0.001), creeping) == []


def test_plateau_on_train_loss() -> None:
    assert epochs(Plateau(patience=2, metric="train_loss"), [1.0, 1.0, 1.0], "train_loss") == [2]
    assert epochs(Plateau(patience=2), [1.0, 1.0, 1.0], "train_loss") == []  # watches val_loss only


# ------------------------------------------------------------------------------------- T9
class StubCit(SignalEconomy):
    """The economy with a fixed CIT answer, counting purchases."""

    def __init__(self, boundary: bool, **config: Any) -> None:
        super().__init__(**config)
        self.boundary, self.calls = boundary, 0

    def run_cit(self, signals: Signals) -> CitResult:
        self.calls += 1
        return CitResult(self.boundary, "stub boundary" if self.boundary else "stub: no boundary")


ALTERNATING = regimes(*([LOW, HIGH] * 10))  # every check from step 20 on sees a spike


def test_economy_credits_accumulate_as_specified() -> None:
    eco = SignalEconomy(max_cit_per_cycle=0)
    signals = _signals(frozenset(eco.required_signals))
    credits = []
    for g in ALTERNATING[:90]:
        push(signals, g)
        assert eco.on_step(signals) is None
        if signals.step % 10 == 0:
            credits.append(eco.credits)
    assert credits == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert eco.phase == "anticipation" and eco.compute_spent == 9  # 9 spike checks at cost 1
    for epoch, loss in enumerate([1.0, 1.0, 0.5, 0.5]):  # plateau: no 1 % gain on the best
        signals.epoch = epoch
        signals.val_losses.append(loss)
        eco.on_epoch_end(signals)
    assert eco.credits == 90 and eco.earned == {"spike": 80, "plateau": 10}
    earns = [e for e in eco.log if e["kind"] == "earn"]
    assert [e["signal"] for e in earns] == ["spike"] * 8 + ["plateau"] * 2
    gains = [e["credits_after"] - e["credits_before"] for e in earns]
    assert gains == [10] * 8 + [5] * 2


def test_economy_fires_at_threshold_and_resets() -> None:
    eco = SignalEconomy(max_cit_per_cycle=0)
    fired = run_steps(eco, ALTERNATING)
    assert [s for s, _ in fired][:1] == [110]  # 10 spikes x 10 credits
    assert "credits 100 >= 100 (earned: spike 100; CIT bought 0x" in fired[0][1].reason
    firing = next(e for e in eco.log if e["kind"] == "firing")
    assert firing["credits_before"] == 100 and firing["credits_after"] == 0 and firing["step"] == 110


def test_economy_buys_cit_only_when_affordable() -> None:
    eco = StubCit(boundary=True)
    signals = _signals(frozenset(eco.required_signals))
    for g in ALTERNATING[:59]:
        push(signals, g)
        eco.on_step(signals)
    assert eco.calls == 0 and eco.credits == 40  # price 100 * 0.5 = 50 not reached
    push(signals, ALTERNATING[59])
    eco.on_step(signals)
    assert eco.calls == 1
    purchase = next(e for e in eco.log if e["kind"] == "purchase")
    assert purchase == {**purchase, "step": 60, "signal": "cit", "credits_before": 50, "credits_after": 0,
                        "cost": 50}
    assert purchase["reason"].startswith("consideration phase, ROI 1.60: stub boundary")
    assert eco.credits == 80 and eco.compute_spent == 6 + 100  # 6 spike checks, one CIT
    assert StubCit(boundary=True, exchange_rate=0.9).price == 90
    never = StubCit(boundary=True, min_roi=2.0)  # 80 / 50 = 1.6 < 2: not worth buying
    run_steps(never, ALTERNATING[:100])
    assert never.calls == 0


def test_cit_changes_the_decision_both_ways() -> None:
    without = run_steps(SignalEconomy(max_cit_per_cycle=0), ALTERNATING)[0][0]
    enabled = run_steps(StubCit(boundary=True), ALTERNATING)[0][0]
    vetoed_eco = StubCit(boundary=False)
    vetoed = run_steps(vetoed_eco, ALTERNATING)[0][0]
    assert (enabled, without, vetoed) == (80, 110, 160)  # 5 spikes buy CIT: +80 or -50
    assert vetoed_eco.calls == 1  # once per cycle
    firing = next(e for e in vetoed_eco.log if e["kind"] == "firing")
    assert "CIT bought 1x for 50" in firing["reason"] and "spike 150" in firing["reason"]


def test_cit_unavailable_with_one_hidden_layer() -> None:
    eco = SignalEconomy()
    net = Network([4, 6, 3], generator=torch.Generator().manual_seed(0))
    net.forward(torch.randn(8, 4))
    assert not eco.cit_available(Signals(net))
    assert eco.cit_available(_signals())


def _class_layers(labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``h1`` [90, 16]: high-dimensional with the class of ``labels`` in it; ``h2`` [90, 8]: collapsed
    onto the class directions."""
    offsets = torch.randn(3, 16, generator=gen)
    h1 = torch.randn(90, 16, generator=gen) + offsets[labels]
    h2 = torch.zeros(90, 8)
    h2[torch.arange(90), labels] = 5.0
    return h1, h2


def test_cit_check_on_constructed_layers() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    h1, h2 = _class_layers(labels, gen)  # the dimension collapses, the information is kept
    assert participation_ratio(h2) == pytest.approx(2.0, rel=1e-6)  # 3 centred class points
    assert participation_ratio(h1) > 3 * participation_ratio(h2)  # about 8 vs 2
    assert centroid_accuracy(h2, labels) == 1.0 and centroid_accuracy(h1, labels) > 0.9
    assert cit_check([h1, h2], labels, 0.7, 0.9, 1.0).boundary
    assert not cit_check([h1, h2], labels, 0.7, 0.9, 0.01).boundary  # the seed's similarity condition can veto
    result = cit_check([h2, h2], labels, 0.7, 0.9, 1.0)  # no collapse
    assert not result.boundary and "dim 1.00" in result.summary


def test_cit_measures_information_about_the_batch_labels_not_the_output_layer() -> None:
    """A readout that does not use the output layer (capsules, forward-forward) leaves it untrained:
    its argmax says nothing about the task. CIT asks what each layer knows about the true labels."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    other = torch.randperm(90, generator=gen) % 3  # what an untrained output layer might "predict"
    h1, _ = _class_layers(labels, gen)
    _, h2 = _class_layers(other, gen)  # collapsed onto directions that carry no information on labels
    net = Network([4, 16, 8, 3], generator=gen)
    with torch.no_grad():  # an output layer that reads h2's directions: its argmax is ``other``
        net.layers[-1].weight.zero_()
        net.layers[-1].weight[:, :3] = torch.eye(3)
        net.layers[-1].bias.zero_()
    net.hidden = [h1, h2]
    signals = Signals(net)
    signals.batch_y = labels
    eco = SignalEconomy()
    assert eco.cit_available(signals)
    result = eco.run_cit(signals)
    assert not result.boundary and "info 0." in result.summary  # the task information is lost at h2
    assert eco.run_cit(_with_labels(signals, other)).boundary  # measured against ``other`` it is kept
    signals.batch_y = None
    assert not eco.cit_available(signals)


def _with_labels(signals: Signals, labels: torch.Tensor) -> Signals:
    signals.batch_y = labels
    return signals


def grow_and_judge(eco: SignalEconomy, after: float) -> SignalEconomy:
    """Fire on spikes in epoch 2 (val loss 1.0), grow, then judge with epoch 3's val loss ``after``."""
    signals = _signals(frozenset(eco.required_signals))
    signals.epoch, signals.val_losses = 2, [1.1, 1.0, 1.0]
    for g in ALTERNATING[:110]:
        push(signals, g)
        if eco.on_step(signals) is not None:
            eco.on_growth([GrowthEvent(operation="add_units:zero", layer=1, units=2)], signals)
    assert eco.fired == 1 and eco.pending == [{"epoch": 2, "step": 110, "before": 1.0, "signals": ["spike"]}]
    signals.epoch = 3
    signals.val_losses.append(after)
    eco.on_epoch_end(signals)
    assert eco.pending == []
    return eco


def test_revaluation_after_success_and_failure() -> None:
    good = grow_and_judge(SignalEconomy(max_cit_per_cycle=0, revalue_every=1), after=0.8)
    assert good.values["spike"] == 15.0 and good.values["cit"] == 80.0
    entry = next(e for e in good.log if e["kind"] == "revaluation")
    assert entry["signal"] == "spike" and "10 -> 15" in entry["reason"]
    bad = grow_and_judge(SignalEconomy(max_cit_per_cycle=0, revalue_every=1), after=1.2)
    assert bad.values["spike"] == 5.0
    strict = grow_and_judge(SignalEconomy(max_cit_per_cycle=0, revalue_every=1, success_min_delta=0.3),
                            after=0.8)  # 0.8 is not 30 % below 1.0
    assert strict.values["spike"] == 5.0
    waiting = grow_and_judge(SignalEconomy(max_cit_per_cycle=0, revalue_every=2), after=0.8)
    assert waiting.values["spike"] == 10.0 and waiting.outcomes["spike"] == [True]
    frozen = grow_and_judge(SignalEconomy(max_cit_per_cycle=0, revalue_every=1, revalue=False), after=0.8)
    assert frozen.values["spike"] == 10.0


def test_economy_in_training_logs_and_grows() -> None:
    recipe = make_recipe({"task": "digits", "seed": 0, "network": {"hidden": [32, 32]},
                          "fidelity": {"epochs": 6, "data_fraction": 0.5}})
    eco = SignalEconomy(threshold=30, check_every=5)
    principles = {"connectivity": Dense(), "learning": Backprop(), "trigger": eco,
                  "growth": RandomGrowth(units=4), "composition": Sequential()}
    result = Trainer(recipe, principles, load_task("digits", fidelity=recipe.fidelity, seed=0)).run()
    firings = [e for e in eco.log if e["kind"] == "firing"]
    assert firings and result.growth_events
    assert {e.reason for e in result.growth_events} <= {f["reason"] for f in firings}
    assert result.val_accuracy > 0.5


# ------------------------------------------------------------------------------- conformance
class TestGradVarianceConformance(TriggerConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return GradVariance

    @pytest.fixture
    def config(self) -> dict[str, Any]:
        return {"stabilization_steps": 20}


class TestPlateauConformance(TriggerConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return Plateau


class TestSignalEconomyConformance(TriggerConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return SignalEconomy

    @pytest.fixture
    def config(self) -> dict[str, Any]:
        return {"threshold": 30}
