"""The training loop: parameter accounting, the last epoch, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from principlelab.core.principles import Firing, Trigger
from principlelab.core.recipe import make_recipe
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.registry import get_registry


def trainer_for(**fields) -> Trainer:
    recipe = make_recipe({"task": "digits", "fidelity": {"epochs": 2, "data_fraction": 0.3},
                          "network": {"hidden": [16]}, **fields})
    principles = get_registry().instantiate(recipe)
    return Trainer(recipe, principles, load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed))


HIDDEN_BLOCK = 64 * 16 + 16  # digits [64] -> hidden [16]: weights and biases
OUTPUT_BLOCK = 16 * 10 + 10  # hidden [16] -> 10 classes


def test_params_count_the_composition_and_learning_rule_tensors():
    plain = trainer_for().run()
    assert plain.params == HIDDEN_BLOCK + OUTPUT_BLOCK
    assert plain.forward_macs == 64 * 16 + 16 * 10
    capsules = trainer_for(composition="capsule_routing")
    result = capsules.run()
    head = sum(t.numel() for t in capsules.composition.parameters())
    assert head > 0 and result.params == HIDDEN_BLOCK + head  # its readout never uses the output layer
    assert result.epochs[-1].params == result.params
    assert result.forward_macs == 64 * 16 + capsules.composition.forward_macs(capsules.net)
    ff = trainer_for(learning="forward_forward", composition="snapshots")
    assert ff.composition.parameters()  # trained gates FF never runs: not counted
    result = ff.run()
    embedding = 16 * 10  # E [width_1, classes]
    assert result.params == HIDDEN_BLOCK + embedding


def test_a_readout_without_the_output_layer_does_not_compute_it():
    capsules = trainer_for(composition="capsule_routing")
    def fail() -> torch.Tensor:
        raise AssertionError("the output layer was computed")

    capsules.net.layers[-1].effective_weight = fail  # type: ignore[method-assign]
    scores = capsules.composition.forward(capsules.net, torch.randn(5, 64))
    assert scores.shape == (5, 10) and torch.isfinite(scores).all()
    assert [h.shape[1] for h in capsules.net.hidden] == [16]


class _AlwaysAtEpochEnd(Trigger):
    name = "always_at_epoch_end"

    def __init__(self) -> None:
        super().__init__()
        self.grown: list[int] = []

    def on_step(self, signals):  # type: ignore[no-untyped-def]
        return None

    def on_epoch_end(self, signals):  # type: ignore[no-untyped-def]
        return Firing(reason="every epoch")

    def on_growth(self, events, signals):  # type: ignore[no-untyped-def]
        self.grown.append(len(events))


def test_no_growth_or_rewiring_after_the_last_epoch_and_the_trigger_hears_it():
    trainer = trainer_for(growth="random", connectivity="set")
    trigger = _AlwaysAtEpochEnd()
    trainer.p["trigger"] = trigger
    result = trainer.run()
    assert trigger.grown[-1] == 0 and all(n > 0 for n in trigger.grown[:-1])  # told nothing grew at the end
    assert {e.epoch for e in result.growth_events} == {0}  # growth and rewiring only after epoch 0 of 2


class _EveryStep(_AlwaysAtEpochEnd):
    def on_step(self, signals):  # type: ignore[no-untyped-def]
        return Firing(reason="every step")

    def on_epoch_end(self, signals):  # type: ignore[no-untyped-def]
        return None


def test_no_growth_on_the_last_step_and_the_trigger_hears_it():
    """A step firing on the run's last minibatch grew units that no step trained (quickstart run 89: +2.4%
    params, 2 events); now nothing grows there and the trigger is told so."""
    trainer = trainer_for(growth="random")
    trigger = _EveryStep()
    trainer.p["trigger"] = trigger
    fidelity = trainer.recipe.fidelity
    steps = fidelity.epochs * math.ceil(trainer.task.x_train.shape[0] / fidelity.batch_size)
    result = trainer.run()
    assert len(trigger.grown) == steps and trigger.grown[-1] == 0  # fired every step, told nothing grew at the end
    assert all(n > 0 for n in trigger.grown[:-1])
    assert [e.step for e in result.growth_events] == list(range(1, steps))  # every step but the last grew
    assert result.params == trainer.num_params() and result.structure["widths"] == list(trainer.net.widths)


def test_same_seed_same_weights_different_seed_different():
    first, second, other = trainer_for(seed=5), trainer_for(seed=5), trainer_for(seed=6)
    for t in (first, second, other):
        t.run()
    same = all(torch.equal(a, b) for a, b in zip(first.net.parameters(), second.net.parameters(), strict=True))
    assert same
    assert not torch.equal(first.net.layers[0].weight, other.net.layers[0].weight)


def test_a_trainer_seeds_the_global_generator_as_torch_manual_seed_does():
    """Principles that draw without a generator of their own get the recipe's seed."""
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(0)  # anything else
    trainer_for(seed=123)
    # building the network draws from the trainer's own generators, never from the global one
    assert torch.equal(torch.rand(4), expected)


