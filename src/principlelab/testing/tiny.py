"""Small, fast training helpers shared by the conformance kit (and usable in any plugin's tests).

:func:`run_tiny` trains a small recipe (digits at a tiny fidelity, one hidden layer of 32) with
the built-in baseline principles for every slot you do not override, in well under a second.
The other helpers build small networks and drive them with plain SGD on a synthetic teacher task,
so a principle can be exercised without a data set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from principlelab.core.network import Block, Network
from principlelab.core.principles import Principle
from principlelab.core.recipe import SLOTS, NetworkSpec, Recipe, make_recipe
from principlelab.core.signals import Signals
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Callback, RunResult, Trainer
from principlelab.errors import ConfigError, UnknownNameError

TINY_TASK = "digits"
TINY_FIDELITY: dict[str, Any] = {"name": "tiny", "epochs": 8, "data_fraction": 0.5, "batch_size": 64}
"""About 630 training samples, 10 steps per epoch, 8 epochs: a few hundredths of a second on CPU."""
TINY_NETWORK: dict[str, Any] = {"hidden": (32,)}

IN_FEATURES = 12
NUM_CLASSES = 5
"""Shape of the synthetic teacher task used by :func:`synthetic_batch`."""


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` updated by ``overrides``; ``fidelity``/``network`` dicts are merged, not replaced."""
    merged = dict(base)
    for key, value in (overrides or {}).items():
        old = merged.get(key)
        if key in ("fidelity", "network") and isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def tiny_recipe(overrides: Mapping[str, Any] | None = None) -> Recipe:
    """The tiny recipe with ``overrides`` applied (``fidelity``/``network`` dicts are merged in)."""
    base = {"task": TINY_TASK, "seed": 0, "fidelity": TINY_FIDELITY, "network": TINY_NETWORK}
    return make_recipe(merge_overrides(base, overrides), source="run_tiny")


def check_compatible(principles: Mapping[str, Principle]) -> None:
    """Raise :class:`ConfigError` if a principle declares another chosen one incompatible."""
    for slot, principle in principles.items():
        for other_slot, banned in principle.incompatible_with.items():
            other = principles.get(other_slot)
            if other is not None and other.name in banned:
                raise ConfigError(f"{slot}.{principle.name} is incompatible with {other_slot}.{other.name}; "
                                  f"pass another {other_slot} principle (recipe_overrides)")


def tiny_trainer(recipe_overrides: Mapping[str, Any] | None = None, *,
                 principles: Mapping[str, Principle | type[Principle]] | None = None,
                 registry: Any = None, callbacks: Sequence[Callback] | None = None) -> Trainer:
    """A ready :class:`Trainer` for the tiny recipe (not run yet: read ``.net`` after ``.run()``).

    Args:
        recipe_overrides: recipe fields, e.g. ``{"growth": "random", "fidelity": {"epochs": 4}}``;
            slots named here are resolved through the registry.
        principles: ``{slot: instance or class}`` used as-is (a class gets its default config),
            whether or not it is registered; the recipe records its name and config.
        registry: where the other slots' names are resolved (default :func:`get_registry`).
        callbacks: passed to the trainer.
    """
    data = dict(recipe_overrides or {})
    chosen: dict[str, Principle] = {}
    for slot, given in (principles or {}).items():
        if slot not in SLOTS:
            raise UnknownNameError("slot", slot, SLOTS)
        instance = given if isinstance(given, Principle) else given()
        chosen[slot] = instance
        data[slot] = {"name": instance.name, "config": instance.config.model_dump(mode="json")}
    recipe = tiny_recipe(data)
    if len(chosen) < len(SLOTS):
        if registry is None:
            from principlelab.registry import get_registry

            registry = get_registry()
        for slot in SLOTS:
            if slot not in chosen:
                choice = recipe.choice(slot)
                cls = registry.get(slot, choice.name)
                chosen[slot] = cls(cls.validate_config(choice.config))
    check_compatible(chosen)
    task = load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
    return Trainer(recipe, dict(chosen), task, list(callbacks or []))


