"""Conformance suites of the slots that build and train: Connectivity, LearningRule, Composition."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network
from principlelab.core.principles import Firing, GrowthRule, PrincipleConfig, Trigger
from principlelab.core.signals import Signals
from principlelab.core.trainer import Callback, RunResult, Trainer
from principlelab.testing.conformance import PrincipleConformance
from principlelab.testing.tiny import (
    IN_FEATURES,
    NUM_CLASSES,
    all_blocks,
    generator,
    same_network,
    sgd_steps,
    small_network,
    synthetic_batch,
    tiny_trainer,
)


def _finite_scores(scores: Any, batch: int, classes: int, what: str) -> None:
    assert isinstance(scores, torch.Tensor), f"{what} must return a tensor, got {type(scores).__name__}"
    assert tuple(scores.shape) == (batch, classes), f"{what} gave shape {tuple(scores.shape)}, " \
        f"expected [{batch}, {classes}]"
    assert torch.isfinite(scores).all(), f"{what} gave non-finite scores"


def _check_learned(result: RunResult, min_accuracy: float | None, what: str) -> None:
    first, last = result.epochs[0].train_loss, result.epochs[-1].train_loss
    assert last < first or len(result.epochs) < 2, (
        f"{what}: the train loss did not fall (epoch 0: {first:.4f}, last: {last:.4f})")
    if min_accuracy is not None:
        assert result.val_accuracy > min_accuracy, (
            f"{what}: val accuracy {result.val_accuracy:.3f} <= min_accuracy {min_accuracy}")


class ConnectivityConformance(PrincipleConformance):
    """``build`` gives the right widths, respects the cap, is seeded; ``rewire`` keeps shapes."""

    slot: ClassVar[str | None] = "connectivity"
    min_accuracy: ClassVar[float | None] = 0.5
    hidden: ClassVar[tuple[int, ...]] = (32, 24)

    def build(self, principle_class: Any, config: Any, *, seed: int = 0, width_cap: int | None = None,
              activation: str = "relu") -> Network:
        return small_network(seed, connectivity=self.make(principle_class, config), hidden=self.hidden,
                             width_cap=width_cap, activation=activation)

    def test_build_widths(self, principle_class: Any, config: Any) -> None:
        net = self.build(principle_class, config, activation="tanh")
        assert isinstance(net, Network), f"build returned {type(net).__name__}, not a Network"
        expected = [IN_FEATURES, *self.hidden, NUM_CLASSES]
        assert net.widths == expected, f"widths {net.widths}, expected {expected}"
        assert net.activation == "tanh", "build must use spec.activation"
        for i, block in enumerate(net.layers):
            shape = (net.widths[i + 1], net.widths[i])
            assert tuple(block.weight.shape) == shape, f"layers[{i}].weight is {tuple(block.weight.shape)}"
            if block.mask is not None:
                assert block.mask.shape == block.weight.shape, f"layers[{i}].mask shape differs from weight"
                assert ((block.mask == 0) | (block.mask == 1)).all(), f"layers[{i}].mask is not 0/1"
            if block.bias is not None:
                assert tuple(block.bias.shape) == shape[:1], f"layers[{i}].bias is {tuple(block.bias.shape)}"
        for p in net.parameters():
            assert p.is_leaf and p.requires_grad, "every parameter must be a leaf tensor requiring grad"

    def test_build_respects_width_cap(self, principle_class: Any, config: Any) -> None:
        cap = 16
        net = self.build(principle_class, config, width_cap=cap)
        expected = [IN_FEATURES, *(min(w, cap) for w in self.hidden), NUM_CLASSES]
        assert net.widths == expected, f"widths {net.widths} with width_cap={cap}, expected {expected}"
        assert net.max_width == cap, f"net.max_width is {net.max_width}; growth must see width_cap={cap}"

    def test_build_seeded(self, principle_class: Any, config: Any) -> None:
        a, b = (self.build(principle_class, config, seed=7) for _ in range(2))
        assert same_network(a, b) is None, f"same seed, different networks: {same_network(a, b)}"
        c = self.build(principle_class, config, seed=8)
        assert same_network(a, c) is not None, "different seeds gave identical networks"

    def test_forward_and_gradients(self, principle_class: Any, config: Any) -> None:
        net = self.build(principle_class, config)
        x, y = synthetic_batch(IN_FEATURES, NUM_CLASSES, 16, seed=1)
        scores = net.forward(x)
        _finite_scores(scores, 16, NUM_CLASSES, "net.forward")
        torch.nn.functional.cross_entropy(scores, y).backward()
        assert net.layers[0].weight.grad is not None, "no gradient reached the first layer"

    def _rewire_run(self, principle_class: Any, config: Any, seed: int) -> tuple[Network, list[GrowthEvent]]:
        net = self.build(principle_class, config)
        rule, gen, events = self.make(principle_class, config), generator(seed), []
        for epoch in range(3):
            sgd_steps(net, None, 4, seed=100 * epoch)
            shapes = [(label, tuple(b.weight.shape)) for label, b in all_blocks(net)]
            widths = list(net.widths)
            new = rule.rewire(net, epoch=epoch, generator=gen)
            assert isinstance(new, list), f"rewire must return a list, got {type(new).__name__}"
            for event in new:
                assert isinstance(event, GrowthEvent), f"rewire returned {event!r}, not a GrowthEvent"
                assert 0 <= event.layer < len(net.widths), f"event layer {event.layer} of {net.widths}"
            assert net.widths == widths, f"rewire changed widths {widths} -> {net.widths}"
            after = [(label, tuple(b.weight.shape)) for label, b in all_blocks(net)]
            assert after[:len(shapes)] == shapes, "rewire changed a block's shape"
            for label, block in all_blocks(net):
                if block.mask is not None:
                    assert block.mask.shape == block.weight.shape, f"{label}.mask no longer fits its weight"
            net.pop_param_remap()
            events += new
        return net, events

    def test_rewire_keeps_shapes(self, principle_class: Any, config: Any) -> None:
        net, _ = self._rewire_run(principle_class, config, seed=3)
        _finite_scores(net.forward(synthetic_batch(IN_FEATURES, NUM_CLASSES, 8, 2)[0]), 8, NUM_CLASSES,
                       "forward after rewire")

    def test_rewire_seeded(self, principle_class: Any, config: Any) -> None:
        (a, ea), (b, eb) = (self._rewire_run(principle_class, config, seed=3) for _ in range(2))
        assert same_network(a, b) is None, f"same seeds, different rewiring: {same_network(a, b)}"
        assert [e.to_dict() for e in ea] == [e.to_dict() for e in eb]

    def test_learns_in_tiny_run(self, principle_class: Any, config: Any) -> None:
        result = tiny_trainer(self.recipe_overrides,
                              principles={"connectivity": self.make(principle_class, config)}).run()
        _check_learned(result, self.min_accuracy, self._path(principle_class))


class _FireAtSteps(Trigger):
    """Kit-internal trigger: fires after the given step numbers."""

    name: ClassVar[str] = "conformance_fire_at_steps"

    class Config(PrincipleConfig):
        steps: tuple[int, ...] = (25, 45)

    def on_step(self, signals: Signals) -> Firing | None:
        return Firing(f"step {signals.step}") if signals.step in self.config.steps else None


class _SplitUnits(GrowthRule):
    """Kit-internal growth: Net2Wider split of the first ``units`` units of hidden layer 1."""

    name: ClassVar[str] = "conformance_split"

    class Config(PrincipleConfig):
        units: int = 8

    def grow(self, net: Network, signals: Signals, generator: torch.Generator) -> list[GrowthEvent]:
        return net.add_units(1, init="split", source_units=list(range(self.config.units)), noise=0.05,
                             generator=generator)


class _WatchGrowth(Callback):
    """Keeps the first layer's weight right after each growth."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.after: list[tuple[list[int], torch.Tensor]] = []

    def on_growth(self, events: list[GrowthEvent]) -> None:
        assert self.trainer is not None
        net = self.trainer.net
        self.after.append((list(net.widths), net.layers[0].weight.detach().clone()))


