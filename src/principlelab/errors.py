"""The one error hierarchy of principlelab.

Every message says what failed, the offending value, what is allowed and what to do, on one line,
so the CLI can print it as-is (``plab: error: ...``) and exit non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class PrincipleLabError(Exception):
    """Base class of every error principlelab raises on purpose."""


class UnknownNameError(PrincipleLabError, KeyError):
    """A principle, slot, task or fidelity name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], *, scope: str | None = None) -> None:
        """``scope`` (e.g. ``"in campaign 'c'"``): the name is looked up among what has runs there, so the
        message says that no run there has it (the name may well be registered)."""
        self.kind, self.name, self.known = kind, name, sorted(known)
        if scope is None:
            super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none registered)'}")
        else:
            super().__init__(f"no run {scope} has {kind} {name!r}; those with runs: {', '.join(self.known) or 'none'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(PrincipleLabError, ValueError):
    """A parameter outside its allowed range, or a malformed recipe/campaign file."""


class TaskDataError(PrincipleLabError, ValueError):
    """A dataset that cannot be loaded (missing file, mismatched X/y, bad format)."""


class PluginError(PrincipleLabError):
    """A third-party plugin that failed to load (raised only in strict mode)."""


class GrowthError(PrincipleLabError, ValueError):
    """A growth operation that cannot be applied to this network as asked."""


class TrainingDiverged(PrincipleLabError, FloatingPointError):
    """The loss became NaN or infinite; the run is recorded as failed with this reason."""


class StorageError(PrincipleLabError):
    """A database that cannot be reached or written."""


def undecodable_byte(exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8: ``byte 0xe9 at offset 3``."""
    return f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"


def format_validation_error(prefix: str, exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line naming each bad field (``prefix.field``), the bad value and the bound it broke.

    With the validated ``model``, an unknown key also lists the allowed keys, and a value out of
    range the field's whole range.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        value = err.get("input")
        long = isinstance(value, dict) or (isinstance(value, list) and len(repr(value)) > 80)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in _RANGE_ERRORS and str(value).strip().lower().lstrip("+-") == "nan":
            message = "Input should be a number, not NaN"  # NaN fails every bound, so the bound named misleads
        # a whole table or level list would drown the message; a validator's own message may quote the value
        shown = "" if long or "got " in message else f" (got {value!r})"
        parts.append(f"{loc + ': ' if loc else ''}{message}{shown}{_allowed(model, err)}")
    return "; ".join(parts)


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_BOUNDS = (("ge", "{} <= "), ("gt", "{} < "), ("le", " <= {}"), ("lt", " < {}"))


def _allowed(model: type[BaseModel] | None, err: Any) -> str:
    """``; allowed keys: ...`` or ``; allowed: LOW <= field <= HIGH`` for ``err``, if ``model`` says."""
    if model is None or err["type"] not in _RANGE_ERRORS | {"extra_forbidden"}:
        return ""
    *parents, last = err["loc"]
    owner: type[BaseModel] | None = model
    for part in parents:
        if isinstance(part, int) or owner is None:
            continue  # an item of a list field: its model was found with the field
        owner = _model_in(owner.model_fields[part].annotation) if part in owner.model_fields else None
    if owner is None:
        return ""
    if err["type"] == "extra_forbidden":
        return f"; allowed keys: {', '.join(owner.model_fields)}"
    field = owner.model_fields.get(str(last))
    if field is None:
        return ""
    bounds = field_bounds(field)
    low, high = "", ""
    for name, text in _BOUNDS:
        if name in bounds and name in ("ge", "gt"):
            low = text.format(bounds[name])
        elif name in bounds:
            high = text.format(bounds[name])
    return f"; allowed: {low}{last}{high}" if low and high else ""


def field_bounds(field: FieldInfo) -> dict[str, Any]:
    """``{"ge"|"gt"|"le"|"lt": value}``: the bounds a pydantic field's metadata sets (a later one wins)."""
    bounds: dict[str, Any] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(meta, name, None)
            if value is not None:
                bounds[name] = value
    return bounds


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model in a field's annotation (``M``, ``M | None``, ``list[M]``, ``dict[str, M]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
