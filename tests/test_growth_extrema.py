"""Growth ``extrema`` and the shared operators: exact selection on hand-made activations, every
operator changes exactly what its events say (and keeps the function), caps, and a digits run."""

from __future__ import annotations

import os

os.environ["PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD"] = "1"

from typing import Any

import pytest
import torch

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.recipe import make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.plugins.composition.sequential import Sequential
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.extrema import ExtremaGrowth
from principlelab.plugins.growth.operators import scale_level
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.trigger.every_k import EveryK
from principlelab.testing import GrowthRuleConformance
from principlelab.testing.tiny import count_params

B = 20  # batch of the hand-made activations


def _net(widths: list[int], activation: str = "tanh", *, seed: int = 0, max_width: int | None = None,
         masked: bool = False) -> Network:
    g = torch.Generator().manual_seed(seed)
    net = Network(widths, activation=activation, generator=g, max_width=max_width)
    if masked:
        for block in net.layers:
            block.mask = (torch.rand(block.weight.shape, generator=g) < 0.6).float()
        net._changed()
    return net


def _moderate(net: Network, seed: int = 0) -> list[torch.Tensor]:
    """Activations [B, width] per hidden layer well inside every bound (nothing extremal)."""
    g = torch.Generator().manual_seed(seed)
    low, high = {"tanh": (-0.5, 0.5), "sigmoid": (0.2, 0.8), "relu": (0.1, 1.0)}[net.activation]
    return [low + (high - low) * torch.rand(B, net.widths[k], generator=g) for k in net.hidden_layers]


def _signals(net: Network, hidden: list[torch.Tensor], *, epoch: int = 0, step: int = 0) -> Signals:
    net.hidden = hidden
    signals = Signals(net, frozenset({"activation_stats"}))
    signals.epoch, signals.step = epoch, step
    return signals


def _pinned(net: Network, pins: dict[tuple[int, int], float], **kw: Any) -> Signals:
    """Signals whose only extremal units are ``pins`` (layer, unit) -> value on the whole batch."""
    hidden = _moderate(net)
    for (layer, unit), value in pins.items():
        hidden[layer - 1][:, unit] = value
    return _signals(net, hidden, **kw)


def _x(net: Network) -> torch.Tensor:
    return torch.randn(16, net.widths[0], generator=torch.Generator().manual_seed(7))


