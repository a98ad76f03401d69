"""The conditional Optuna search space over every combination of registered principles.

One categorical parameter per slot, named exactly the slot (``"growth"``), chooses the principle;
each searchable config field of each principle is a conditional parameter named
``"<slot>.<name>.<field>"`` (``"growth.random.units"``), suggested only when that principle is
chosen. A field is searched when it carries a search hint
(``json_schema_extra={"search": {"low", "high", "log"[, "step"]}}`` or ``{"search": {"choices": [...]}}``)
or when it is a ``Literal[...]`` (its values) or a ``bool`` (``[False, True]``); every other field
stays at its default. ``json_schema_extra={"search": False}`` opts a Literal/bool field out
(:mod:`principlelab.studies.search_hints` turns fields into distributions).

:meth:`SearchSpace.suggest` turns a trial into the five recipe slot fields,
:meth:`SearchSpace.params_for` is its inverse (for ``study.enqueue_trial``),
:attr:`SearchSpace.fingerprint` identifies the space (plugins, config schemas, distributions,
fixed values) and :func:`recipe_key` identifies a recipe independently of seed, task and fidelity.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from pydantic import ValidationError

from principlelab.core.principles import Principle
from principlelab.core.recipe import DEFAULT_PRINCIPLES, SLOTS, NetworkSpec, PrincipleChoice, Recipe
from principlelab.core.trainer import METRICS_VERSION
from principlelab.errors import ConfigError, UnknownNameError, format_validation_error
from principlelab.registry.registry import Registry
from principlelab.studies.search_hints import bounds_text, distribution_contains, distribution_json, field_distribution

__all__ = ["REJECTED_ATTR", "SPACE_VERSION", "SearchSpace", "SpaceParam", "recipe_key", "tell_rejected"]

SPACE_VERSION = 1
"""Part of the fingerprint: bumped when the way fields map to distributions changes."""

REJECTED_ATTR = "rejected"
"""User attribute of a trial whose principle combination was rejected (the one-line reason)."""



@dataclass(frozen=True)
class SpaceParam:
    """One conditional parameter: ``"<slot>.<name>.<field>"`` and its Optuna distribution."""

    key: str
    slot: str
    principle: str
    field: str
    distribution: BaseDistribution
    is_int: bool = False


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _sha16(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


# -- slot choices ---------------------------------------------------------------------------------


def _choice_of(value: Any, slot: str) -> tuple[str, dict[str, Any]]:
    """``(name, config)`` of a PrincipleChoice, a ``{name, config}``/``{name, **config}`` dict or a name."""
    if isinstance(value, PrincipleChoice):
        return value.name, dict(value.config)
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping):
        name = value.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{slot}: a slot choice needs a principle 'name', got {dict(value)!r}")
        config = dict(value.get("config") or {})
        config.update({k: v for k, v in value.items() if k not in ("name", "config")})
        return name, config
    raise ConfigError(f"{slot}: expected a principle name or {{'name': ..., 'config': {{...}}}}, "
                      f"got {value!r}")


def _slot_choices(slots: Mapping[str, Any] | Recipe) -> dict[str, tuple[str, dict[str, Any]]]:
    """The five ``(name, config)`` pairs; a missing slot takes the default (as in :class:`Recipe`)."""
    if isinstance(slots, Recipe):
        return {slot: _choice_of(slots.choice(slot), slot) for slot in SLOTS}
    unknown = [s for s in slots if s not in SLOTS]
    if unknown:
        raise UnknownNameError("slot", str(unknown[0]), SLOTS)
    return {slot: _choice_of(slots.get(slot, DEFAULT_PRINCIPLES[slot]), slot) for slot in SLOTS}


def recipe_key(registry: Registry, slots: Mapping[str, Any] | Recipe,
               network: Mapping[str, Any] | NetworkSpec | None = None) -> str:
    """A stable id (sha256, 16 hex) of a recipe's principles, their full configs and the network.

    Configs are validated with defaults filled (``{}`` and explicit defaults give the same key); a
    missing slot takes the :class:`Recipe` default. Seed, task and fidelity are not part of it, so
    the same recipe at two fidelity levels or seeds shares its key. ``slots`` may be a
    :class:`Recipe` (then ``network`` defaults to the recipe's). Unknown names raise
    :class:`UnknownNameError`, bad configs :class:`ConfigError`.
    """
    if network is None:
        network = slots.network if isinstance(slots, Recipe) else NetworkSpec.model_validate({})
    if isinstance(network, NetworkSpec):
        spec = network
    else:
        try:
            spec = NetworkSpec(**dict(network))
        except ValidationError as exc:
            raise ConfigError(format_validation_error("network", exc, NetworkSpec)) from None
    payload: dict[str, Any] = {"network": spec.model_dump(mode="json")}
    for slot, (name, config) in _slot_choices(slots).items():
        cls = registry.get(slot, name)
        payload[slot] = {"name": name, "config": cls.validate_config(config).model_dump(mode="json")}
    return _sha16(payload)


# -- the space ------------------------------------------------------------------------------------


class SearchSpace:
    """The conditional space over principle combinations of ``registry`` (a snapshot at construction).

    ``principles`` restricts a slot to a list of names (or ``"all"``, the default for an omitted
    slot); ``fixed`` holds parameters by namespaced name (``{"learning.backprop.lr": 0.003}``) at a
    value instead of searching them (any config field of a principle in the space may be fixed).
    """

    def __init__(self, registry: Registry, principles: Mapping[str, Any] | None = None,
                 fixed: Mapping[str, Any] | None = None) -> None:
        self.registry = registry
        principles = dict(principles or {})
        for slot in principles:
            if slot not in SLOTS:
                raise UnknownNameError("slot", str(slot), SLOTS)
        self.choices: dict[str, tuple[str, ...]] = {}
        self._classes: dict[tuple[str, str], type[Principle]] = {}
        for slot in SLOTS:
            self.choices[slot] = self._resolve_slot(slot, principles.get(slot, "all"))
            for name in self.choices[slot]:
                self._classes[(slot, name)] = registry.get(slot, name)
        self.fixed: dict[str, Any] = self._resolve_fixed(dict(fixed or {}))
        self.params: dict[tuple[str, str], tuple[SpaceParam, ...]] = {}
        for (slot, name), cls in self._classes.items():
            found = []
            for field, info in cls.Config.model_fields.items():
                key = f"{slot}.{name}.{field}"
                dist = field_distribution(cls, field, info)  # hints are checked even when fixed
                if dist is not None and key not in self.fixed:
                    found.append(SpaceParam(key, slot, name, field, dist[0], is_int=dist[1]))
            self.params[(slot, name)] = tuple(found)
        self._schema_hashes = {f"{slot}.{name}": registry.config_schema_hash(slot, name)
                               for slot, name in self._classes}

    def _resolve_slot(self, slot: str, wanted: Any) -> tuple[str, ...]:
        if wanted == "all" or wanted is None:
            names = self.registry.names(slot)
            if not names:
                raise ConfigError(f"no {slot} principle is registered, so the search space is empty; "
                                  "install or register one")
            return tuple(names)
        if isinstance(wanted, str):
            wanted = [wanted]
        if not isinstance(wanted, list | tuple | set | frozenset) or not all(
                isinstance(n, str) for n in wanted):
            raise ConfigError(f"search.{slot} must be \"all\" or a list of principle names, got {wanted!r}")
        if not wanted:
            raise ConfigError(f"search.{slot} is an empty list; name at least one {slot} principle "
                              "or use \"all\"")
        for name in wanted:
            self.registry.get(slot, name)  # UnknownNameError listing the known names
        return tuple(sorted(set(wanted)))

    def _resolve_fixed(self, fixed: dict[str, Any]) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for key, value in fixed.items():
            parts = key.split(".") if isinstance(key, str) else []
            cls = self._classes.get((parts[0], parts[1])) if len(parts) == 3 else None
            if cls is None or parts[2] not in cls.Config.model_fields:
                hint = ""
                if isinstance(key, str) and key in SLOTS:
                    hint = (f" (to fix the {key} principle, restrict the slot instead: "
                            f"principles={{{key!r}: [name]}})")
                raise ConfigError(f"unknown fixed parameter {key!r}{hint}; parameters in this search space: "
                                  f"{', '.join(self.all_field_keys()) or '(none)'}")
            validated = cls.validate_config({parts[2]: value})  # ConfigError names slot.name.field
            resolved[key] = validated.model_dump(mode="json")[parts[2]]
        return dict(sorted(resolved.items()))

    def all_field_keys(self) -> list[str]:
        """Every ``slot.name.field`` of the principles in the space (searched or not)."""
        return [f"{slot}.{name}.{field}" for (slot, name), cls in self._classes.items()
                for field in cls.Config.model_fields]

    # -- reading -------------------------------------------------------------------------------

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every Optuna parameter of the space: the five slot categoricals, then the conditional ones."""
        dists: dict[str, BaseDistribution] = {slot: CategoricalDistribution(list(self.choices[slot]))
                                              for slot in SLOTS}
        for params in self.params.values():
            dists.update({p.key: p.distribution for p in params})
        return dists

    def fixed_for(self, slot: str, name: str) -> dict[str, Any]:
        """``{field: value}`` of the fixed parameters of ``slot``/``name``."""
        prefix = f"{slot}.{name}."
        return {k[len(prefix):]: v for k, v in self.fixed.items() if k.startswith(prefix)}

    def size_hint(self) -> int:
        """The number of principle combinations (product of each slot's choices; incompatible included)."""
        return math.prod(len(self.choices[slot]) for slot in SLOTS)

    def combinations(self) -> Iterator[dict[str, str]]:
        """Every compatible ``{slot: name}`` combination, in sorted order (enumerates all of them)."""
        for names in product(*(self.choices[slot] for slot in SLOTS)):
            combo = dict(zip(SLOTS, names))
            try:
                self.registry.check_compatible(combo)
            except ConfigError:
                continue
            yield combo

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: fingerprint, slots -> names, params -> distribution JSON, fixed."""
        return {
            "version": SPACE_VERSION,
            "metrics": METRICS_VERSION,
            "fingerprint": self.fingerprint,
            "slots": {slot: list(self.choices[slot]) for slot in SLOTS},
            "params": {key: distribution_json(dist) for key, dist in self.distributions().items()},
            "fixed": dict(self.fixed),
            "schema_hashes": dict(self._schema_hashes),
            "size_hint": self.size_hint(),
        }

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (16 hex) of the names per slot, each principle's config schema hash and
        distributions, the fixed values and the trainer's ``METRICS_VERSION``; independent of the order
        names were given in."""
        payload = {
            "version": SPACE_VERSION,
            "metrics": METRICS_VERSION,  # what the stored numbers mean (see core.trainer)
            "slots": {slot: {name: {"schema": self._schema_hashes[f"{slot}.{name}"],
                                    "params": {p.key: distribution_json(p.distribution)
                                               for p in self.params[(slot, name)]}}
                             for name in self.choices[slot]}
                      for slot in SLOTS},
            "fixed": self.fixed,
        }
        return _sha16(payload)

    def __repr__(self) -> str:
        slots = ", ".join(f"{slot}={list(self.choices[slot])}" for slot in SLOTS)
        return f"SearchSpace({slots}, fixed={self.fixed}, fingerprint={self.fingerprint!r})"

    # -- trials --------------------------------------------------------------------------------

    def suggest(self, trial: Any) -> dict[str, dict[str, Any]]:
        """``{slot: {"name": ..., "config": {...}}}`` for the five slots, sampled from ``trial``.

        The principle of every slot is chosen first; an incompatible combination raises
        :class:`ConfigError` (from ``registry.check_compatible``) before any config parameter is
        suggested; record it with :func:`tell_rejected` (no training). ``config`` holds the
        searched and fixed values only; defaults fill the rest.
        """
        expect = _announcer(trial)
        expect([(slot, CategoricalDistribution(list(self.choices[slot]))) for slot in SLOTS])
        names = {slot: trial.suggest_categorical(slot, list(self.choices[slot])) for slot in SLOTS}
        self.registry.check_compatible(names)
        expect([(p.key, p.distribution) for slot, name in names.items() for p in self.params[(slot, name)]])
        out: dict[str, dict[str, Any]] = {}
        for slot, name in names.items():
            config: dict[str, Any] = {}
            for p in self.params[(slot, name)]:
                dist = p.distribution
                if isinstance(dist, CategoricalDistribution):
                    config[p.field] = trial.suggest_categorical(p.key, list(dist.choices))
                elif isinstance(dist, IntDistribution):
                    config[p.field] = trial.suggest_int(p.key, dist.low, dist.high, step=dist.step,
                                                        log=dist.log)
                else:
                    assert isinstance(dist, FloatDistribution)
                    config[p.field] = trial.suggest_float(p.key, dist.low, dist.high, step=dist.step,
                                                          log=dist.log)
            config.update(self.fixed_for(slot, name))
            self._classes[(slot, name)].validate_config(config)
            out[slot] = {"name": name, "config": config}
        return out

    def params_for(self, slots: Mapping[str, Any] | Recipe) -> dict[str, Any]:
        """The Optuna params (for ``study.enqueue_trial``) that make :meth:`suggest` return ``slots``.

        ``slots`` is ``{slot: {"name", "config"}}`` (what :meth:`suggest` returns; a missing slot
        takes the recipe default) or a :class:`Recipe`. Raises :class:`UnknownNameError` for a
        principle outside the space and :class:`ConfigError` for a value this space cannot
        reproduce: outside a searched distribution, different from a fixed value, or a non-searched
        field away from its default.
        """
        params: dict[str, Any] = {}
        problems: list[str] = []
        for slot, (name, config) in _slot_choices(slots).items():
            if name not in self.choices[slot]:
                raise UnknownNameError(f"{slot} principle (in this search space)", name, self.choices[slot])
            cls = self._classes[(slot, name)]
            params[slot] = name
            full = cls.validate_config(config).model_dump(mode="json")
            searched = {p.field: p for p in self.params[(slot, name)]}
            fixed = self.fixed_for(slot, name)
            defaults = cls.validate_config({}).model_dump(mode="json")
            for field, value in full.items():
                key = f"{slot}.{name}.{field}"
                if field in searched:
                    ok, internal = distribution_contains(searched[field].distribution, value)
                    if ok:
                        params[key] = internal
                    else:
                        where = bounds_text(searched[field].distribution)
                        problems.append(f"{key}={value!r} is outside the searched {where}")
                elif field in fixed:
                    if value != fixed[field]:
                        problems.append(f"{key}={value!r} but the space fixes it at {fixed[field]!r}")
                elif value != defaults[field]:
                    problems.append(f"{key}={value!r} but the space does not search it "
                                    f"(default {defaults[field]!r})")
        if problems:
            raise ConfigError("this search space cannot reproduce the recipe: " + "; ".join(problems)
                              + f" (space {self.fingerprint})")
        return params

    def recipe_key(self, slots: Mapping[str, Any] | Recipe,
                   network: Mapping[str, Any] | NetworkSpec | None = None) -> str:
        """:func:`recipe_key` with this space's registry."""
        return recipe_key(self.registry, slots, network)



def _announcer(trial: Any) -> Callable[[list[tuple[str, BaseDistribution]]], None]:
    """A function telling the trial's sampler which parameters the trial suggests next, in order, when the
    sampler takes such hints (:meth:`SplitOnceTPESampler.expect`: it then samples them together); a no-op
    for any other sampler, or a trial without a study."""
    expect = getattr(getattr(getattr(trial, "study", None), "sampler", None), "expect", None)
    if not callable(expect):
        return lambda parameters: None
    return lambda parameters: expect(trial, parameters)


def tell_rejected(study: Any, trial: Any, error: BaseException | str) -> None:
    """Finish a trial whose combination :meth:`SearchSpace.suggest` rejected, without training.

    Sets the user attribute :data:`REJECTED_ATTR` to the reason and tells the trial ``PRUNED``,
    not ``FAIL``: TPE ignores failed trials, so it never learns the combination is impossible and
    (the study's completed trials unchanged) keeps proposing it; a pruned trial without
    intermediate values ranks below every completed one, so TPE moves away from it, and no
    objective value is made up.
    """
    trial.set_user_attr(REJECTED_ATTR, str(error))
    study.tell(trial, state=TrialState.PRUNED)
