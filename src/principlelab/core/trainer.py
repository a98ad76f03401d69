"""The training loop: one recipe, trained and evaluated, with callbacks.

Per step: ``LearningRule.step`` -> ``Signals.record_step`` -> ``Trigger.on_step`` -> on a firing,
``GrowthRule.grow`` and the optimizer follows the new parameters (not on the run's last step, where no
step would train what grew). Per epoch: connectivity rewiring,
``Trigger.on_epoch_end``, validation, an :class:`EpochReport` to every callback (progress, pruning,
recording). The hot path does no host syncs: losses stay tensors until the epoch ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from principlelab.core.events import GrowthEvent
from principlelab.core.principles import Composition, Firing, LearningRule, Principle
from principlelab.core.recipe import SLOTS, PrincipleChoice, Recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import TaskData, load_task
from principlelab.errors import ConfigError, PluginError, TrainingDiverged

EVAL_CHUNK = 8192


METRICS_VERSION = 3
"""Bumped whenever a stored metric changes meaning, or a recipe's training changes what it reports, so that
a campaign resumed after the upgrade starts a new study version instead of mixing both meanings in one (it is
part of the search space's fingerprint).
2: ``params`` and MACs count only what the predictions use (no unused output layer for capsule_routing
and forward_forward; snapshots' frozen copies counted), and ``growth_event_count`` leaves out rewiring.
3: no growth on the last training step (a step trigger's firing there added units that never trained but
counted in ``params`` and the events)."""


@dataclass
class EpochReport:
    """What one epoch produced; ``macs`` is the total compute spent so far (train + eval).

    ``val_loss`` and ``val_accuracy`` are measured before any growth at the epoch's end; ``params`` and
    ``widths`` after it (the network the next epoch trains), with that growth in ``events``. A
    function-preserving growth leaves the validation numbers as they were; another may not.
    """

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    params: int
    macs: int
    samples_seen: int
    wall_s: float
    widths: list[int]
    events: list[GrowthEvent] = field(default_factory=list)


@dataclass
class RunResult:
    """The outcome of one run: metrics, size, compute, time, growth events and the recipe."""

    recipe: Recipe
    test_accuracy: float
    test_loss: float
    val_accuracy: float
    val_loss: float
    params: int
    macs: int
    forward_macs: int
    samples_seen: int
    wall_s: float
    widths: list[int]
    growth_events: list[GrowthEvent]
    epochs: list[EpochReport]
    versions: dict[str, str] = field(default_factory=dict)
    structure: dict[str, Any] = field(default_factory=dict)  # final widths, skip edges, activation

    def curve(self) -> list[dict[str, Any]]:
        """Per epoch: losses, validation accuracy, parameters, compute, samples, time and widths."""
        return epoch_curve(self.epochs)


    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; growth events as dicts, the recipe resolved in full."""
        data = {k: v for k, v in asdict(self).items() if k not in ("recipe", "growth_events", "epochs")}
        data["growth_events"] = [e.to_dict() for e in self.growth_events]
        data["epochs"] = self.curve()
        data["recipe"] = self.recipe.model_dump(mode="json")
        return data


_CURVE_FIELDS = tuple(f.name for f in fields(EpochReport) if f.name != "events")


def epoch_curve(reports: list[EpochReport]) -> list[dict[str, Any]]:
    """JSON-ready rows of ``reports``: every field, ``events`` as their count (the events are stored on
    their own). Not ``asdict``, which would deep-copy each report's growth events only to drop them."""
    return [{k: getattr(r, k) for k in _CURVE_FIELDS} | {"widths": list(r.widths), "events": len(r.events)}
            for r in reports]


def seed_global_rng(seed: int) -> None:
    """Seed torch's global generator, which principles draw from when they take no generator of their own.

    Not ``torch.manual_seed``: where no accelerator is initialised (always, on the CPU build) it queues
    the seeding of each accelerator backend with a formatted stack trace, once per trial of a campaign.
    Networks train on the CPU; CUDA is seeded as well where it is in use.
    """
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


class Callback:
    """Observer of a run; every method is optional. Raise to stop (e.g. ``optuna.TrialPruned``)."""

    def on_train_start(self, recipe: Recipe, task: TaskData, total_steps: int) -> None: ...
    def on_growth(self, events: list[GrowthEvent]) -> None: ...
    def on_epoch_end(self, report: EpochReport) -> None: ...
    def on_train_end(self, result: RunResult) -> None: ...


def evaluate(learning: LearningRule, net: Any, composition: Composition, x: torch.Tensor,
             y: torch.Tensor) -> tuple[float, float]:
    """``(mean loss, accuracy)`` over ``x`` [N, in], ``y`` [N] in chunks, without autograd."""
    kept = net.hidden  # keep the training batch's activations for the activation statistics
    total_loss = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_CHUNK):
            xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
            loss, predicted = learning.evaluate(net, composition, xb, yb)
            total_loss += loss * xb.shape[0]
            correct += (predicted == yb).sum()
    net.hidden = kept
    n = max(1, x.shape[0])
    return float(total_loss) / n, int(correct) / n


class Trainer:
    """Trains one recipe with already-instantiated principles (see :func:`train`)."""

    def __init__(self, recipe: Recipe, principles: dict[str, Principle], task: TaskData,
                 callbacks: list[Callback] | None = None) -> None:
        self.recipe = recipe
        self.p = principles
        self.task = task
        self.callbacks = list(callbacks or [])
        seed = recipe.seed
        seed_global_rng(seed)
        self.init_generator = torch.Generator().manual_seed(seed)
        self.data_generator = torch.Generator().manual_seed(seed + 1)
        self.growth_generator = torch.Generator().manual_seed(seed + 2)
        self.net = principles["connectivity"].build(  # type: ignore[attr-defined]
            recipe.network, in_features=task.in_features, num_classes=task.num_classes,
            width_cap=recipe.fidelity.width_cap, generator=self.init_generator)
        self.composition: Composition = principles["composition"]  # type: ignore[assignment]
        self.learning: LearningRule = principles["learning"]  # type: ignore[assignment]
        self.composition.build(self.net, num_classes=task.num_classes, generator=self.init_generator)
        self.learning.setup(self.net, self.composition)
        required = principles["trigger"].required_signals | principles["growth"].required_signals  # type: ignore
        self.signals = Signals(self.net, frozenset(required))
        self.events: list[GrowthEvent] = []
        self._awaiting_loss_after: list[GrowthEvent] = []

    def num_params(self) -> int:
        """Parameters the run's predictions use: the network's active ones (without the output layer when
        the readout never uses it), the composition's (its ``num_params``, frozen parts included; none when
        the learning rule has its own readout) and the learning rule's own."""
        learning, composition = self.learning, self.composition
        network = self.net.num_params(output_layer=learning.counts_output_layer(composition))
        composed = composition.num_params(self.net) if learning.uses_composition else 0
        return network + composed + sum(t.numel() for t in learning.parameters())

    def _grow(self, firing: Firing, epoch: int) -> list[GrowthEvent]:
        growth, net = self.p["growth"], self.net
        shape_before = (list(net.widths), net.num_params())
        events = growth.grow(net, self.signals, self.growth_generator)  # type: ignore[attr-defined]
        if not events and (list(net.widths), net.num_params()) != shape_before:
            raise PluginError(f"growth rule '{growth.name}' changed the network (widths {shape_before[0]} -> "
                              f"{net.widths}, params {shape_before[1]} -> {net.num_params()}) but returned no "
                              "GrowthEvent; return the events of the growth operations it called")
        before = self.signals.val_losses[-1] if self.signals.val_losses else None
        for event in events:
            event.step, event.epoch, event.reason = self.signals.step, epoch, firing.reason
            event.slot, event.principle, event.loss_before = "growth", growth.name, before
        self._after_structure_change(events)
        self.p["trigger"].on_growth(events, self.signals)  # type: ignore[attr-defined]
        return events

    def _check_firing(self, firing: object, hook: str) -> None:
        if not isinstance(firing, Firing):
            raise PluginError(f"trigger '{self.p['trigger'].name}'.{hook} returned {firing!r}; return "
                              "Firing(reason) to grow, or None")

    def _check_scores(self, x: torch.Tensor) -> None:
        """Raise :class:`PluginError` naming the principle if the class scores for ``x`` [n, in] are not
        [n, num_classes] (a wrong shape failed later, deep in the loss). No gradient, the global generator
        and the hidden activations restored: the run is unchanged."""
        learning, composition, net = self.learning, self.composition, self.net
        kept = net.hidden
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            scores = learning.predict(net, composition, x)
        net.hidden = kept
        expected = [x.shape[0], self.task.num_classes]
        if not isinstance(scores, torch.Tensor) or list(scores.shape) != expected:
            own_predict = type(learning).predict is not LearningRule.predict
            who = f"learning rule '{learning.name}'" if own_predict else f"composition '{composition.name}'"
            shape = list(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise PluginError(f"{who} returned class scores {shape} for {expected[0]} samples; expected "
                              f"{expected}: one score per class")

    def _after_structure_change(self, events: list[GrowthEvent]) -> None:
        remap = self.net.pop_param_remap()
        if remap or events:  # compositions also hear about shape-free changes (snapshots, rewiring)
            self.composition.on_growth(self.net, remap)
        if remap:
            self.learning.on_growth(self.net, self.composition, remap)
        if events:
            for event in events:  # the network's claim, as the run's readout sees it
                event.function_preserving = (self.learning.keeps_function(event)
                                             and self.composition.keeps_function(event))
            self.events.extend(events)
            self._awaiting_loss_after.extend(events)
            for callback in self.callbacks:
                callback.on_growth(events)

    def run(self) -> RunResult:
        """Train for the fidelity's epochs; evaluate on validation each epoch, on test at the end."""
        recipe, task, signals, net = self.recipe, self.task, self.signals, self.net
        learning, composition, trigger = self.learning, self.composition, self.p["trigger"]
        fidelity = recipe.fidelity
        n_train, batch = task.x_train.shape[0], min(fidelity.batch_size, task.x_train.shape[0])
        steps_per_epoch = math.ceil(n_train / batch)
        signals.total_epochs, signals.steps_per_epoch = fidelity.epochs, steps_per_epoch
        for callback in self.callbacks:
            callback.on_train_start(recipe, task, steps_per_epoch * fidelity.epochs)
        self._check_scores(task.x_train[:2])
        started = time.perf_counter()
        reports: list[EpochReport] = []
        for epoch in range(fidelity.epochs):
            signals.epoch = epoch
            last_epoch = epoch == fidelity.epochs - 1
            first_event = len(self.events)
            order = torch.randperm(n_train, generator=self.data_generator)
            xs, ys = task.x_train[order], task.y_train[order]  # one gather per epoch, then views
            macs = learning.macs_per_sample(net, composition)
            for start in range(0, n_train, batch):
                xb, yb = xs[start:start + batch], ys[start:start + batch]
                signals.batch_x, signals.batch_y = xb, yb
                loss = learning.step(net, composition, xb, yb, signals)
                signals.record_step(loss, xb.shape[0], xb.shape[0] * macs)
                firing = trigger.on_step(signals)  # type: ignore[attr-defined]
                if firing is not None:
                    self._check_firing(firing, "on_step")
                    if last_epoch and start + batch >= n_train:  # the last step: nothing would train new units
                        trigger.on_growth([], signals)  # type: ignore[attr-defined]
                    else:
                        self._grow(firing, epoch)
                        macs = learning.macs_per_sample(net, composition)
            train_loss = signals.close_epoch()
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}")
            rewired = [] if last_epoch else self.p["connectivity"].rewire(  # type: ignore[attr-defined]
                net, epoch=epoch, generator=self.growth_generator)
            for event in rewired:
                event.step, event.epoch, event.slot = signals.step, epoch, "connectivity"
                event.principle = self.p["connectivity"].name
            self._after_structure_change(rewired)
            val_loss, val_acc = evaluate(learning, net, composition, task.x_val, task.y_val)
            signals.eval_macs += task.x_val.shape[0] * learning.eval_macs_per_sample(net, composition)
            if not math.isfinite(val_loss):
                raise TrainingDiverged(f"validation loss became {val_loss} in epoch {epoch}")
            for event in self._awaiting_loss_after:
                event.loss_after = val_loss
            self._awaiting_loss_after = []
            signals.val_losses.append(val_loss)
            signals.val_accuracies.append(val_acc)
            firing = trigger.on_epoch_end(signals)  # type: ignore[attr-defined]
            if firing is not None:
                self._check_firing(firing, "on_epoch_end")
            if firing is not None and not last_epoch:
                self._grow(firing, epoch)
            elif firing is not None:  # no growth after the last epoch: tell the trigger nothing grew
                trigger.on_growth([], signals)  # type: ignore[attr-defined]
            report = EpochReport(epoch, signals.step, train_loss, val_loss, val_acc, self.num_params(),
                                 signals.total_macs, signals.samples_seen, time.perf_counter() - started,
                                 list(net.widths), self.events[first_event:])
            reports.append(report)
            for callback in self.callbacks:
                callback.on_epoch_end(report)
        test_loss, test_acc = evaluate(learning, net, composition, task.x_test, task.y_test)
        signals.eval_macs += task.x_test.shape[0] * learning.eval_macs_per_sample(net, composition)
        last = reports[-1]
        resolved = recipe.model_copy(update={  # every config with its defaults, as the run used it
            slot: PrincipleChoice(name=getattr(recipe, slot).name, config=self.p[slot].config.model_dump(mode="json"))
            for slot in SLOTS})
        result = RunResult(
            recipe=resolved, test_accuracy=test_acc, test_loss=test_loss, val_accuracy=last.val_accuracy,
            val_loss=last.val_loss, params=self.num_params(), macs=signals.total_macs,
            forward_macs=learning.eval_macs_per_sample(net, composition), samples_seen=signals.samples_seen,
            wall_s=time.perf_counter() - started, widths=list(net.widths), growth_events=self.events,
            epochs=reports, structure={"widths": list(net.widths), "skips": sorted(net.skips),
                                       "activation": net.activation})
        for callback in self.callbacks:
            callback.on_train_end(result)
        return result


def train(recipe: Recipe, *, callbacks: list[Callback] | None = None, registry: Any = None,
          task: TaskData | None = None) -> RunResult:
    """Resolve ``recipe``'s principles through the registry, load its task, train, return the result."""
    from principlelab.registry import get_registry
    from principlelab.registry.versions import versions_for

    if task is not None and task.name != recipe.task:  # the result would name the wrong task
        raise ConfigError(f"train: task data {task.name!r} is not the recipe's task {recipe.task!r}; load "
                          "the recipe's task, or set recipe.task to the data's")
    registry = registry or get_registry()
    principles = registry.instantiate(recipe)
    task = task or load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
    result = Trainer(recipe, principles, task, callbacks).run()
    result.versions = versions_for(registry, recipe)
    return result
