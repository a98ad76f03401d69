"""The registry: one plain dict per slot of principle name -> class, plus where each came from.

The plugin manager (:mod:`principlelab.registry.manager`) fills a :class:`Registry` from the
built-in plugins, installed third-party plugins and an optional local ``principles.py``; code that
runs recipes only reads it: :meth:`Registry.get`, :meth:`Registry.validate_recipe`,
:meth:`Registry.instantiate`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from principlelab.core.principles import PRINCIPLE_BASES, Principle
from principlelab.core.recipe import SLOTS, Recipe
from principlelab.core.signals import KNOWN_SIGNALS
from principlelab.errors import ConfigError, PluginError, UnknownNameError, format_validation_error

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
"""Allowed principle names: they appear in dotted parameter paths (``growth.<name>.<field>``)."""


@dataclass(frozen=True)
class PluginSource:
    """Where a registered class came from: the distribution (or ``local:<path>``), its version, the module."""

    package: str
    version: str
    module: str

    def __str__(self) -> str:
        return f"{self.package} {self.version} ({self.module})"


def _slot_of(cls: type) -> str | None:
    for slot, base in PRINCIPLE_BASES.items():
        if issubclass(cls, base):
            return slot
    return None


class Registry:
    """Principle classes by slot and name, and the :class:`PluginSource` of each.

    ``classes[slot]`` is a plain ``dict`` of name -> class; ``sources[(slot, name)]`` says which
    package registered it. ``problems`` keeps the one-line message of every plugin the manager
    skipped (also issued as warnings).
    """

    def __init__(self) -> None:
        self.classes: dict[str, dict[str, type[Principle]]] = {slot: {} for slot in SLOTS}
        self.sources: dict[tuple[str, str], PluginSource] = {}
        self.task_sources: dict[str, PluginSource] = {}
        self.problems: list[str] = []
        self._schema_hashes: dict[tuple[str, str], tuple[type, str]] = {}

    # -- filling -----------------------------------------------------------------------------

    def add(self, cls: Any, source: PluginSource, *, slot: str | None = None) -> None:
        """Register ``cls`` (for ``slot``, if given, else the slot of its base class).

        Raises :class:`PluginError` if ``cls`` is not a principle class of that slot, has no valid
        ``name``, no pydantic ``Config`` (or one whose defaults do not validate), is abstract, or
        its name is taken by another class (the message names both sources).
        """
        if not isinstance(cls, type):
            raise PluginError(f"register() expects a principle class, got {cls!r}")
        actual = _slot_of(cls)
        if slot is not None and slot not in PRINCIPLE_BASES:
            raise UnknownNameError("slot", slot, SLOTS)
        if actual is None:
            expected = PRINCIPLE_BASES[slot].__name__ if slot else " or ".join(
                b.__name__ for b in PRINCIPLE_BASES.values())
            raise PluginError(f"{cls.__qualname__} is not a principle class; subclass {expected} "
                              "from principlelab.core.principles")
        if slot is not None and actual != slot:
            raise PluginError(
                f"{cls.__qualname__} is a {PRINCIPLE_BASES[actual].__name__} (slot {actual!r}) "
                f"but was registered for slot {slot!r}; register it in the {actual!r} slot's hook "
                f"instead, or subclass {PRINCIPLE_BASES[slot].__name__}")
        slot = actual
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{cls.__qualname__} has no registry name; set the class attribute "
                              "name = \"...\" (a non-empty string)")
        if not NAME_PATTERN.match(name):
            raise PluginError(f"{cls.__qualname__}.name {name!r} is not allowed; use letters, "
                              "digits, '_' and '-' only")
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"{slot}.{name} ({cls.__qualname__}) has Config={config!r}; it must "
                              "be a pydantic BaseModel subclass (e.g. of PrincipleConfig)")
        if config.model_config.get("extra") != "forbid":  # else a misspelled key would be silently ignored
            raise PluginError(f"{slot}.{name} ({cls.__qualname__}) has a Config that accepts unknown keys; "
                              "subclass PrincipleConfig (or set model_config = ConfigDict(extra='forbid'))")
        try:  # pydantic does not validate defaults: pass them in as values
            config(**{field: info.get_default(call_default_factory=True)
                      for field, info in config.model_fields.items() if not info.is_required()})
        except ValidationError as exc:
            raise PluginError(f"{slot}.{name} has a Config whose defaults do not validate "
                              f"(every field needs a valid default): "
                              f"{format_validation_error(f'{slot}.{name}', exc)}") from None
        _check_search_hints(cls, config)
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            raise PluginError(f"{slot}.{name} ({cls.__qualname__}) is abstract; implement {missing}")
        signals = getattr(cls, "required_signals", frozenset())
        if isinstance(signals, str) or not isinstance(signals, (set, frozenset)) or not signals <= KNOWN_SIGNALS:
            raise PluginError(f"{slot}.{name}.required_signals must be a set of signal names from "
                              f"{', '.join(sorted(KNOWN_SIGNALS))}; got {signals!r}")
        incompatible = getattr(cls, "incompatible_with", {})
        if not isinstance(incompatible, Mapping) or any(
                k not in PRINCIPLE_BASES or isinstance(v, str) for k, v in incompatible.items()):
            raise PluginError(f"{slot}.{name}.incompatible_with must map slot names "
                              f"({', '.join(SLOTS)}) to sets of principle names, got {incompatible!r}")
        existing = self.classes[slot].get(name)
        if existing is cls:
            return
        if existing is not None:
            raise PluginError(
                f"duplicate {slot} principle {name!r}: {cls.__qualname__} from {source} and "
                f"{existing.__qualname__} from {self.sources[(slot, name)]}; uninstall or rename one "
                "(set PRINCIPLELAB_PLUGINS to load only some plugins)")
        self.classes[slot][name] = cls
        self.sources[(slot, name)] = source

    def remove(self, slot: str, name: str) -> None:
        """Forget ``slot``/``name`` (used to roll back a plugin that failed half-way)."""
        self._slot(slot).pop(name, None)
        self.sources.pop((slot, name), None)

    # -- reading -----------------------------------------------------------------------------

    def _slot(self, slot: str) -> dict[str, type[Principle]]:
        if slot not in self.classes:
            raise UnknownNameError("slot", slot, SLOTS)
        return self.classes[slot]

    def get(self, slot: str, name: str) -> type[Principle]:
        """The class registered as ``name`` in ``slot``; :class:`UnknownNameError` lists the known ones."""
        classes = self._slot(slot)
        if name not in classes:
            raise UnknownNameError(f"{slot} principle", name, classes)
        return classes[name]

    def __contains__(self, key: object) -> bool:
        """``(slot, name) in registry``."""
        return isinstance(key, tuple) and len(key) == 2 and key[1] in self.classes.get(key[0], {})

    def names(self, slot: str) -> list[str]:
        """The sorted names registered in ``slot``."""
        return sorted(self._slot(slot))

    def items(self) -> Iterator[tuple[str, str, type[Principle]]]:
        """``(slot, name, cls)`` for every class, slots in recipe order, names sorted."""
        for slot in SLOTS:
            for name in sorted(self.classes[slot]):
                yield slot, name, self.classes[slot][name]

    def source(self, slot: str, name: str) -> PluginSource:
        """The :class:`PluginSource` of ``slot``/``name``."""
        self.get(slot, name)
        return self.sources[(slot, name)]

    def config_schema_hash(self, slot: str, name: str) -> str:
        """First 12 hex digits of the sha256 of the class's ``Config`` JSON schema (recorded per run)."""
        cls = self.get(slot, name)
        cached = self._schema_hashes.get((slot, name))
        if cached is not None and cached[0] is cls:  # every run records it: compute once per class
            return cached[1]
        schema = cls.Config.model_json_schema()
        blob = json.dumps(schema, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        self._schema_hashes[(slot, name)] = (cls, digest)
        return digest

    # -- recipes -----------------------------------------------------------------------------

    def check_compatible(self, names: Mapping[str, str]) -> None:
        """Raise :class:`ConfigError` if a chosen class declares another slot's choice incompatible.

        ``names`` is ``{slot: principle name}`` (slots may be missing); both directions are checked
        because every chosen class's ``incompatible_with`` is read.
        """
        for slot, name in names.items():
            cls = self.get(slot, name)
            for other_slot, banned in cls.incompatible_with.items():
                other = names.get(other_slot)
                if other is not None and other in banned:
                    raise ConfigError(
                        f"{slot} principle {name!r} is incompatible with {other_slot} principle {other!r} "
                        f"({slot}.{name} declares incompatible_with[{other_slot!r}]); "
                        f"choose another {other_slot} or {slot} principle")

    def validate_recipe(self, recipe: Recipe) -> dict[str, Any]:
        """Check a recipe without building anything: known names, valid configs, compatibility.

        Returns ``{slot: validated Config}``. Raises :class:`UnknownNameError` or
        :class:`ConfigError` (naming ``slot.name.field``).
        """
        classes = {slot: self.get(slot, recipe.choice(slot).name) for slot in SLOTS}
        configs = {slot: cls.validate_config(recipe.choice(slot).config) for slot, cls in classes.items()}
        self.check_compatible(recipe.principle_names())
        return configs

    def instantiate(self, recipe: Recipe) -> dict[str, Principle]:
        """``{slot: principle instance}`` for a recipe, after :meth:`validate_recipe`."""
        configs = self.validate_recipe(recipe)
        return {slot: self.get(slot, recipe.choice(slot).name)(configs[slot]) for slot in SLOTS}


def _check_search_hints(cls: type[Principle], config: type[BaseModel]) -> None:
    """Raise :class:`PluginError` for a config field whose search hint campaigns could not use (low above
    high, unknown keys, values outside the field's bounds): checked here, so that the class is skipped
    with a warning instead of failing every campaign that searches its slot, and ``plab plugins``."""
    from principlelab.studies.search_hints import field_distribution  # the space's own reading of a hint

    for field, info in config.model_fields.items():
        try:
            field_distribution(cls, field, info)
        except ConfigError as exc:
            raise PluginError(str(exc)) from None
