"""Learning rule ``soft_clamp`` (catalog L6): older units take proportionally smaller updates."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from principlelab.core.network import Network
from principlelab.core.recipe import make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.plugins.composition.sequential import Sequential
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.none import NoGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.learning.soft_clamp import SoftClamp, age_scale
from principlelab.plugins.trigger.never import Never
from principlelab.testing import LearningRuleConformance

COMP = Sequential()


def grown_pair(optimizer: str, epoch: int = 5, **config: Any) -> tuple[SoftClamp, Network, Backprop, Network]:
    """A soft-clamp rule whose layer 1 got 3 split units in ``epoch``, and a plain twin network."""
    net = Network([6, 8, 5, 3], generator=torch.Generator().manual_seed(0))
    rule = SoftClamp(optimizer=optimizer, lr=0.05, momentum=0.0, **config)
    rule.setup(net, COMP)
    rule.epoch = epoch
    net.add_units(1, init="split", source_units=[0, 1, 2], noise=0.1,
                  generator=torch.Generator().manual_seed(1))
    rule.on_growth(net, COMP, net.pop_param_remap())
    twin = net.copy()
    plain = Backprop(optimizer=optimizer, lr=0.05, momentum=0.0)
    plain.setup(twin, COMP)
    return rule, net, plain, twin


def one_step(rule: Any, net: Network, epoch: int) -> list[torch.Tensor]:
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 3
    signals = Signals(net)
    signals.epoch = epoch
    before = [p.detach().clone() for p in net.parameters()]
    rule.step(net, COMP, x, y, signals)
    return [p.detach() - b for p, b in zip(net.parameters(), before)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_old_units_take_scaled_updates(optimizer: str) -> None:
    rule, net, plain, twin = grown_pair(optimizer, decay=0.1, min_scale=0.0)
    assert torch.equal(rule.births[0], torch.tensor([0.0] * 8 + [5.0] * 3))
    assert torch.equal(rule.births[1], torch.zeros(5))
    soft, ref = one_step(rule, net, epoch=7), one_step(plain, twin, epoch=7)
    old, new = math.exp(-0.1 * 7), math.exp(-0.1 * 2)  # ages 7 and 2
    w1, b1, w2, _, w3, b3 = range(6)
    torch.testing.assert_close(soft[w1][:8], old * ref[w1][:8])
    torch.testing.assert_close(soft[w1][8:], new * ref[w1][8:])
    torch.testing.assert_close(soft[b1][:8], old * ref[b1][:8])
    # layer 2's units are all old; a weight takes its younger end's scale: the newborn units' outgoing ones
    torch.testing.assert_close(soft[w2][:, :8], old * ref[w2][:, :8])
    torch.testing.assert_close(soft[w2][:, 8:], new * ref[w2][:, 8:])
    torch.testing.assert_close(soft[w3], ref[w3])  # the output layer is not clamped
    torch.testing.assert_close(soft[b3], ref[b3])
    assert float(ref[w1][8:].abs().sum()) > 0 and float(ref[w2].abs().sum()) > 0  # a real comparison


def test_newborn_units_move_more_than_old_ones() -> None:
    rule, net, plain, twin = grown_pair("adam", decay=0.5, min_scale=0.05)
    soft, ref = one_step(rule, net, epoch=5), one_step(plain, twin, epoch=5)
    ratio = soft[0].abs().sum(1) / ref[0].abs().sum(1)
    torch.testing.assert_close(ratio[:8], torch.full((8,), 0.082085), rtol=1e-4, atol=0)  # exp(-2.5)
    torch.testing.assert_close(ratio[8:], torch.ones(3))
    assert age_scale(100, 0.5, 0.05) == 0.05


def test_a_newborn_units_outgoing_weights_learn_at_its_rate() -> None:
    """Scaled by the receiving (old) unit, a new unit's outgoing weights moved at the old rate, and with
    zero outgoing init (function-preserving growth) its incoming weights got no gradient meanwhile."""
    rule, net, plain, twin = grown_pair("sgd", decay=0.5, min_scale=0.05)
    soft, ref = one_step(rule, net, epoch=5), one_step(plain, twin, epoch=5)
    ratio = soft[2].abs().sum(0) / ref[2].abs().sum(0)  # layer 2's weights, per source unit
    torch.testing.assert_close(ratio[:8], torch.full((8,), 0.082085), rtol=1e-4, atol=0)  # exp(-2.5)
    torch.testing.assert_close(ratio[8:], torch.ones(3))  # born in epoch 5: age 0


def test_schedules_and_floor() -> None:
    ages = torch.tensor([0.0, 1.0, 4.0, 100.0])
    exp = SoftClamp(decay=0.25, min_scale=0.1).scale_of(ages)
    torch.testing.assert_close(exp, torch.tensor([1.0, math.exp(-0.25), math.exp(-1.0), 0.1]))
    inv = SoftClamp(decay=0.25, min_scale=0.0, schedule="inverse").scale_of(ages)
    torch.testing.assert_close(inv, torch.tensor([1.0, 0.8, 0.5, 1 / 26]))
    lin = SoftClamp(decay=0.25, min_scale=0.0, schedule="linear").scale_of(ages)
    torch.testing.assert_close(lin, torch.tensor([1.0, 0.75, 0.0, 0.0]))


def test_first_epoch_is_plain_backprop() -> None:
    rule, net, plain, twin = grown_pair("adam", epoch=0)
    soft, ref = one_step(rule, net, epoch=0), one_step(plain, twin, epoch=0)
    for a, b in zip(soft, ref):
        torch.testing.assert_close(a, b)


def test_births_follow_add_layer_and_skips() -> None:
    net = Network([6, 8, 5, 3], generator=torch.Generator().manual_seed(0))
    rule = SoftClamp()
    rule.setup(net, COMP)
    rule.epoch = 3
    net.add_layer(1, generator=torch.Generator().manual_seed(1))  # new hidden layer 2 (width 8)
    net.add_units(3, 2, generator=torch.Generator().manual_seed(2))  # old layer 2, now 3
    net.add_skip(0, 2)
    rule.on_growth(net, COMP, net.pop_param_remap())
    assert [b.tolist() for b in rule.births] == [[0.0] * 8, [3.0] * 8, [0.0] * 5 + [3.0] * 2]
    signals = Signals(net)
    signals.epoch = 4
    skip = net.skips[(0, 2)].weight
    skip_before = skip.detach().clone()
    rule.step(net, COMP, torch.randn(8, 6), torch.arange(8) % 3, signals)
    assert not torch.equal(skip.detach(), skip_before)  # skip weights into a clamped layer still train


def train(learning: Any, epochs: int = 10) -> float:
    recipe = make_recipe({"task": "digits", "seed": 0, "network": {"hidden": [64]},
                          "fidelity": {"epochs": epochs}})
    task = load_task("digits", fidelity=recipe.fidelity, seed=0)
    principles = {"connectivity": Dense(), "learning": learning, "trigger": Never(), "growth": NoGrowth(),
                  "composition": Sequential()}
    return Trainer(recipe, principles, task).run().test_accuracy


def test_soft_clamp_training_learns() -> None:
    assert train(SoftClamp(decay=0.2, min_scale=0.1)) > 0.85


class TestSoftClampConformance(LearningRuleConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return SoftClamp

    @pytest.fixture
    def config(self) -> dict[str, Any]:
        return {"decay": 0.3}
