"""The plugin hooks of principlelab (the shape of simonw/llm's hookspecs).

A plugin is a module with one or more functions decorated with :data:`hookimpl` and named after a
hook below. Each hook receives a ``register`` callback; the plugin calls it once per class::

    from principlelab.registry import hookimpl

    @hookimpl
    def register_growth_rules(register):
        register(MyGrowth)

A class registered through a slot's hook must subclass that slot's base class
(:data:`principlelab.core.principles.PRINCIPLE_BASES`); the callback rejects anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "principlelab"
"""The pluggy project name: plugins must use markers made with this name."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

RegisterClass = Callable[[type[Any]], None]
"""``register(cls)``: add one principle class to the slot of the hook that received it."""


@hookspec
def register_connectivities(register: RegisterClass) -> None:
    """Register :class:`~principlelab.core.principles.Connectivity` classes: ``register(cls)``.

    Added in 0.1.
    """


@hookspec
def register_learning_rules(register: RegisterClass) -> None:
    """Register :class:`~principlelab.core.principles.LearningRule` classes: ``register(cls)``.

    Added in 0.1.
    """


@hookspec
def register_triggers(register: RegisterClass) -> None:
    """Register :class:`~principlelab.core.principles.Trigger` classes: ``register(cls)``.

    Added in 0.1.
    """


@hookspec
def register_growth_rules(register: RegisterClass) -> None:
    """Register :class:`~principlelab.core.principles.GrowthRule` classes: ``register(cls)``.

    Added in 0.1.
    """


@hookspec
def register_compositions(register: RegisterClass) -> None:
    """Register :class:`~principlelab.core.principles.Composition` classes: ``register(cls)``.

    Added in 0.1.
    """


@hookspec
def register_tasks(register: Callable[..., None]) -> None:
    """Register tasks (data sets): ``register(name, loader, description="")``.

    ``loader`` is what :func:`principlelab.core.tasks.register_task` accepts; the callback delegates
    to it. Added in 0.1.
    """


SLOT_HOOKS: dict[str, str] = {
    "register_connectivities": "connectivity",
    "register_learning_rules": "learning",
    "register_triggers": "trigger",
    "register_growth_rules": "growth",
    "register_compositions": "composition",
}
"""Each principle hook's name and the slot whose classes it registers."""

TASK_HOOK = "register_tasks"
"""The hook that registers tasks instead of principle classes."""
