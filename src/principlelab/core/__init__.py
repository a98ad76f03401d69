"""The kernel: principle interfaces, the growable network, signals, tasks, recipes, the trainer."""

from principlelab.core.events import GrowthEvent
from principlelab.core.network import Network, ParamRemap
from principlelab.core.principles import (
    Composition,
    Connectivity,
    Firing,
    GrowthRule,
    LearningRule,
    Principle,
    PrincipleConfig,
    Trigger,
)
from principlelab.core.recipe import FIDELITIES, SLOTS, Fidelity, NetworkSpec, PrincipleChoice, Recipe
from principlelab.core.signals import LayerStats, Signals

__all__ = [
    "FIDELITIES", "SLOTS", "Composition", "Connectivity", "Fidelity", "Firing", "GrowthEvent", "GrowthRule",
    "LayerStats", "LearningRule", "Network", "NetworkSpec", "ParamRemap", "Principle", "PrincipleChoice",
    "PrincipleConfig", "Recipe", "Signals", "Trigger",
]
