"""Conformance suites of the slots that decide growth: Trigger (when) and GrowthRule (where, what)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.principles import Firing
from principlelab.core.signals import KNOWN_SIGNALS, Signals
from principlelab.testing.conformance import PrincipleConformance
from principlelab.testing.tiny import (
    IN_FEATURES,
    NUM_CLASSES,
    count_params,
    generator,
    merge_overrides,
    same_network,
    sgd_steps,
    small_network,
    synthetic_batch,
    tiny_trainer,
)

STRUCTURAL_OPS = frozenset({"add_layer", "add_skip", "freeze", "snapshot"})
"""Operations whose ``units`` do not widen the event's layer."""


def _check_required_signals(cls: Any) -> None:
    required = cls.required_signals
    assert isinstance(required, frozenset | set), f"required_signals must be a (frozen)set, got {required!r}"
    unknown = set(required) - KNOWN_SIGNALS
    assert not unknown, f"unknown required_signals {sorted(unknown)}; known: {sorted(KNOWN_SIGNALS)}"


def _event_key(event: GrowthEvent) -> tuple[Any, ...]:
    return (event.operation, event.layer, event.units, tuple(event.source_units), event.params_delta,
            event.macs_delta, event.function_preserving, repr(event.details))


class TriggerConformance(PrincipleConformance):
    """On a synthetic signal stream (loss falls, then is flat): well-formed, deterministic firings."""

    slot: ClassVar[str | None] = "trigger"
    epochs: ClassVar[int] = 8
    steps_per_epoch: ClassVar[int] = 10

    def loss_at(self, step: int) -> float:
        """Training loss of step ``step`` (0-based): falls linearly for 3 epochs, then flat."""
        return max(0.5, 2.0 - 0.05 * step)

    def stream(self, trigger: Any, seed: int = 0) -> list[tuple[int, int, str, str]]:
        """Feed ``trigger`` the stream; grow 2 units (width cap 64) on each firing.

        Returns ``(epoch, step, hook, reason)`` of every firing.
        """
        net = small_network(seed, hidden=(16,), width_cap=64)
        signals = Signals(net, frozenset(trigger.required_signals))
        gen, firings = generator(seed + 1), []
        for epoch in range(self.epochs):
            signals.epoch = epoch
            for s in range(self.steps_per_epoch):
                t = epoch * self.steps_per_epoch + s
                x, y = synthetic_batch(IN_FEATURES, NUM_CLASSES, 16, seed=t)
                scores = net.forward(x)  # fills net.hidden for activation_stats
                if signals.wants_grad_norms:
                    for p in net.parameters():
                        p.grad = None
                    torch.nn.functional.cross_entropy(scores, y).backward()
                    signals.record_grad_norms(net)
                signals.record_step(torch.tensor(self.loss_at(t)), 16, 16 * 3 * net.forward_macs())
                firings += self._handle(trigger, trigger.on_step(signals), "on_step", net, signals, gen)
            signals.close_epoch()
            signals.val_losses.append(max(0.6, 2.0 - 0.4 * epoch))
            signals.val_accuracies.append(min(0.9, 0.2 + 0.2 * epoch))
            firings += self._handle(trigger, trigger.on_epoch_end(signals), "on_epoch_end", net, signals, gen)
        return firings

    def _handle(self, trigger: Any, firing: Any, hook: str, net: Network, signals: Signals,
                gen: torch.Generator) -> list[tuple[int, int, str, str]]:
        if firing is None:
            return []
        assert isinstance(firing, Firing), f"{hook} must return None or a Firing, got {firing!r}"
        assert isinstance(firing.reason, str) and firing.reason.strip(), (
            f"{hook} returned a Firing without a reason: {firing!r}")
        events = net.add_units(1, 2, init="zero", generator=gen)  # [] once the cap is reached
        net.pop_param_remap()
        trigger.on_growth(events, signals)
        return [(signals.epoch, signals.step, hook, firing.reason)]

    def test_required_signals_known(self, principle_class: Any) -> None:
        _check_required_signals(principle_class)

    def test_firings_well_formed(self, principle_class: Any, config: Any) -> None:
        self.stream(self.make(principle_class, config))

    def test_deterministic(self, principle_class: Any, config: Any) -> None:
        torch.manual_seed(0)
        first = self.stream(self.make(principle_class, config))
        torch.manual_seed(0)
        second = self.stream(self.make(principle_class, config))
        assert first == second, f"two instances fired differently on the same stream:\n{first}\n{second}"

    def test_runs_in_tiny_training(self, principle_class: Any, config: Any) -> None:
        overrides = merge_overrides({"growth": {"name": "random", "units": 2}}, self.recipe_overrides)
        result = tiny_trainer(overrides, principles={"trigger": self.make(principle_class, config)}).run()
        assert math.isfinite(result.val_loss)
        for event in result.growth_events:
            assert event.reason, f"growth event without the firing's reason: {event}"


