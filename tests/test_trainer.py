"""The training loop: parameter accounting, the last epoch, reproducibility."""

from __future__ import annotations

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


def test_params_count_the_composition_and_learning_rule_tensors():
    capsules = trainer_for(composition="capsule_routing")
    result = capsules.run()
    head = sum(t.numel() for t in capsules.composition.parameters())
    assert head > 0 and result.params == capsules.net.num_params() + head
    assert result.epochs[-1].params == result.params
    ff = trainer_for(learning="forward_forward")
    result = ff.run()
    embedding = 16 * 10  # E [width_1, classes]
    assert result.params == ff.net.num_params() + embedding


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
