"""The versions recorded with every run: principlelab, torch, the meaning of its metrics
(``METRICS_VERSION``), and each chosen principle's package."""

from __future__ import annotations

from typing import Any

from principlelab.core.recipe import SLOTS, Recipe


def versions_for(registry: Any, recipe: Recipe) -> dict[str, str]:
    """``{"principlelab": v, "torch": v, "metrics": METRICS_VERSION, "<slot>.<name>": "package==version
    schema=<hash>"}`` (all strings)."""
    import torch

    from principlelab import __version__
    from principlelab.core.trainer import METRICS_VERSION

    versions = {"principlelab": __version__, "torch": torch.__version__, "metrics": str(METRICS_VERSION)}
    for slot in SLOTS:
        name = recipe.choice(slot).name
        source = registry.source(slot, name)
        versions[f"{slot}.{name}"] = (f"{source.package}=={source.version} "
                                      f"schema={registry.config_schema_hash(slot, name)}")
    return versions
