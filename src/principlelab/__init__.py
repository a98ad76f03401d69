"""principlelab: a plugin-based testbed for principle engineering of neural networks.

The public API: :func:`run` trains one recipe; the principle interfaces live in
:mod:`principlelab.core`; :mod:`principlelab.registry` resolves names to principles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from principlelab.core.trainer import RunResult


def run(recipe: Any = None, /, **fields: Any) -> RunResult:
    """Train one recipe (a :class:`~principlelab.core.recipe.Recipe`, a dict, or keyword fields).

    Example: ``principlelab.run(task="digits", growth="random", trigger="every_k")``.
    """
    from principlelab.core.recipe import Recipe, make_recipe
    from principlelab.core.trainer import train

    if not isinstance(recipe, Recipe):
        recipe = make_recipe({**(recipe or {}), **fields})
    return train(recipe)