class LearningRuleConformance(PrincipleConformance):
    """On tiny digits with dense/never/none/sequential: learns, is deterministic, survives growth."""

    slot: ClassVar[str | None] = "learning"
    min_accuracy: ClassVar[float | None] = 0.5

    def trainer(self, principle_class: Any, config: Any, **principles: Any) -> Trainer:
        return tiny_trainer(self.recipe_overrides,
                            principles={"learning": self.make(principle_class, config), **principles})

    def test_learns(self, principle_class: Any, config: Any) -> None:
        _check_learned(self.trainer(principle_class, config).run(), self.min_accuracy,
                       self._path(principle_class))

    def test_deterministic(self, principle_class: Any, config: Any) -> None:
        runs = [self.trainer(principle_class, config) for _ in range(2)]
        results = [t.run() for t in runs]
        assert results[0].val_accuracy == results[1].val_accuracy, "same seed, different val accuracy"
        losses = [[e.train_loss for e in r.epochs] for r in results]
        assert losses[0] == losses[1], f"same seed, different train losses: {losses}"
        assert same_network(runs[0].net, runs[1].net) is None, (
            f"same seed, different final weights: {same_network(runs[0].net, runs[1].net)}")
        for p, q in zip(runs[0].composition.parameters(), runs[1].composition.parameters()):
            assert torch.equal(p.detach(), q.detach()), "same seed, different composition parameters"

    def test_step_contract(self, principle_class: Any, config: Any) -> None:
        t = self.trainer(principle_class, config)
        before = [p.detach().clone() for p in t.net.parameters()]
        x, y = t.task.x_train[:64], t.task.y_train[:64]
        for _ in range(3):
            loss = t.learning.step(t.net, t.composition, x, y, t.signals)
            assert isinstance(loss, torch.Tensor), f"step returned {type(loss).__name__}, not a tensor"
            assert loss.dim() == 0, f"step returned shape {tuple(loss.shape)}, not a 0-dim tensor"
            assert not loss.requires_grad and loss.grad_fn is None, "step must return a detached loss"
            assert math.isfinite(float(loss)), f"step returned a non-finite loss {float(loss)}"
            t.signals.record_step(loss, 64, 0)
        changed = any(not torch.equal(a, p.detach()) for a, p in zip(before, t.net.parameters()))
        assert changed, "three steps changed no network weight"

    def test_evaluate_contract(self, principle_class: Any, config: Any) -> None:
        t = self.trainer(principle_class, config)
        x, y = t.task.x_val[:50], t.task.y_val[:50]
        classes = t.task.num_classes
        with torch.no_grad():
            _finite_scores(t.learning.predict(t.net, t.composition, x), 50, classes, "predict")
            loss, predicted = t.learning.evaluate(t.net, t.composition, x, y)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "evaluate's loss must be a 0-dim tensor"
        assert math.isfinite(float(loss)), "evaluate's loss is not finite"
        assert tuple(predicted.shape) == (50,) and predicted.dtype == torch.int64, (
            f"evaluate's predictions must be [B] int64, got {tuple(predicted.shape)} {predicted.dtype}")
        assert ((predicted >= 0) & (predicted < classes)).all(), "predicted classes out of range"
        macs = t.learning.macs_per_sample(t.net, t.composition)
        assert isinstance(macs, int) and macs > 0, f"macs_per_sample must be a positive int, got {macs!r}"

    def test_learns_after_growth(self, principle_class: Any, config: Any) -> None:
        """Two Net2Wider splits of hidden layer 1 mid-run; new and old weights keep training."""
        watch = _WatchGrowth()
        t = self.trainer(principle_class, config, growth=_SplitUnits())
        n_train = t.task.x_train.shape[0]
        total = math.ceil(n_train / min(t.recipe.fidelity.batch_size, n_train)) * t.recipe.fidelity.epochs
        t.p["trigger"] = _FireAtSteps(steps=(max(1, total * 3 // 10), max(2, total * 55 // 100)))
        t.callbacks.append(watch)
        watch.trainer = t
        width = t.net.widths[1]
        result = t.run()
        assert len(result.growth_events) == 2 and t.net.widths[1] == width + 16, (
            f"expected two growths of 8 units, got widths {t.net.widths}")
        _check_learned(result, self.min_accuracy, f"{self._path(principle_class)} after growth")
        widths, weight = watch.after[-1]
        new_rows = slice(widths[1] - 8, widths[1])
        assert not torch.equal(weight[new_rows], t.net.layers[0].weight.detach()[new_rows]), (
            "the units added by the last growth were never trained (does on_growth follow the new tensors?)")
        _finite_scores(t.learning.predict(t.net, t.composition, t.task.x_val[:8]), 8, t.task.num_classes,
                       "predict after growth")


class CompositionConformance(PrincipleConformance):
    """Scores [B, C], a differentiable loss, growth-safe, and learns in a tiny run."""

    slot: ClassVar[str | None] = "composition"
    min_accuracy: ClassVar[float | None] = 0.5
    hidden: ClassVar[tuple[int, ...]] = (32, 32)

    def built(self, principle_class: Any, config: Any) -> tuple[Any, Network]:
        composition = self.make(principle_class, config)
        net = small_network(0, hidden=self.hidden)
        composition.build(net, num_classes=NUM_CLASSES, generator=generator(1))
        return composition, net

    def _check_forward_loss(self, composition: Any, net: Network, what: str) -> None:
        x, y = synthetic_batch(IN_FEATURES, NUM_CLASSES, 16, seed=5)
        scores = composition.forward(net, x)
        _finite_scores(scores, 16, NUM_CLASSES, what)
        loss = composition.loss(scores, y)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0, f"{what}: loss must be a 0-dim tensor"
        assert torch.isfinite(loss), f"{what}: loss is not finite"
        for p in [*net.parameters(), *composition.parameters()]:
            p.grad = None
        loss.backward()
        grad = net.layers[0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"{what}: no gradient reached the first layer"
        out = net.layers[-1].weight.grad
        if composition.reads_output_layer:
            assert out is not None and out.abs().sum() > 0, (
                f"{what}: no gradient reached the network's output layer; a composition that never reads it "
                "declares reads_output_layer = False (then it is not counted in the run's parameters or MACs)")
        else:
            assert out is None or out.abs().sum() == 0, (
                f"{what}: the scores depend on the network's output layer, but the composition declares "
                "reads_output_layer = False")
        for i, p in enumerate(composition.parameters()):
            assert p.is_leaf and p.requires_grad, f"{what}: composition parameter {i} is not a trainable leaf"
            assert p.grad is not None, f"{what}: no gradient reached composition parameter {i}"

    def test_forward_and_loss(self, principle_class: Any, config: Any) -> None:
        composition, net = self.built(principle_class, config)
        self._check_forward_loss(composition, net, "forward")
        macs = composition.forward_macs(net)
        assert isinstance(macs, int) and macs >= 0, f"forward_macs must be an int >= 0, got {macs!r}"

    def test_on_growth_add_units(self, principle_class: Any, config: Any) -> None:
        composition, net = self.built(principle_class, config)
        for layer in net.hidden_layers:
            net.add_units(layer, 4, init="zero", generator=generator(2))
            net.add_units(layer, init="split", source_units=[0, 1], noise=0.05, generator=generator(3))
            composition.on_growth(net, net.pop_param_remap())
            self._check_forward_loss(composition, net, f"forward after growing layer {layer}")

    def test_on_growth_add_layer_and_skip(self, principle_class: Any, config: Any) -> None:
        composition, net = self.built(principle_class, config)
        net.add_layer(1, generator=generator(4))
        composition.on_growth(net, net.pop_param_remap())
        self._check_forward_loss(composition, net, "forward after add_layer")
        net.add_skip(0, net.depth)
        net.snapshot(step=1, tag="conformance")
        composition.on_growth(net, net.pop_param_remap())
        self._check_forward_loss(composition, net, "forward after add_skip and snapshot")

    def test_learns_in_tiny_run(self, principle_class: Any, config: Any) -> None:
        result = tiny_trainer(self.recipe_overrides,
                              principles={"composition": self.make(principle_class, config)}).run()
        _check_learned(result, self.min_accuracy, self._path(principle_class))


__all__ = ["CompositionConformance", "ConnectivityConformance", "LearningRuleConformance"]
