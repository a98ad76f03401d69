"""Describing registered principles as JSON-ready rows (``plab plugins``, ``plab plugins --json``)."""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from principlelab.errors import field_bounds
from principlelab.registry.manager import get_registry
from principlelab.registry.registry import Registry


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    try:
        return to_jsonable_python(value)
    except Exception:
        return repr(value)


def describe_field(name: str, field: FieldInfo) -> dict[str, Any]:
    """One config field as a JSON-ready row: name, type, default, bounds, description, search hint."""
    if field.default is not PydanticUndefined:
        default, required = _jsonable(field.default), False
    elif field.default_factory is not None:
        default, required = _jsonable(field.default_factory()), False  # type: ignore[call-arg]
    else:
        default, required = None, True
    bounds = {name: _jsonable(value) for name, value in field_bounds(field).items()}
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    search = extra.get("search")
    if search is None and "choices" in extra:
        search = {"choices": extra["choices"]}
    return {
        "name": name,
        "type": _type_name(field.annotation),
        "default": default,
        "required": required,
        "bounds": bounds,
        "description": field.description or "",
        "search": _jsonable(search),
    }


def plugin_infos(registry: Registry | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per registered principle (what ``plab plugins --json`` prints).

    Keys: slot, name, package, version, module, class, description (the docstring's first paragraph),
    schema_hash, parameters (see :func:`describe_field`).
    """
    registry = get_registry() if registry is None else registry
    rows = []
    for slot, name, cls in registry.items():
        source = registry.source(slot, name)
        paragraph = (inspect_doc(cls) or "").strip().split("\n\n")[0]  # a sentence may wrap onto more lines
        rows.append({
            "slot": slot,
            "name": name,
            "package": source.package,
            "version": source.version,
            "module": source.module,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "description": " ".join(paragraph.split()),
            "schema_hash": registry.config_schema_hash(slot, name),
            "parameters": [describe_field(f, info) for f, info in cls.Config.model_fields.items()],
        })
    return rows


def inspect_doc(cls: type) -> str | None:
    """The class's own docstring (not an inherited base class's)."""
    return cls.__dict__.get("__doc__")
