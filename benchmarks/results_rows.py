"""The experiments of ``benchmarks/results.py``: its settings and the rows of its three tables
(label -> recipe slots). Shared by the script (which runs them) and :mod:`results_doc` (which
writes them up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Settings:
    """Every knob of the experiments; ``--quick`` swaps in :data:`QUICK`."""

    compute_hidden: tuple[int, ...] = (256, 256)
    budget_epochs: tuple[int, ...] = (10, 30)  # backprop epochs that define the budgets
    growth_epochs: int = 30
    growth_k: int = 6  # every_k period: firings after epochs 6, 12, 18, 24
    growth_firings: int = 4
    growth_units: int = 16  # units per firing (every rule), so 64 in all
    small_2l: tuple[int, ...] = (64, 64)
    small_1l: tuple[int, ...] = (64,)
    trigger_epochs: int = 30
    trigger_k: int = 6
    trigger_units: int = 16


FULL = Settings()
QUICK = Settings(budget_epochs=(2,), growth_epochs=5, growth_k=1, trigger_epochs=4, trigger_k=1)

CAPSULE_R3 = "capsule_routing, paper r=3 (routing_iterations=2)"
CAPSULE_R0 = "capsule_routing, r=0 uniform coupling (routing_iterations=0)"


def slot(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "config": config}


def recipe_dict(task: str, seed: int, epochs: int, hidden: tuple[int, ...], **slots: Any) -> dict[str, Any]:
    return {"task": task, "seed": seed, "fidelity": {"name": "results", "epochs": epochs},
            "network": {"hidden": list(hidden)}, **slots}


def compute_methods() -> dict[str, dict[str, Any]]:
    """Table 1 rows: label -> recipe slots."""
    return {
        "backprop (sequential)": {},
        "forward_forward": {"learning": slot("forward_forward")},
        CAPSULE_R3: {"composition": slot("capsule_routing", routing_iterations=2)},
        CAPSULE_R0: {"composition": slot("capsule_routing", routing_iterations=0)},
    }


def growth_rows(s: Settings, hidden: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Table 2 rows: label -> (hidden widths, recipe slots). Every growing row splits ``units``
    units per firing of ``every_k`` and at most ``firings * units`` in all."""
    total = s.growth_firings * s.growth_units
    caps = {"operator": "split", "top_fraction": 1.0, "coarse_cap": s.growth_units,
            "medium_cap": s.growth_units, "fine_cap": s.growth_units, "max_total_units": total}
    trigger = slot("every_k", k=s.growth_k, max_firings=s.growth_firings)
    final = tuple(w + total // len(hidden) for w in hidden)
    return {
        "none (start size)": {"hidden": hidden, "slots": {}},
        "random": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("random", units=s.growth_units, max_total=total, operator="split")}},
        "extrema (percentile)": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("extrema", mode="percentile", percentile=20.0, **caps)}},
        "katz (in-influence)": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("katz", **caps)}},
        "extrema (auto: dead/always-max), not size-matched": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("extrema", **caps)}},
        f"static {list(final)} (final size, no growth)": {"hidden": final, "slots": {}},
    }


MATCHED = ("random", "extrema (percentile)", "katz (in-influence)")


def trigger_rows(s: Settings) -> dict[str, dict[str, Any]]:
    """Table 3 rows: label -> trigger slot (growth: random, ``trigger_units`` per firing)."""
    return {
        "never": slot("never"),
        f"every_k (k={s.trigger_k})": slot("every_k", k=s.trigger_k),
        "grad_variance": slot("grad_variance"),
        "signal_economy": slot("signal_economy"),
        "plateau": slot("plateau"),
    }


