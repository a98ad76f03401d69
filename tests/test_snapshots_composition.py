"""Composition ``snapshots``: continuity at growth, parts alone, ensemble mean, learning with growth."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from principlelab.core.network import Network
from principlelab.core.recipe import make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.plugins.composition import snapshots as snapshots_module
from principlelab.plugins.composition.snapshots import TAG, Snapshots
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.random import RandomGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.trigger.every_k import EveryK
from principlelab.registry import get_registry
from principlelab.testing import CompositionConformance


def _setup(**config: Any) -> tuple[Snapshots, Network, Backprop, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    net = Network([6, 10, 8, 3], generator=gen)
    comp, rule = Snapshots(config), Backprop(lr=2e-2)
    comp.build(net, num_classes=3, generator=gen)
    rule.setup(net, comp)
    x = torch.randn(24, 6, generator=gen)
    return comp, net, rule, x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _train(comp: Snapshots, net: Network, rule: Backprop, x: torch.Tensor, y: torch.Tensor,
           steps: int = 5) -> None:
    signals = Signals(net)
    for _ in range(steps):
        rule.step(net, comp, x, y, signals)


def _grow(comp: Snapshots, net: Network, rule: Backprop, op: int) -> None:
    gen = torch.Generator().manual_seed(op)
    if op % 3 == 0:
        net.add_units(1 + op % 2, 3, init="zero", generator=gen)
    elif op % 3 == 1:
        net.add_units(2, init="split", source_units=[0, 2], noise=0.1, generator=gen)
    else:
        net.add_layer(1, generator=gen)  # identity layer: function-preserving under ReLU
    remap = net.pop_param_remap()
    comp.on_growth(net, remap)
    rule.on_growth(net, comp, remap)


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_residual_output_unchanged_across_growth(decay: float) -> None:
    comp, net, rule, x, y = _setup(refinement_decay=decay, max_snapshots=3)
    at_growth = []
    for op in range(5):  # the last two events exceed max_snapshots and add no snapshot
        _train(comp, net, rule, x, y)
        with torch.no_grad():
            before, live = comp.forward(net, x), net.forward(x)
        _grow(comp, net, rule, op)
        with torch.no_grad():
            torch.testing.assert_close(comp.forward(net, x), before, atol=1e-5, rtol=0)
        at_growth.append(live)
    assert len(comp.snapshots) == 3 and all(s.tag.startswith(TAG) for s in comp.snapshots)
    assert not torch.allclose(comp.gates.detach()[:3], decay ** torch.arange(3.0)), "gates did not learn"
    parts = comp.evaluate_parts(net, x)
    for k in range(3):  # each snapshot alone computes the network as it was at its growth event
        torch.testing.assert_close(parts[k], at_growth[k], atol=1e-5, rtol=0)


def test_parts_evaluable_alone_and_frozen() -> None:
    comp, net, rule, x, y = _setup()
    _train(comp, net, rule, x, y)
    _grow(comp, net, rule, 0)
    frozen = [t.detach().clone() for t in comp.snapshots[0].network.parameters()]
    _train(comp, net, rule, x, y)
    for old, now in zip(frozen, comp.snapshots[0].network.parameters(), strict=True):
        assert torch.equal(old, now), "a snapshot was trained"
    net.forward(x[:4])
    kept = net.hidden
    parts = comp.evaluate_parts(net, x)
    assert net.hidden is kept, "evaluate_parts must leave the live network's hidden activations"
    assert len(parts) == 2 and all(p.shape == (24, 3) and not p.requires_grad for p in parts)
    torch.testing.assert_close(parts[0], comp.snapshots[0].network.forward(x).detach())
    torch.testing.assert_close(parts[1], net.forward(x).detach())
    levels = comp.evaluate_levels(net, x)
    g = comp.gates.detach()
    torch.testing.assert_close(levels[0], g[0] * parts[0])
    torch.testing.assert_close(levels[-1], comp.forward(net, x).detach())
    assert comp.frozen_forward_macs(net) == comp.snapshots[0].network.forward_macs() > 0
    assert comp.forward_macs(net) == 0
    # trained once forward and backward, the frozen snapshot once (it was charged 3x, as if trained)
    assert rule.macs_per_sample(net, comp) == 3 * net.forward_macs() + comp.frozen_forward_macs(net)
    assert rule.eval_macs_per_sample(net, comp) == net.forward_macs() + comp.frozen_forward_macs(net)


def test_fixed_unit_gates_telescope_to_live() -> None:
    comp, net, rule, x, y = _setup(learn_gates=False)
    assert comp.parameters() == []
    for op in range(3):
        _train(comp, net, rule, x, y)
        _grow(comp, net, rule, op)
    _train(comp, net, rule, x, y)
    torch.testing.assert_close(comp.forward(net, x).detach(), net.forward(x).detach(), atol=1e-5, rtol=0)


def test_ensemble_is_mean_of_parts() -> None:
    comp, net, rule, x, y = _setup(mode="ensemble")
    assert comp.parameters() == []
    for op in range(2):
        _train(comp, net, rule, x, y)
        _grow(comp, net, rule, op)
    _train(comp, net, rule, x, y)
    parts = comp.evaluate_parts(net, x)
    assert len(parts) == 3
    torch.testing.assert_close(comp.forward(net, x).detach(), torch.stack(parts).mean(0))
    levels = comp.evaluate_levels(net, x)
    torch.testing.assert_close(levels[1], (parts[0] + parts[1]) / 2)


def test_registers() -> None:
    registered: list[type] = []
    snapshots_module.register_compositions(registered.append)
    assert registered == [Snapshots]


@pytest.mark.parametrize("mode", ["residual", "ensemble"])
def test_learns_digits_with_growth(mode: str) -> None:
    recipe = make_recipe({"task": "digits", "seed": 0, "fidelity": {"epochs": 10},
                          "network": {"hidden": (32,)}})
    task = load_task("digits", fidelity=recipe.fidelity, seed=0)
    comp = Snapshots(mode=mode)
    principles = {"connectivity": Dense(), "learning": Backprop(), "trigger": EveryK(k=2),
                  "growth": RandomGrowth(units=8), "composition": comp}
    trainer = Trainer(recipe, principles, task)
    result = trainer.run()
    assert len(result.growth_events) == 4 and len(comp.snapshots) == 4
    assert result.widths[1] == 64
    assert result.test_accuracy > 0.9, result.test_accuracy
    # params: the live 64-64-10 net, the four frozen snapshots (hidden 40, 48, 56, 64) every prediction runs,
    # and the trained gates in use (residual: one per part; ensemble has none)
    mlp = [75 * hidden + 10 for hidden in (40, 48, 56, 64)]  # 64*h + h weights and biases in, h*10 + 10 out
    assert result.params == mlp[-1] + sum(mlp) + (5 if mode == "residual" else 0)
    parts = comp.evaluate_parts(trainer.net, task.x_test)
    accuracies = [float((p.argmax(1) == task.y_test).float().mean()) for p in parts]
    assert all(a > 0.6 for a in accuracies), accuracies


class TestSnapshotsConformance(CompositionConformance):
    @pytest.fixture
    def principle_class(self) -> type:
        return Snapshots

    @pytest.fixture(params=[{}, {"mode": "ensemble"}, {"refinement_decay": 0.5, "learn_gates": False}])
    def config(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return dict(request.param)


def test_rewiring_and_snapshot_only_events_take_no_snapshot() -> None:
    """SET's rewiring (no growth at all) had filled the composition: one snapshot per rewire."""
    recipe = make_recipe({"task": "digits", "seed": 0, "fidelity": {"epochs": 4, "data_fraction": 0.3},
                          "network": {"hidden": (16,)}, "connectivity": "set", "composition": "snapshots",
                          "trigger": "never", "growth": "none"})
    principles = get_registry().instantiate(recipe)
    result = Trainer(recipe, principles, load_task("digits", fidelity=recipe.fidelity, seed=0)).run()
    assert any(e.slot == "connectivity" for e in result.growth_events)  # it did rewire
    assert principles["composition"].snapshots == []
    comp, net, rule, _, _ = _setup()
    net.take_snapshot(step=0, tag="growth:snapshot")  # a growth rule's snapshot op: no parameter changed
    comp.on_growth(net, net.pop_param_remap())
    assert comp.snapshots == []
    _grow(comp, net, rule, 0)
    assert len(comp.snapshots) == 1