@dataclass
class GrowthOutcome:
    """One ``grow`` call on a prepared network, with what was measured around it."""

    net: Network
    events: list[GrowthEvent]
    widths_before: list[int]
    params_before: int
    macs_before: int
    x: torch.Tensor
    out_before: torch.Tensor


class GrowthRuleConformance(PrincipleConformance):
    """On a small trained network (dense and sparse): events account for every change, growth is
    seeded, respects ``max_width``, and keeps the function when the events say so."""

    slot: ClassVar[str | None] = "growth"
    hidden: ClassVar[tuple[int, ...]] = (32, 32)
    atol: ClassVar[float] = 1e-6

    @pytest.fixture(params=["dense", "sparse_random"])
    def base_connectivity(self, request: Any) -> str:
        """The connectivity that builds the network to grow (masked networks included)."""
        return str(request.param)

    def prepared(self, principle_class: Any, config: Any, connectivity: str = "dense", *, seed: int = 0,
                 width_cap: int | None = None) -> tuple[Any, Network, Signals]:
        """A fresh rule, a network trained for two short epochs, and its signals."""
        net = small_network(seed, connectivity=connectivity, hidden=self.hidden, width_cap=width_cap)
        rule = self.make(principle_class, config)
        signals = Signals(net, frozenset(rule.required_signals))
        for epoch in range(2):
            signals.epoch = epoch
            sgd_steps(net, signals, 5, seed=10 * epoch)
            signals.close_epoch()
            signals.val_losses.append(1.5 - 0.2 * epoch)
            signals.val_accuracies.append(0.4 + 0.1 * epoch)
        return rule, net, signals

    def grow(self, rule: Any, net: Network, signals: Signals, seed: int = 123) -> GrowthOutcome:
        x = synthetic_batch(IN_FEATURES, NUM_CLASSES, 32, seed=999)[0]
        kept = net.hidden
        with torch.no_grad():
            out_before = net.forward(x).clone()
        net.hidden = kept  # grow sees the training batch's activations, as in the trainer
        widths, params, macs = list(net.widths), count_params(net), net.forward_macs()
        events = rule.grow(net, signals, generator(seed))
        assert isinstance(events, list), f"grow must return a list, got {type(events).__name__}"
        for event in events:
            assert isinstance(event, GrowthEvent), f"grow returned {event!r}, not a GrowthEvent"
        return GrowthOutcome(net, events, widths, params, macs, x, out_before)

    def test_required_signals_known(self, principle_class: Any) -> None:
        _check_required_signals(principle_class)

    def test_events_account_for_growth(self, principle_class: Any, config: Any,
                                       base_connectivity: str) -> None:
        g = self.grow(*self.prepared(principle_class, config, base_connectivity))
        net, events, before = g.net, g.events, g.widths_before
        ops = [e.operation.split(":")[0] for e in events]
        for event, op in zip(events, ops):
            assert 0 <= event.layer < len(net.widths), f"{event.operation}: no layer {event.layer}"
            if op == "add_units":
                assert 1 <= event.layer < len(net.widths) - 1, f"add_units event at non-hidden layer {event}"
            assert any(event is e for e in net.events), f"event {event.operation} missing from net.events"
        assert net.widths[0] == before[0] and net.widths[-1] == before[-1], (
            f"growth changed the input/output width: {before} -> {net.widths}")
        added_layers = ops.count("add_layer")
        assert len(net.widths) == len(before) + added_layers, (
            f"{added_layers} add_layer events but depth went {before} -> {net.widths}")
        if not added_layers:
            units = Counter[int]()
            for event, op in zip(events, ops):
                if op not in STRUCTURAL_OPS:
                    units[event.layer] += event.units
            delta = {k: net.widths[k] - before[k] for k in range(len(before)) if net.widths[k] != before[k]}
            assert delta == {k: n for k, n in units.items() if n}, (
                f"widths {before} -> {net.widths} but the events add {dict(units)} units")
        assert net.num_params() == count_params(net), "net.num_params() is stale (call net._changed())"
        params_delta, grown = sum(e.params_delta for e in events), count_params(net) - g.params_before
        assert params_delta == grown, f"events' params_delta sum to {params_delta}, params grew by {grown}"
        macs_delta, more = sum(e.macs_delta for e in events), net.forward_macs() - g.macs_before
        assert macs_delta == more, f"events' macs_delta sum to {macs_delta}, forward MACs changed by {more}"

    def test_function_preserving(self, principle_class: Any, config: Any, base_connectivity: str) -> None:
        g = self.grow(*self.prepared(principle_class, config, base_connectivity))
        if g.events and not all(e.function_preserving for e in g.events):
            return  # nothing promised
        with torch.no_grad():
            out = g.net.forward(g.x)
        assert out.shape == g.out_before.shape, f"output shape {tuple(out.shape)} changed"
        worst = float((out - g.out_before).abs().max())
        what = "events that all say function_preserving" if g.events else "no events"
        assert worst <= self.atol, f"{what}, yet the output moved by {worst:.3g} (atol {self.atol})"

    def test_deterministic(self, principle_class: Any, config: Any, base_connectivity: str) -> None:
        runs = []
        for _ in range(2):
            rule, net, signals = self.prepared(principle_class, config, base_connectivity)
            torch.manual_seed(0)
            first = self.grow(rule, net, signals, seed=123).events
            sgd_steps(net, signals, 2, seed=50)
            second = self.grow(rule, net, signals, seed=124).events
            runs.append((net, [_event_key(e) for e in first + second]))
        (a, ea), (b, eb) = runs
        assert ea == eb, f"same seeds, different events:\n{ea}\n{eb}"
        assert same_network(a, b) is None, f"same seeds, different networks: {same_network(a, b)}"

    @pytest.mark.parametrize("headroom", [0, 3])
    def test_respects_max_width(self, principle_class: Any, config: Any, headroom: int) -> None:
        cap = max(self.hidden) + headroom
        rule, net, signals = self.prepared(principle_class, config, width_cap=cap)
        for round_ in range(3):
            self.grow(rule, net, signals, seed=round_)
            too_wide = [w for w in net.widths[1:-1] if w > cap]
            assert not too_wide, f"width cap {cap} exceeded: widths {net.widths}"
            net.pop_param_remap()
            sgd_steps(net, signals, 1, seed=round_)

    def test_keeps_training_after_growth(self, principle_class: Any, config: Any,
                                         base_connectivity: str) -> None:
        rule, net, signals = self.prepared(principle_class, config, base_connectivity)
        for round_ in range(2):
            self.grow(rule, net, signals, seed=round_)
            net.pop_param_remap()
            losses = sgd_steps(net, signals, 3, seed=200 + round_)
            assert all(math.isfinite(v) for v in losses), f"training after growth gave losses {losses}"
        for p in net.parameters():
            assert p.is_leaf and p.requires_grad, "growth left a parameter that is not a trainable leaf"

    def test_grows_in_tiny_training(self, principle_class: Any, config: Any) -> None:
        defaults = {"trigger": {"name": "every_k", "k": 1}, "fidelity": {"epochs": 4, "width_cap": 48}}
        trainer = tiny_trainer(merge_overrides(defaults, self.recipe_overrides),
                               principles={"growth": self.make(principle_class, config)})
        result, cap = trainer.run(), trainer.recipe.fidelity.width_cap
        assert math.isfinite(result.val_loss)
        assert cap is None or all(w <= cap for w in result.widths[1:-1]), (
            f"width cap {cap} exceeded: {result.widths}")
        assert result.params == trainer.net.num_params() == count_params(trainer.net)