def _grow(rule: ExtremaGrowth, net: Network, signals: Signals,
          seed: int = 0) -> tuple[list[GrowthEvent], float]:
    """Grow; return the events and how far the output on a fixed batch moved."""
    x, kept = _x(net), net.hidden
    with torch.no_grad():
        before = net.forward(x)
    net.hidden = kept
    events = rule.grow(net, signals, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        after = net.forward(x)
    assert after.shape == before.shape, f"output shape {tuple(before.shape)} -> {tuple(after.shape)}"
    return events, float((after - before).abs().max())


def _selected(rule: ExtremaGrowth, net: Network, signals: Signals) -> set[tuple[int, int, str]]:
    return {(t.layer, t.unit, t.polarity) for t in rule.select(net, signals)}


# ------------------------------------------------------------------------------- selection
def test_tanh_saturation_selects_exactly_the_saturated_units() -> None:
    net = _net([4, 10, 8, 3], "tanh")
    hidden = _moderate(net)
    hidden[0][:, 2] = 0.99  # saturated high on the whole batch
    hidden[0][:12, 7] = -0.98  # saturated low on 60 %
    hidden[0][:8, 5] = 0.97  # only 40 %: below min_fraction
    hidden[0][:, 3] = 0.93  # inside |a| < 0.95
    hidden[1][:, 0] = -1.0
    hidden[1][:10, 6] = 0.96  # exactly 50 %: counts (at least min_fraction)
    got = _selected(ExtremaGrowth(), net, _signals(net, hidden))
    assert got == {(1, 2, "high"), (1, 7, "low"), (2, 0, "low"), (2, 6, "high")}


def test_sigmoid_saturation_includes_the_low_tail() -> None:
    net = _net([4, 6, 3], "sigmoid")
    hidden = _moderate(net)
    hidden[0][:, 1] = 0.01  # low tail: the seeds' |a| > 0.95 missed this one
    hidden[0][:14, 4] = 0.995
    hidden[0][:, 3] = 0.07  # outside the 0.05 ball
    hidden[0][:9, 0] = 0.04  # 45 % of the batch only
    assert _selected(ExtremaGrowth(), net, _signals(net, hidden)) == {(1, 1, "low"), (1, 4, "high")}


def _relu_case() -> tuple[Network, Signals]:
    net = _net([4, 8, 3], "relu")
    hidden = _moderate(net)
    hidden[0][:19, 0] = 0.0  # dead on 95 %
    hidden[0][:18, 3] = 0.0  # dead on exactly 90 %: not more than dead_fraction
    hidden[0][:12, 5] = 10.0  # at the layer's maximum on 60 %
    hidden[0][:, 6] = 9.0  # below (1 - eps) * max = 9.5
    return net, _signals(net, hidden)


@pytest.mark.parametrize(("mode", "expected"), [
    ("auto", {(1, 0, "low"), (1, 5, "high")}),
    ("dead", {(1, 0, "low")}),
    ("always_max", {(1, 5, "high")}),
    ("saturation", {(1, 5, "high")}),  # on ReLU saturation means always_max
])
def test_relu_modes_select_exactly(mode: str, expected: set[tuple[int, int, str]]) -> None:
    net, signals = _relu_case()
    assert _selected(ExtremaGrowth(mode=mode), net, signals) == expected


@pytest.mark.parametrize("operator", ["vertical_clone", "split"])
def test_a_dead_target_gets_a_fresh_unit_in_its_layer(operator: str) -> None:
    """A relay or split copy of a dead unit was as dead: zero activation, so neither it nor its weights ever
    learned. A dead target now gets a fresh unit in its own layer (random in, zero out)."""
    net = _net([4, 8, 6, 3], "relu")
    events, moved = _grow(ExtremaGrowth(mode="dead", operator=operator, top_fraction=1.0), net,
                          _pinned(net, {(1, 2): 0.0}))
    assert [(e.operation, e.layer, e.units, e.details["targets"]) for e in events] == [
        ("add_units:zero", 1, 1, [[1, 2]])]
    assert net.widths == [4, 9, 6, 3] and moved <= 1e-6
    with torch.no_grad():
        net.forward(torch.randn(256, 4, generator=torch.Generator().manual_seed(3)))
    assert float((net.hidden[0][:, 8] > 0).float().mean()) > 0.1  # alive, unlike a copy of unit 2


def test_default_relu_growth_adds_units_that_learn() -> None:
    """On digits the default rule (auto: dead + always_max, relay up) grew units that never activated."""
    recipe = make_recipe({"task": "digits", "seed": 0, "fidelity": {"epochs": 8},
                          "network": {"hidden": [32, 32]}, "growth": "extrema",
                          "trigger": {"name": "every_k", "config": {"k": 2}}})
    from principlelab.registry import get_registry

    trainer = Trainer(recipe, get_registry().instantiate(recipe), load_task("digits", fidelity=recipe.fidelity, seed=0))
    result = trainer.run()
    assert result.growth_events and sum(result.widths[1:-1]) > 64
    with torch.no_grad():
        trainer.net.forward(trainer.task.x_train)
    grown = [h[:, 32:] for h in trainer.net.hidden if h.shape[1] > 32]
    active = torch.cat([(g > 0).float().mean(0) for g in grown])  # per grown unit: share of samples > 0
    assert bool((active > 0.01).all()), active  # a relay of a dead unit: 0.0


def test_percentile_mode_selects_top_and_bottom_means() -> None:
    net = _net([4, 20, 3], "relu")
    hidden = [torch.arange(20.0).repeat(B, 1) / 10 + 0.01 * torch.rand(B, 20, generator=torch.Generator())]
    got = _selected(ExtremaGrowth(mode="percentile", percentile=10), net, _signals(net, hidden))
    assert got == {(1, 0, "low"), (1, 1, "low"), (1, 18, "high"), (1, 19, "high")}


def test_split_grows_exactly_at_the_selected_units_and_keeps_the_function() -> None:
    net = _net([4, 10, 8, 3], "tanh")
    signals = _pinned(net, {(1, 2): 0.99, (1, 7): -0.98, (2, 0): -1.0, (2, 6): 0.97})
    events, moved = _grow(ExtremaGrowth(operator="split", top_fraction=1.0), net, signals)
    assert [(e.operation, e.layer, sorted(e.source_units)) for e in events] == [
        ("add_units:split", 1, [2, 7]), ("add_units:split", 2, [0, 6])]
    assert net.widths == [4, 12, 10, 3] and moved <= 1e-6
    assert all(e.function_preserving and e.details["operator"] == "split" for e in events)


def test_top_fraction_acts_on_the_most_severe() -> None:
    net = _net([4, 10, 3], "tanh")
    hidden = _moderate(net)
    hidden[0][:, 4] = 0.99  # severity 1.0
    hidden[0][:15, 1] = 0.99  # 0.75
    hidden[0][:12, 8] = -0.99  # 0.6
    events, _ = _grow(ExtremaGrowth(operator="split", top_fraction=0.3), net, _signals(net, hidden))
    assert [e.source_units for e in events] == [(4,)]  # ceil(0.3 * 3) = 1


def test_top_fraction_counts_only_targets_the_operator_can_act_on() -> None:
    """The most severe targets sat in the last hidden layer, where a relay up has no layer to grow: the top
    fraction was taken before they were dropped, and growth did nothing although layer 1 had targets."""
    net = _net([4, 10, 8, 3], "tanh")
    hidden = _moderate(net)
    hidden[1][:, 0] = hidden[1][:, 1] = 0.99  # last hidden layer: severity 1.0, not servable upwards
    hidden[0][:15, 3] = 0.99  # layer 1: severity 0.75
    events, moved = _grow(ExtremaGrowth(operator="vertical_clone", clone_direction="up", top_fraction=0.3), net,
                          _signals(net, hidden))
    assert [(e.operation, e.layer, e.source_units) for e in events] == [("add_units:relay", 2, (3,))]
    assert moved <= 1e-6


def test_nothing_extremal_means_no_growth() -> None:
    net = _net([4, 10, 8, 3], "tanh")
    widths, n_events = list(net.widths), len(net.events)
    events, moved = _grow(ExtremaGrowth(), net, _signals(net, _moderate(net)))
    assert events == [] and net.widths == widths and len(net.events) == n_events and moved == 0.0


# ------------------------------------------------------------------------------- operators
@pytest.mark.parametrize("masked", [False, True])
def test_vertical_clone_up_is_a_relay_of_the_target(masked: bool) -> None:
    net = _net([5, 6, 7, 6, 3], "tanh", masked=masked)
    events, moved = _grow(ExtremaGrowth(clone_direction="up", noise=0.0), net, _pinned(net, {(1, 4): 0.99}))
    (event,) = events
    assert (event.operation, event.layer, event.source_units) == ("add_units:relay", 2, (4,))
    assert event.details["targets"] == [[1, 4]] and event.details["direction"] == "up"
    assert net.widths == [5, 6, 8, 6, 3] and moved <= 1e-6
    onehot = torch.zeros(6)
    onehot[4] = 0.7
    assert torch.equal(net.layers[1].effective_weight()[7].detach(), onehot)
    bias = net.layers[1].bias
    assert bias is not None and float(bias.detach()[7]) == 0.0
    assert torch.count_nonzero(net.layers[2].weight[:, 7]) == 0


def test_vertical_clone_down_clones_the_strongest_input() -> None:
    net = _net([5, 6, 7, 6, 3], "tanh")
    strongest = int(net.layers[1].weight[3].detach().abs().argmax())
    expected = 0.7 * net.layers[0].weight[strongest].detach().clone()
    rule = ExtremaGrowth(clone_direction="down", noise=0.0)
    events, moved = _grow(rule, net, _pinned(net, {(2, 3): -0.99}))
    (event,) = events
    assert (event.operation, event.layer, event.source_units) == ("add_units:clone", 1, (strongest,))
    assert event.details["targets"] == [[2, 3]] and net.widths == [5, 7, 7, 6, 3] and moved <= 1e-6
    assert torch.allclose(net.layers[0].weight[6].detach(), expected)
    assert torch.count_nonzero(net.layers[1].weight[:, 6]) == 0


def test_vertical_clone_both_and_the_edges_of_the_stack() -> None:
    net = _net([5, 6, 7, 6, 3], "tanh")
    events, moved = _grow(ExtremaGrowth(clone_direction="both"), net, _pinned(net, {(2, 3): 0.99}))
    assert sorted((e.operation, e.layer) for e in events) == [("add_units:clone", 1), ("add_units:relay", 3)]
    assert net.widths == [5, 7, 7, 7, 3] and moved <= 1e-6
    top = _net([5, 6, 7, 6, 3], "tanh")  # the last hidden layer has no hidden layer above it
    assert _grow(ExtremaGrowth(clone_direction="up"), top, _pinned(top, {(3, 1): 0.99}))[0] == []
    bottom = _net([5, 6, 7, 6, 3], "tanh")  # nor the first one below it
    assert _grow(ExtremaGrowth(clone_direction="down"), bottom, _pinned(bottom, {(1, 1): 0.99}))[0] == []


def _active(net: Network, src: int, dst: int) -> set[tuple[int, int]]:
    """Active (src unit, dst unit) entries of skip block src -> dst."""
    mask = net.skips[(src, dst)].mask
    assert mask is not None
    return {(int(s), int(d)) for d, s in torch.nonzero(mask).tolist()}


def _check_accounting(net: Network, events: list[GrowthEvent], params_before: int, macs_before: int) -> None:
    assert net.num_params() == count_params(net)
    assert sum(e.params_delta for e in events) == net.num_params() - params_before
    assert sum(e.macs_delta for e in events) == net.forward_macs() - macs_before
    assert all(any(e is f for f in net.events) for e in events)


def test_highway_routes_high_to_the_nearest_low_and_masks_the_rest() -> None:
    net = _net([5, 6, 7, 6, 5, 3], "tanh")
    rule = ExtremaGrowth(operator="highway")
    params, macs = net.num_params(), net.forward_macs()
    pins = {(1, 2): 0.99, (3, 4): -0.99, (4, 1): -0.99}
    events, moved = _grow(rule, net, _pinned(net, pins))
    assert [e.operation for e in events] == ["add_skip:zero", "highway"]
    highway = events[1]
    assert (highway.layer, highway.units, highway.source_units) == (3, 0, (2,))
    assert highway.details["routes"] == [[2, 4]] and highway.function_preserving
    assert _active(net, 1, 3) == {(2, 4)} and moved <= 1e-6 and net.widths == [5, 6, 7, 6, 5, 3]
    _check_accounting(net, events, params, macs)
    # again: (3, 4) is taken, so the route goes one layer further, to (4, 1)
    params, macs = net.num_params(), net.forward_macs()
    events, moved = _grow(rule, net, _pinned(net, pins, step=1))
    assert [(e.operation, e.layer) for e in events] == [("add_skip:zero", 4), ("highway", 4)]
    assert _active(net, 1, 4) == {(2, 1)} and _active(net, 1, 3) == {(2, 4)} and moved <= 1e-6
    _check_accounting(net, events, params, macs)
    # an existing block only gains a mask entry
    params, macs = net.num_params(), net.forward_macs()
    events, _ = _grow(rule, net, _pinned(net, {**pins, (3, 5): -0.99}, step=2))
    assert [e.operation for e in events] == ["highway"] and _active(net, 1, 3) == {(2, 4), (2, 5)}
    assert events[0].params_delta == 1 and events[0].macs_delta == 1
    _check_accounting(net, events, params, macs)


def test_highway_low_to_high_hops_and_init() -> None:
    net = _net([5, 6, 7, 6, 5, 3], "tanh")
    events, _ = _grow(ExtremaGrowth(operator="highway", route_direction="low_to_high"), net,
                      _pinned(net, {(1, 0): -0.99, (3, 2): 0.99, (1, 3): 0.99}))
    assert events[-1].details["routes"] == [[0, 2]] and _active(net, 1, 3) == {(0, 2)}
    far = _net([5, 6, 7, 6, 5, 3], "tanh")  # the only low is 3 layers ahead: out of reach at max_hops=2
    assert _grow(ExtremaGrowth(operator="highway", max_hops=2), far,
                 _pinned(far, {(1, 2): 0.99, (4, 1): -0.99}))[0] == []
    loud = _net([5, 6, 7, 6, 5, 3], "tanh")
    events, moved = _grow(ExtremaGrowth(operator="highway", route_init=1.0), loud,
                          _pinned(loud, {(1, 2): 0.99, (3, 4): -0.99}))
    assert not events[-1].function_preserving and moved > 0
    assert float(loud.skips[(1, 3)].weight.detach()[4, 2]) != 0.0
    assert torch.count_nonzero(loud.skips[(1, 3)].effective_weight()) == 1


def test_highway_sends_each_route_to_the_least_loaded_low() -> None:
    net = _net([5, 6, 7, 6, 5, 3], "tanh")
    rule = ExtremaGrowth(operator="highway", top_fraction=1.0)
    pins = {(1, 1): 0.99, (1, 2): 0.99, (3, 0): -0.99, (3, 5): -0.99}
    events, _ = _grow(rule, net, _pinned(net, pins))
    assert events[-1].details["routes"] == [[1, 0], [2, 5]]  # not both onto one low unit
    mask = net.skips[(1, 3)].mask
    assert mask is not None
    mask[0, 3] = 1.0  # (3, 0) now has two incoming routes, (3, 5) one
    net._changed()
    events, _ = _grow(rule, net, _pinned(net, {(1, 4): 0.99, (3, 0): -0.99, (3, 5): -0.99}, step=1))
    assert events[-1].details["routes"] == [[4, 5]]


def test_highway_skips_frozen_destinations() -> None:
    net = _net([5, 6, 7, 6, 5, 3], "tanh")
    net.freeze(3, [4])
    events, _ = _grow(ExtremaGrowth(operator="highway"), net,
                      _pinned(net, {(1, 2): 0.99, (3, 4): -0.99, (3, 0): -0.99}))
    assert events[-1].details["routes"] == [[2, 0]]


# ------------------------------------------------------------------------------------ caps
def test_scale_level_follows_training_progress() -> None:
    assert [scale_level(e, 30, "coarse") for e in (0, 9, 10, 19, 20, 29, 99)] == [
        "coarse", "coarse", "medium", "medium", "fine", "fine", "fine"]
    assert [scale_level(e, 30, "fine") for e in (0, 15, 25)] == ["fine", "medium", "coarse"]


@pytest.mark.parametrize(("epoch", "early_is", "level", "units"), [
    (0, "coarse", "coarse", 4), (12, "coarse", "medium", 7), (25, "coarse", "fine", 11),
    (0, "fine", "fine", 11)])
def test_scale_caps_limit_each_event(epoch: int, early_is: str, level: str, units: int) -> None:
    net = _net([5, 40, 3], "tanh")
    rule = ExtremaGrowth(operator="split", top_fraction=1.0, coarse_cap=4, medium_cap=7, fine_cap=11,
                         early_is=early_is)
    events, _ = _grow(rule, net, _pinned(net, {(1, u): 0.99 for u in range(30)}, epoch=epoch))
    assert sum(e.units for e in events) == units and net.widths[1] == 40 + units
    assert all(e.details["scale_level"] == level for e in events)


def test_total_cap_and_its_default() -> None:
    net = _net([5, 40, 3], "tanh")
    rule = ExtremaGrowth(operator="split", top_fraction=1.0, coarse_cap=4, max_total_units=6)
    pins = {(1, u): 0.99 for u in range(30)}
    grown = [sum(e.units for e in _grow(rule, net, _pinned(net, pins, step=i))[0]) for i in range(3)]
    assert grown == [4, 2, 0] and net.widths[1] == 46
    small = _net([5, 8, 3], "tanh")  # default: at most the initial hidden units (2x size)
    rule = ExtremaGrowth(operator="split", top_fraction=1.0, coarse_cap=100)
    pins = {(1, u): 0.99 for u in range(8)}
    grown = [sum(e.units for e in _grow(rule, small, _pinned(small, pins, step=i))[0]) for i in range(2)]
    assert grown == [8, 0] and small.widths[1] == 16


def test_width_cap_and_clone_pairs_count_against_caps() -> None:
    net = _net([5, 8, 3], "tanh", max_width=10)
    events, _ = _grow(ExtremaGrowth(operator="split", top_fraction=1.0), net,
                      _pinned(net, {(1, u): 0.99 for u in range(8)}))
    assert sum(e.units for e in events) == 2 and net.widths[1] == 10
    deep = _net([5, 6, 7, 6, 3], "tanh")
    events, _ = _grow(ExtremaGrowth(clone_direction="both", top_fraction=1.0, coarse_cap=3), deep,
                      _pinned(deep, {(2, 0): 0.99, (2, 1): 0.98}))
    assert sum(e.units for e in events) == 3 and sum(deep.widths[1:-1]) == 19 + 3


# ----------------------------------------------------------------------- conformance, training
class TestExtremaConformance(GrowthRuleConformance):
    hidden = (16, 16, 16)

    @pytest.fixture
    def principle_class(self) -> type:
        return ExtremaGrowth

    @pytest.fixture(params=[{"mode": "percentile", "clone_direction": "both", "top_fraction": 0.5},
                            {"mode": "percentile", "operator": "split", "top_fraction": 0.5},
                            {"mode": "percentile", "percentile": 20, "operator": "highway"}])
    def config(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return dict(request.param)


def test_digits_with_extrema_growth_grows_and_learns() -> None:
    principles = {"connectivity": Dense(), "learning": Backprop(), "trigger": EveryK(k=2),
                  "growth": ExtremaGrowth(), "composition": Sequential()}
    data: dict[str, Any] = {"task": "digits", "seed": 0, "fidelity": {"epochs": 8},
                            "network": {"hidden": [32, 32], "activation": "relu"}}
    for slot, p in principles.items():
        data[slot] = {"name": p.name, "config": p.config.model_dump(mode="json")}
    recipe = make_recipe(data)
    task = load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
    result = Trainer(recipe, dict(principles), task).run()  # type: ignore[arg-type]
    assert result.growth_events and sum(result.widths[1:-1]) > 64
    assert all(e.principle == "extrema" and e.function_preserving for e in result.growth_events)
    assert result.test_accuracy > 0.9
