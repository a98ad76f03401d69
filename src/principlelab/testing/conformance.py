"""The shared conformance tests every principle class must pass, whatever its slot.

:class:`PrincipleConformance` is the base of the per-slot suites (in the shape of Optuna's
``optuna.testing.pytest_samplers``): a subclass provides the fixture ``principle_class`` (and
optionally ``config``) and inherits the tests. Every test takes only fixture *values* as
arguments, so a suite's test can also be called directly on a class, e.g. to check that the kit
rejects a deliberately broken principle.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from principlelab.core.principles import PRINCIPLE_BASES, Principle
from principlelab.errors import ConfigError, PluginError
from principlelab.errors import field_bounds as any_field_bounds
from principlelab.registry.registry import NAME_PATTERN, PluginSource, Registry


def as_dict(config: Any) -> dict[str, Any]:
    """A plain dict from a config fixture value (``None``, a dict, or a pydantic model)."""
    if config is None:
        return {}
    if isinstance(config, BaseModel):
        return config.model_dump()
    return dict(config)


def numeric_kind(annotation: Any) -> str | None:
    """``"int"`` or ``"float"`` for a numeric (possibly optional) annotation, else ``None``."""
    args: tuple[Any, ...] = (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = tuple(a for a in typing.get_args(annotation) if a is not type(None))
    if float in args:
        return "float"
    if int in args:
        return "int"
    return None


def field_bounds(info: FieldInfo) -> dict[str, Any]:
    """``{"ge"|"gt"|"le"|"lt": value}`` from a pydantic field's metadata: the numeric bounds only."""
    return {name: value for name, value in any_field_bounds(info).items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def outside_values(kind: str, bounds: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(bound, value)`` pairs just outside each bound (ints: the nearest integer outside)."""
    out: list[tuple[str, Any]] = []
    for name, b in bounds.items():
        if kind == "int":
            value = {"ge": math.ceil(b) - 1, "gt": math.floor(b), "le": math.floor(b) + 1,
                     "lt": math.ceil(b)}[name]
        else:
            delta = max(abs(float(b)), 1.0) * 1e-6
            value = {"ge": b - delta, "gt": float(b), "le": b + delta, "lt": float(b)}[name]
        out.append((name, value))
    return out


def search_hint(info: FieldInfo) -> dict[str, Any] | None:
    """The field's search hint (``{"low", "high", "log"?, "step"?}`` or ``{"choices"}``), if any."""
    extra = info.json_schema_extra
    if not isinstance(extra, dict):
        return None
    hint = extra.get("search")
    if hint is None and "choices" in extra:
        hint = {"choices": extra["choices"]}
    return hint  # type: ignore[return-value]


def _inside(value: Any, bounds: dict[str, Any]) -> bool:
    checks = {"ge": lambda b: value >= b, "gt": lambda b: value > b, "le": lambda b: value <= b,
              "lt": lambda b: value < b}
    return all(checks[name](b) for name, b in bounds.items())


class PrincipleConformance:
    """Tests of the class-level contract shared by all slots: name, Config, bounds, search hints.

    Subclass a per-slot suite (e.g. ``GrowthRuleConformance``) and provide the fixture
    ``principle_class``; override ``config`` to test a non-default configuration. Class attributes
    a subclass may override: ``recipe_overrides`` (merged into every tiny training run, e.g. more
    epochs or other companion principles) and, in suites that train, ``min_accuracy``.
    """

    slot: ClassVar[str | None] = None
    """The slot under test; ``None`` in this base (then the class's own ``slot`` is used)."""
    recipe_overrides: ClassVar[dict[str, Any]] = {}
    """Recipe fields merged into every tiny run of this suite (see :func:`run_tiny`)."""

    @pytest.fixture
    def principle_class(self) -> type[Principle]:
        raise NotImplementedError(
            f"{type(self).__name__} must provide the fixture principle_class: "
            "@pytest.fixture\ndef principle_class(self): return MyPrinciple")

    @pytest.fixture
    def config(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------------------ helpers
    def make(self, principle_class: type[Principle], config: Any = None) -> Any:
        """A fresh instance of the principle under test."""
        return principle_class(as_dict(config))

    def _path(self, principle_class: type[Principle]) -> str:
        return f"{principle_class.slot}.{principle_class.name}"

    # -------------------------------------------------------------------------------- tests
    def test_slot_base_class(self, principle_class: type[Principle]) -> None:
        assert isinstance(principle_class, type), f"principle_class must be a class, got {principle_class!r}"
        slot = self.slot or getattr(principle_class, "slot", None)
        assert slot in PRINCIPLE_BASES, f"{principle_class.__qualname__} has unknown slot {slot!r}"
        base = PRINCIPLE_BASES[slot]
        who = principle_class.__qualname__
        assert issubclass(principle_class, base), f"{who} must subclass {base.__name__}"
        assert principle_class.slot == slot, f"{who}.slot is {principle_class.slot!r}, expected {slot!r}"
        missing = sorted(getattr(principle_class, "__abstractmethods__", ()))
        assert not inspect.isabstract(principle_class), f"{who} is abstract: implement {missing}"

    def test_name(self, principle_class: type[Principle]) -> None:
        name = getattr(principle_class, "name", None)
        assert isinstance(name, str) and name, f"{principle_class.__qualname__}.name must be a non-empty str"
        assert NAME_PATTERN.match(name), f"name {name!r} must match {NAME_PATTERN.pattern}"

    def test_registers_cleanly(self, principle_class: type[Principle]) -> None:
        """The registry's own checks (slot, name, Config, defaults, abstractness, incompatible_with)."""
        try:
            Registry().add(principle_class, PluginSource("conformance", "0", "conformance"))
        except PluginError as exc:
            pytest.fail(f"the registry rejects {principle_class.__qualname__}: {exc}")

    def test_config_fields_have_defaults(self, principle_class: type[Principle]) -> None:
        config_cls = principle_class.Config
        assert isinstance(config_cls, type) and issubclass(config_cls, BaseModel), (
            f"{self._path(principle_class)}.Config must be a pydantic model, got {config_cls!r}")
        required = [f for f, info in config_cls.model_fields.items() if info.is_required()]
        assert not required, f"{self._path(principle_class)}.Config fields without a default: {required}"
        defaults = {f: info.get_default(call_default_factory=True)
                    for f, info in config_cls.model_fields.items()}
        principle_class.validate_config(defaults)  # defaults must validate (pydantic does not check them)

    def test_instantiates(self, principle_class: type[Principle], config: Any) -> None:
        default = principle_class()
        assert isinstance(default.config, principle_class.Config)
        instance = self.make(principle_class, config)
        assert isinstance(instance.config, principle_class.Config)
        assert isinstance(repr(instance), str)

    def test_unknown_config_key_rejected(self, principle_class: type[Principle], config: Any) -> None:
        with pytest.raises(ConfigError, match="no_such_field_xyz"):
            principle_class.validate_config({**as_dict(config), "no_such_field_xyz": 1})

    def test_config_round_trip(self, principle_class: type[Principle], config: Any) -> None:
        cfg = principle_class.validate_config(as_dict(config))
        config_cls = type(cfg)
        dump = cfg.model_dump()
        assert config_cls(**dump) == cfg, f"model_dump -> Config(**dump) changed the config: {dump}"
        assert principle_class.validate_config(dump) == cfg
        text = cfg.model_dump_json()
        assert config_cls.model_validate_json(text) == cfg, f"JSON round trip changed the config: {text}"
        as_json = json.loads(json.dumps(cfg.model_dump(mode="json")))  # what a recipe file carries
        assert principle_class.validate_config(as_json) == cfg, f"JSON dict round trip changed: {as_json}"
        assert principle_class(as_json).config == cfg

    def test_out_of_bounds_values_raise_config_error(self, principle_class: type[Principle],
                                                     config: Any) -> None:
        base = as_dict(config)
        for field, info in principle_class.Config.model_fields.items():
            kind = numeric_kind(info.annotation)
            if kind is None:
                continue
            key = info.alias or field
            for bound, value in outside_values(kind, field_bounds(info)):
                where = f"{self._path(principle_class)}.{key}"
                with pytest.raises(ConfigError) as caught:
                    principle_class.validate_config({**base, key: value})
                    pytest.fail(f"{where}={value!r} violates {bound} but was accepted")
                assert where in str(caught.value), f"the error must name {where}: {caught.value}"

    def test_search_hints_inside_bounds(self, principle_class: type[Principle], config: Any) -> None:
        base = as_dict(config)
        for field, info in principle_class.Config.model_fields.items():
            hint = search_hint(info)
            if hint is None:
                continue
            where = f"{self._path(principle_class)}.{field} search hint {hint}"
            assert isinstance(hint, dict), f"{where} must be a dict"
            bounds = field_bounds(info)
            if "choices" in hint:
                assert list(hint["choices"]), f"{where} has no choices"
                for choice in hint["choices"]:
                    principle_class.validate_config({**base, field: choice})
                continue
            assert {"low", "high"} <= set(hint), f"{where} needs low and high (or choices)"
            low, high = hint["low"], hint["high"]
            assert low <= high, f"{where}: low > high"
            assert _inside(low, bounds) and _inside(high, bounds), f"{where} is outside the bounds {bounds}"
            if hint.get("log"):
                assert low > 0, f"{where}: a log-scale range needs low > 0"
            if numeric_kind(info.annotation) == "int":
                assert isinstance(low, int) and isinstance(high, int), f"{where}: an int field needs ints"
            if hint.get("step") is not None:
                assert hint["step"] > 0, f"{where}: step must be > 0"
            for value in (low, high):
                principle_class.validate_config({**base, field: value})