def run_tiny(recipe_overrides: Mapping[str, Any] | None = None, *,
             principles: Mapping[str, Principle | type[Principle]] | None = None,
             registry: Any = None, callbacks: Sequence[Callback] | None = None) -> RunResult:
    """Train the tiny recipe with ``recipe_overrides`` (see :func:`tiny_trainer`); the RunResult."""
    return tiny_trainer(recipe_overrides, principles=principles, registry=registry,
                        callbacks=callbacks).run()


# ---------------------------------------------------------------------------- synthetic helpers
def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def synthetic_batch(in_features: int, num_classes: int, batch: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [batch, in_features] Gaussian, ``y`` [batch] from a fixed random linear teacher."""
    x = torch.randn(batch, in_features, generator=generator(seed))
    teacher = torch.randn(num_classes, in_features, generator=generator(12345))
    return x, (x @ teacher.T).argmax(1)


def small_network(seed: int = 0, *, connectivity: str | Principle = "dense",
                  hidden: tuple[int, ...] = (32, 32), in_features: int = IN_FEATURES,
                  num_classes: int = NUM_CLASSES, width_cap: int | None = None,
                  activation: str = "relu") -> Network:
    """A network ``[in_features, *hidden, num_classes]`` built by a connectivity (name or instance)."""
    if isinstance(connectivity, str):
        from principlelab.registry import get_registry

        connectivity = get_registry().get("connectivity", connectivity)()
    spec = NetworkSpec(hidden=hidden, activation=activation)  # type: ignore[arg-type]
    return connectivity.build(spec, in_features=in_features, num_classes=num_classes,  # type: ignore[attr-defined]
                              width_cap=width_cap, generator=generator(seed))


def sgd_steps(net: Network, signals: Signals | None, steps: int, *, seed: int = 0, lr: float = 0.05,
              batch: int = 32) -> list[float]:
    """``steps`` plain SGD steps on the synthetic teacher task; each recorded in ``signals``.

    Follows growth (reads ``net.parameters()`` every step) and leaves ``net.hidden`` holding the
    last batch's activations, as the trainer does. Returns the step losses.
    """
    losses = []
    for i in range(steps):
        x, y = synthetic_batch(net.widths[0], net.widths[-1], batch, seed + i)
        params = net.parameters()
        for p in params:
            p.grad = None
        loss = F.cross_entropy(net.forward(x), y)
        loss.backward()
        if signals is not None and signals.wants_grad_norms:
            signals.record_grad_norms(net)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= lr * p.grad
        if net.frozen:
            net.restore_frozen()
        losses.append(float(loss.detach()))
        if signals is not None:
            signals.record_step(loss.detach(), batch, batch * 3 * net.forward_macs())
    return losses


def all_blocks(net: Network) -> list[tuple[str, Block]]:
    """``(label, block)`` for every layer and skip block, in a fixed order."""
    return [(f"layers[{i}]", b) for i, b in enumerate(net.layers)] + [
        (f"skips[{k}]", net.skips[k]) for k in sorted(net.skips)]


def count_params(net: Network) -> int:
    """Active parameters counted from scratch (connections present plus biases), ignoring caches."""
    total = 0
    for _, block in all_blocks(net):
        total += block.weight.numel() if block.mask is None else int((block.mask != 0).sum())
        total += 0 if block.bias is None else block.bias.numel()
    return total


def same_network(a: Network, b: Network) -> str | None:
    """``None`` if ``a`` and ``b`` have identical structure, weights and masks, else what differs."""
    if a.widths != b.widths:
        return f"widths {a.widths} != {b.widths}"
    if sorted(a.skips) != sorted(b.skips):
        return f"skip edges {sorted(a.skips)} != {sorted(b.skips)}"
    for (label, x), (_, y) in zip(all_blocks(a), all_blocks(b)):
        for attr in ("weight", "bias", "mask"):
            u, v = getattr(x, attr), getattr(y, attr)
            if (u is None) != (v is None):
                return f"{label}.{attr} is None in one network only"
            if u is not None and not torch.equal(u.detach(), v.detach()):
                return f"{label}.{attr} differs"
    return None
