"""GrowthEvent: the record of one structural change to a network."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GrowthEvent:
    """One structural change: what operation, where, how big, and whether it preserved the function.

    ``layer`` is a unit-layer index (0 = input, ``len(widths) - 1`` = output). ``params_delta`` and
    ``macs_delta`` are the changes in active parameters and in forward multiply-accumulates per
    sample. The trainer fills ``step``, ``epoch``, ``slot``, ``principle`` and the losses around it.
    """

    operation: str
    layer: int
    units: int = 0
    source_units: tuple[int, ...] = ()
    params_delta: int = 0
    macs_delta: int = 0
    function_preserving: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    step: int = -1
    epoch: int = -1
    slot: str = ""
    principle: str = ""
    reason: str = ""
    loss_before: float | None = None
    loss_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        data = asdict(self)
        data["source_units"] = list(self.source_units)
        return data


STRUCTURAL_PREFIXES = ("add_", "freeze", "snapshot")
"""Event operations that change the network (or its training) as growth; ``rewire`` is connectivity upkeep."""


def is_growth(slot: str | None, operation: str) -> bool:
    """True for an event a growth rule made (units, layers, skips, freezes, snapshots), not rewiring
    (``set``'s prune-and-regrow, recorded with slot ``connectivity``)."""
    return slot == "growth" or operation.startswith(STRUCTURAL_PREFIXES)


def count_growth(events: Iterable[GrowthEvent | Mapping[str, Any]]) -> int:
    """How many of ``events`` (objects or their dicts) are growth, not rewiring (see :func:`is_growth`)."""
    return sum(is_growth(e.slot, e.operation) if isinstance(e, GrowthEvent)
               else is_growth(e.get("slot"), str(e.get("operation", ""))) for e in events)
