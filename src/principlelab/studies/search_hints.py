"""How a principle's config field becomes an Optuna distribution, and how a value is checked against one.

A field is searched when it carries a search hint
(``json_schema_extra={"search": {"low", "high", "log"[, "step"]}}`` or ``{"search": {"choices": [...]}}``)
or when it is a ``Literal[...]`` (its values) or a ``bool`` (``[False, True]``); every other field
stays at its default. ``json_schema_extra={"search": False}`` opts a Literal/bool field out. A hint
that does not fit its field (unknown keys, low above high, bounds the field's own validation rejects)
is a :class:`ConfigError` naming ``slot.principle.field``.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from pydantic.fields import FieldInfo

from principlelab.core.principles import Principle
from principlelab.errors import ConfigError

__all__ = ["bounds_text", "distribution_contains", "distribution_json", "field_distribution"]

_HINT_KEYS = frozenset({"low", "high", "log", "step", "choices"})
_CHOICE_TYPES = (type(None), bool, int, float, str)


def distribution_json(dist: BaseDistribution) -> dict[str, Any]:
    """The distribution as a JSON-ready dict (``optuna.distributions.distribution_to_json``, parsed)."""
    loaded: dict[str, Any] = json.loads(distribution_to_json(dist))
    return loaded


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` / ``Optional[X]`` -> ``X``; anything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _search_hint(info: FieldInfo) -> Any:
    """The field's search hint: a dict, ``False`` (opted out) or ``None`` (no hint)."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    hint = extra.get("search")
    if hint is None and "choices" in extra:  # the short form registry.describe.describe_field also reads
        hint = {"choices": extra["choices"]}
    return hint


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(cls: type[Principle], field: str, value: Any, what: str) -> None:
    """Raise :class:`ConfigError` naming ``slot.name.field`` if ``value`` breaks the field's bounds."""
    try:
        cls.validate_config({field: value})
    except ConfigError as exc:
        raise ConfigError(f"{cls.slot}.{cls.name}.{field}: search hint {what} is not a valid value of the "
                          f"field ({exc}); keep the hint inside the field's bounds") from None


def field_distribution(cls: type[Principle], field: str,
                      info: FieldInfo) -> tuple[BaseDistribution, bool] | None:
    """``(distribution, is_int)`` of a config field, or ``None`` if it is not searched."""
    where = f"{cls.slot}.{cls.name}.{field}"
    hint = _search_hint(info)
    annotation = _unwrap_optional(info.annotation)
    if hint is False:
        return None
    if hint is None:
        if typing.get_origin(annotation) is Literal:
            values = list(typing.get_args(annotation))
            if len(values) < 2 or not all(isinstance(v, _CHOICE_TYPES) for v in values):
                return None  # nothing to choose, or values Optuna cannot store: keep the default
            return CategoricalDistribution(values), False
        if annotation is bool:
            return CategoricalDistribution([False, True]), False
        return None
    if not isinstance(hint, Mapping):
        raise ConfigError(f"{where}: search hint must be a dict like {{'low': .., 'high': .., 'log': ..}} or "
                          f"{{'choices': [..]}} (or False), got {hint!r}")
    unknown = set(hint) - _HINT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown search hint key(s) {sorted(unknown)}; allowed: low, high, log, "
                          "step, or choices")
    if "choices" in hint:
        if set(hint) != {"choices"}:
            raise ConfigError(f"{where}: a search hint with 'choices' takes no other keys, "
                              f"got {sorted(hint)}")
        choices = hint["choices"]
        if isinstance(choices, str | bytes) or not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{where}: search hint 'choices' must be a non-empty list, got {choices!r}")
        bad = [c for c in choices if not isinstance(c, _CHOICE_TYPES)]
        if bad:
            raise ConfigError(f"{where}: search hint choices must be None, bool, int, float or str, "
                              f"got {bad!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: search hint choices repeat a value: {list(choices)!r}")
        for choice in choices:
            _check_value(cls, field, choice, f"choice {choice!r}")
        return CategoricalDistribution(list(choices)), False
    if "low" not in hint or "high" not in hint:
        raise ConfigError(f"{where}: a range search hint needs both 'low' and 'high', got {dict(hint)!r}")
    low, high, log, step = hint["low"], hint["high"], hint.get("log", False), hint.get("step")
    if not (_is_number(low) and _is_number(high)) or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{where}: search hint low/high must be finite numbers, "
                          f"got low={low!r} high={high!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: search hint 'log' must be true or false, got {log!r}")
    if step is not None and not (_is_number(step) and step > 0):
        raise ConfigError(f"{where}: search hint 'step' must be a positive number, got {step!r}")
    if low > high:
        raise ConfigError(f"{where}: search hint low={low!r} is above high={high!r}")
    if annotation is bool or typing.get_origin(annotation) is Literal:
        raise ConfigError(f"{where}: a low/high search hint needs an int or float field; give this "
                          "Literal/bool field {'choices': [...]} instead")
    is_int = annotation is int
    if is_int:
        if not all(float(v).is_integer() for v in (low, high, step if step is not None else 1)):
            raise ConfigError(f"{where} is an int field; its search hint low/high/step must be integers, got "
                              f"low={low!r} high={high!r} step={step!r}")
        low, high, step = int(low), int(high), int(step) if step is not None else 1
    elif annotation is not float:
        raise ConfigError(f"{where}: a low/high search hint needs an int or float field, the field is "
                          f"{annotation!r}")
    else:
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    _check_value(cls, field, low, f"low={low!r}")
    _check_value(cls, field, high, f"high={high!r}")
    try:
        if is_int:
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1)), True
        return FloatDistribution(low, high, log=log, step=step), False
    except ValueError as exc:
        raise ConfigError(f"{where}: search hint {dict(hint)!r} is not a valid Optuna distribution: "
                          f"{exc}") from None


def _match_choice(choices: tuple[Any, ...], value: Any) -> tuple[bool, Any]:
    """``(found, the choice equal to value)``; ``True`` never matches ``1`` (nor ``1.0``)."""
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return True, choice
    for choice in choices:
        if isinstance(choice, bool) != isinstance(value, bool):
            continue
        if _is_number(choice) and _is_number(value) and choice == value:
            return True, choice
    return False, None


def distribution_contains(dist: BaseDistribution, value: Any) -> tuple[bool, Any]:
    """Whether ``dist`` holds ``value``, and the value as Optuna should be given it."""
    if isinstance(dist, CategoricalDistribution):
        return _match_choice(dist.choices, value)
    if not _is_number(value):
        return False, None
    if isinstance(dist, IntDistribution):
        if not float(value).is_integer():
            return False, None
        value = int(value)
        ok = dist.low <= value <= dist.high and (value - dist.low) % dist.step == 0
        return ok, value
    assert isinstance(dist, FloatDistribution)
    value = float(value)
    ok = dist.low <= value <= dist.high
    if ok and dist.step is not None:
        k = round((value - dist.low) / dist.step)
        ok = math.isclose(dist.low + k * dist.step, value, rel_tol=1e-9, abs_tol=1e-12)
    return ok, value


def bounds_text(dist: BaseDistribution) -> str:
    """The values ``dist`` allows, for error messages: ``[0.001, 0.1] log``, ``choices [...]``."""
    if isinstance(dist, CategoricalDistribution):
        return f"choices {list(dist.choices)!r}"
    assert isinstance(dist, IntDistribution | FloatDistribution)
    return f"[{dist.low!r}, {dist.high!r}]" + (" log" if dist.log else "") + (
        f" step {dist.step!r}" if dist.step not in (None, 1) else "")