def test_forward_macs_is_the_learning_rules_inference_cost():
    """forward_forward predicts with one pass per class label; forward_macs read one backprop pass."""
    ff = trainer_for(learning="forward_forward", network={"hidden": [16, 16]})
    result = ff.run()
    first, rest = 64 * 16, 16 * 16  # the first block once, the second once per class label
    assert result.forward_macs == ff.learning.predict_macs_per_sample(ff.net) == first + 10 * rest
    assert ff.net.forward_macs() == first + rest + 16 * 10
    plain = trainer_for()
    assert plain.run().forward_macs == plain.net.forward_macs()


class _ReturnsTrue(_AlwaysAtEpochEnd):
    def on_epoch_end(self, signals):  # type: ignore[no-untyped-def]
        return True


class _GrowsSilently:
    """Grows one unit but returns no event (a plugin mistake)."""

    name = "grows_silently"

    def grow(self, net, signals, generator):  # type: ignore[no-untyped-def]
        net.add_units(1, 1, init="zero", generator=generator)
        return []


class _NineScores:
    """Scores for 9 classes where the task has 10 (a plugin mistake)."""

    name = "nine_scores"

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self.inner = inner

    def forward(self, net, x):  # type: ignore[no-untyped-def]
        return self.inner.forward(net, x)[:, :9]

    def __getattr__(self, attr):  # type: ignore[no-untyped-def]
        return getattr(self.inner, attr)


def test_plugin_mistakes_are_one_line_errors_naming_the_principle():
    """They failed deep inside the loop (IndexError: Target 9 is out of bounds; 'bool' object has no
    attribute 'reason') or, for growth without events, not at all: 0 events recorded for a grown network."""
    from principlelab.errors import PluginError

    trainer = trainer_for()
    trainer.p["trigger"] = _ReturnsTrue()
    with pytest.raises(PluginError, match=r"trigger 'always_at_epoch_end'\.on_epoch_end returned True; return "
                                          r"Firing\(reason\) to grow, or None"):
        trainer.run()
    trainer = trainer_for()
    trainer.p["trigger"], trainer.p["growth"] = _AlwaysAtEpochEnd(), _GrowsSilently()
    with pytest.raises(PluginError, match=r"growth rule 'grows_silently' changed the network \(widths \[64, 16, 10\] "
                                          r"-> \[64, 17, 10\].*but returned no GrowthEvent"):
        trainer.run()
    trainer = trainer_for()
    trainer.composition = trainer.p["composition"] = _NineScores(trainer.composition)
    with pytest.raises(PluginError, match=r"composition 'nine_scores' returned class scores \[2, 9\] for 2 samples; "
                                          r"expected \[2, 10\]"):
        trainer.run()


def test_the_score_check_leaves_the_run_unchanged():
    """The check predicts 2 samples before training: no generator, weight or result may move."""
    torch.manual_seed(7)
    checked = trainer_for(seed=3, learning="forward_forward").run()
    torch.manual_seed(7)
    unchecked = trainer_for(seed=3, learning="forward_forward")
    unchecked._check_scores = lambda x: None  # type: ignore[method-assign]

    def timeless(result):  # type: ignore[no-untyped-def]
        data = result.to_dict()
        return data | {"wall_s": 0, "epochs": [epoch | {"wall_s": 0} for epoch in data["epochs"]]}

    assert timeless(unchecked.run()) == timeless(checked)
