"""Scaffolding of new principle plugin packages (``plab new-principle``); see :mod:`.scaffold`."""

from principlelab.scaffold.scaffold import (
    SLOT_TEMPLATES,
    Scaffolded,
    class_name_for,
    default_directory,
    default_package,
    distribution_name,
    next_steps,
    plan,
    scaffold,
    validate_name,
    validate_package,
    validate_slot,
)

__all__ = [
    "SLOT_TEMPLATES",
    "Scaffolded",
    "class_name_for",
    "default_directory",
    "default_package",
    "distribution_name",
    "next_steps",
    "plan",
    "scaffold",
    "validate_name",
    "validate_package",
    "validate_slot",
]