@pytest.mark.parametrize("mode", ["residual", "ensemble"])
def test_events_say_whether_the_composed_scores_were_kept(mode: str) -> None:
    """Function-preserving growth keeps the residual composition's scores; in ensemble mode the first snapshot
    keeps them too (the mean of the snapshot and the live net is the net), but each later one moves the mean's
    weights, and its event must not say function-preserving (every event did)."""
    from principlelab.core.principles import Firing
    from principlelab.plugins.trigger.never import Never

    recipe = make_recipe({"task": "digits", "seed": 0, "fidelity": {"epochs": 2, "data_fraction": 0.3},
                          "network": {"hidden": (16,)}})
    task = load_task("digits", fidelity=recipe.fidelity, seed=0)
    comp = Snapshots(mode=mode)
    principles = {"connectivity": Dense(), "learning": Backprop(), "trigger": Never(),
                  "growth": RandomGrowth(units=4), "composition": comp}
    trainer = Trainer(recipe, principles, task)
    trainer.run()
    x = task.x_val[:64]
    recorded = []
    for _ in range(3):
        with torch.no_grad():
            before = trainer.learning.predict(trainer.net, comp, x)
            events = trainer._grow(Firing(reason="test"), epoch=1)
            changed = float((trainer.learning.predict(trainer.net, comp, x) - before).abs().max())
        assert events and len({e.function_preserving for e in events}) == 1
        recorded.append((events[0].function_preserving, changed > 1e-4))
        if mode == "ensemble":  # the live net drifts from the snapshots, as training between events would do
            trainer.net.layers[0].weight.data.add_(0.05)  # type: ignore[union-attr]
    assert len(comp.snapshots) == 3
    if mode == "residual":
        assert recorded == [(True, False)] * 3
    else:
        assert recorded == [(True, False), (False, True), (False, True)]
