"""Connectivity ``set`` (SET, Mocanu et al. 2018): constant density, magnitude drop, random regrowth."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from principlelab.core.network import Network
from principlelab.core.recipe import NetworkSpec, make_recipe
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.plugins.composition.sequential import Sequential
from principlelab.plugins.connectivity.set import SET
from principlelab.plugins.growth.none import NoGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.trigger.never import Never
from principlelab.registry import get_registry
from principlelab.testing import ConnectivityConformance


def build(seed: int = 0, **config: Any) -> Network:
    net = SET(**config).build(NetworkSpec(hidden=(20, 16)), in_features=12, num_classes=4, width_cap=None,
                              generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # distinct magnitudes, as after training
        for block in net.layers:
            gen = torch.Generator().manual_seed(seed + 9)
            block.weight.copy_(torch.randn(block.weight.shape, generator=gen))
    return net


def test_build_masks_density_and_output_layer() -> None:
    net = build(density=0.3)
    assert net.layers[-1].mask is None
    for block in net.layers[:-1]:
        assert block.mask is not None and 0.25 < float(block.mask.mean()) < 0.5  # + one per row, column
    assert all(b.mask is not None for b in build(sparse_output=True).layers)


@pytest.mark.parametrize("zeta", [0.3, 0.5])
def test_rewire_drops_smallest_and_regrows_at_inactive_positions(zeta: float) -> None:
    net = build()
    before = [(b.mask.clone(), b.weight.detach().clone()) for b in net.layers[:-1]]
    version = net.version
    rule = SET(zeta=zeta, regrow_init="zero")
    events = rule.rewire(net, epoch=0, generator=torch.Generator().manual_seed(1))
    assert net.version > version and [e.layer for e in events] == [1, 2]
    assert all(e in net.events for e in events)
    for (mask0, w0), block, event in zip(before, net.layers[:-1], events):
        mask1 = block.mask
        active0, active1 = mask0.bool(), mask1.bool()
        n = int(zeta * int(active0.sum()))
        assert int(active1.sum()) == int(active0.sum())  # density constant
        dropped, regrown = active0 & ~active1, active1 & ~active0
        assert int(dropped.sum()) == n and int(regrown.sum()) == n
        kept = w0.abs()[active0 & active1]
        assert float(w0.abs()[dropped].max()) <= float(kept.min())  # exactly the n smallest |w|
        assert torch.equal(torch.sort(w0.abs()[active0]).values[:n], torch.sort(w0.abs()[dropped]).values)
        assert not (regrown & active0).any()  # only at positions inactive before the rewire
        w1 = block.weight.detach()
        assert (w1[regrown] == 0).all() and (w1[dropped] == 0).all()
        assert torch.equal(w1[active0 & active1], w0[active0 & active1])  # survivors untouched
        assert event.operation == "rewire" and event.details["dropped"] == event.details["regrown"] == n
        assert event.details["active"] == int(active1.sum()) and not event.function_preserving
        assert event.params_delta == 0 and event.macs_delta == 0
    assert net.layers[-1].mask is None  # output layer not rewired


def test_normal_regrowth_every_and_frozen_units() -> None:
    net = build()
    rule = SET(regrow_init="normal", regrow_std=0.5, every=2)
    assert rule.rewire(net, epoch=0, generator=torch.Generator().manual_seed(1)) == []
    net.freeze(1, [0, 3])
    frozen_rows = net.layers[0].mask[[0, 3]].clone()
    mask0 = net.layers[0].mask.clone()
    rule.rewire(net, epoch=1, generator=torch.Generator().manual_seed(1))
    regrown = net.layers[0].mask.bool() & ~mask0.bool()
    assert (net.layers[0].weight.detach()[regrown] != 0).all()
    assert torch.equal(net.layers[0].mask[[0, 3]], frozen_rows)


def test_sparse_output_rewires_the_output_layer() -> None:
    net = build(sparse_output=True)
    events = SET(sparse_output=True).rewire(net, epoch=0, generator=torch.Generator().manual_seed(1))
    assert [e.layer for e in events] == [1, 2, 3]


def test_set_training_on_digits_learns() -> None:
    recipe = make_recipe({"task": "digits", "seed": 0, "network": {"hidden": [64, 64]},
                          "fidelity": {"epochs": 12}})
    task = load_task("digits", fidelity=recipe.fidelity, seed=0)
    rule = SET(density=0.25)
    principles = {"connectivity": rule, "learning": Backprop(), "trigger": Never(), "growth": NoGrowth(),
                  "composition": Sequential()}
    trainer = Trainer(recipe, principles, task)
    active = [int(b.mask.sum()) for b in trainer.net.layers[:-1]]
    result = trainer.run()
    assert result.test_accuracy > 0.85
    assert [int(b.mask.sum()) for b in trainer.net.layers[:-1]] == active
    rewires = [e for e in result.growth_events if e.operation == "rewire"]  # every epoch but the last
    assert len(rewires) == 2 * 11 and {e.slot for e in rewires} == {"connectivity"}
    assert all(e.principle == "set" for e in rewires)


class TestSETConformance(ConnectivityConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return SET


@pytest.mark.parametrize("density", [0.02, 0.25, 1.0])
@pytest.mark.parametrize("name", ["sparse_random", "set"])
def test_sparse_init_keeps_the_dense_pre_activation_variance(name: str, density: float) -> None:
    """Each unit's weights are scaled by its realised fan-in: at density 0.02 the row and column guarantee
    doubles a 64 -> 256 block's density, and scaling by 1/sqrt(density) gave about twice the variance."""
    cls = get_registry().get("connectivity", name)
    net = cls(density=density).build(NetworkSpec(hidden=[256, 256]), in_features=64, num_classes=10,
                                     width_cap=None, generator=torch.Generator().manual_seed(0))
    for block in net.layers[:2]:
        n_in = block.weight.shape[1]
        active = block.weight.detach() * block.mask
        # U(-1/sqrt(n_in), 1/sqrt(n_in)) has variance 1/(3 n_in): a dense row's squares sum to 1/3
        per_unit = (active**2).sum(1)
        assert abs(float(per_unit.mean()) - 1 / 3) < 0.04, (n_in, float(per_unit.mean()))
        assert block.mask.sum(1).min() >= 1
