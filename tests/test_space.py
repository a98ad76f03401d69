"""The conditional Optuna search space: sampling, restriction, fixed values, round trips, fingerprints."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)
from optuna.trial import TrialState
from pydantic import Field

from principlelab.core.principles import (
    Composition,
    Connectivity,
    GrowthRule,
    LearningRule,
    PrincipleConfig,
    Trigger,
)
from principlelab.core.recipe import SLOTS, Recipe
from principlelab.errors import ConfigError, PluginError, UnknownNameError
from principlelab.registry import PluginSource, Registry, get_registry
from principlelab.studies.space import REJECTED_ATTR, SearchSpace, recipe_key, tell_rejected

optuna.logging.set_verbosity(optuna.logging.WARNING)

SOURCE = PluginSource("tests", "0", "tests.test_space")

_BASES = {"connectivity": Connectivity, "learning": LearningRule, "trigger": Trigger,
          "growth": GrowthRule, "composition": Composition}
_METHODS: dict[str, dict[str, Any]] = {
    "connectivity": {"build": lambda self, spec, **kw: None},
    "learning": {"setup": lambda self, net, comp: None, "step": lambda self, *a: None},
    "trigger": {"on_step": lambda self, signals: None},
    "growth": {"grow": lambda self, net, signals, generator: []},
    "composition": {"forward": lambda self, net, x: x},
}


def fake(slot: str, name: str, config: type[PrincipleConfig] = PrincipleConfig,
         incompatible: dict[str, set[str]] | None = None) -> type:
    """A minimal concrete principle class of ``slot``."""
    attrs: dict[str, Any] = {"name": name, "Config": config, **_METHODS[slot]}
    if incompatible is not None:
        attrs["incompatible_with"] = {k: frozenset(v) for k, v in incompatible.items()}
    return type(f"Fake_{slot}_{name}", (_BASES[slot],), attrs)


class LearnConfig(PrincipleConfig):
    lr: float = Field(0.01, gt=0.0, le=1.0,
                      json_schema_extra={"search": {"low": 1e-3, "high": 0.1, "log": True}})
    steps: int = Field(2, ge=1, le=100, json_schema_extra={"search": {"low": 1, "high": 9, "step": 2}})
    algo: Literal["a", "b", "c"] = "a"
    flag: bool = False
    scale: float = Field(1.5, json_schema_extra={"search": {"choices": [0.5, 1.5, 3.0]}})
    untouched: float = Field(0.25, ge=0.0, le=1.0)
    frozen_flag: bool = Field(True, json_schema_extra={"search": False})


class GrowConfig(PrincipleConfig):
    units: int = Field(4, ge=1, le=64, json_schema_extra={"search": {"low": 1, "high": 32, "log": True}})


def fake_registry(extra: list[type] | None = None) -> Registry:
    """Two or three principles per slot; ``learn_b`` cannot run with growth ``grow_bad``."""
    reg = Registry()
    classes = [
        fake("connectivity", "conn_a"), fake("connectivity", "conn_b"),
        fake("learning", "learn_a", LearnConfig),
        fake("learning", "learn_b", incompatible={"growth": {"grow_bad"}}),
        fake("trigger", "trig_a"),
        fake("growth", "grow_a", GrowConfig), fake("growth", "grow_bad"), fake("growth", "grow_c"),
        fake("composition", "comp_a"),
        *(extra or []),
    ]
    for cls in classes:
        reg.add(cls, SOURCE)
    return reg


def in_distribution(dist: Any, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return any(type(c) is type(value) and c == value for c in dist.choices)
    if isinstance(dist, IntDistribution):
        on_grid = (value - dist.low) % dist.step == 0
        return isinstance(value, int) and dist.low <= value <= dist.high and on_grid
    assert isinstance(dist, FloatDistribution)
    return isinstance(value, float) and dist.low <= value <= dist.high


def sample(space: SearchSpace, n: int = 50, seed: int = 0) -> Iterator[tuple[optuna.trial.Trial, dict]]:
    """``n`` trials of a random-sampler study; incompatible ones are told FAIL and skipped."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        try:
            slots = space.suggest(trial)
        except ConfigError:
            tell_rejected(study, trial, "incompatible")
            continue
        yield trial, slots
        study.tell(trial, 0.0)


# -- sampling -------------------------------------------------------------------------------------


def test_builtin_space_samples_valid_conditional_recipes() -> None:
    registry = get_registry()
    space = SearchSpace(registry)
    dists = space.distributions()
    seen: dict[str, set[str]] = {slot: set() for slot in SLOTS}
    for trial, slots in sample(space):
        assert list(slots) == list(SLOTS)
        expected_keys = set(SLOTS)
        for slot in SLOTS:
            name = slots[slot]["name"]
            assert name in registry.names(slot)
            assert trial.params[slot] == name
            seen[slot].add(name)
            cls = registry.get(slot, name)
            cls.validate_config(slots[slot]["config"])  # valid with defaults filling the rest
            for field, value in slots[slot]["config"].items():
                key = f"{slot}.{name}.{field}"
                assert trial.params[key] == value
                assert in_distribution(dists[key], value), (key, value)
            expected_keys |= {f"{slot}.{name}.{f}" for f in slots[slot]["config"]}
        # conditional parameters appear only for the chosen principles
        assert set(trial.params) == expected_keys
        for key in trial.params:
            if "." in key:
                slot, name, _ = key.split(".")
                assert slots[slot]["name"] == name
        Recipe(**slots)  # the slot dicts are Recipe slot fields
    assert all(seen[slot] == set(registry.names(slot)) for slot in SLOTS)


def test_field_kinds_map_to_distributions() -> None:
    space = SearchSpace(fake_registry())
    dists = space.distributions()
    assert dists["learning"] == CategoricalDistribution(["learn_a", "learn_b"])
    assert dists["learning.learn_a.lr"] == FloatDistribution(1e-3, 0.1, log=True)
    assert dists["learning.learn_a.steps"] == IntDistribution(1, 9, step=2)
    assert dists["learning.learn_a.algo"] == CategoricalDistribution(["a", "b", "c"])  # Literal
    assert dists["learning.learn_a.flag"] == CategoricalDistribution([False, True])  # bool
    assert dists["learning.learn_a.scale"] == CategoricalDistribution([0.5, 1.5, 3.0])  # choices hint
    assert dists["growth.grow_a.units"] == IntDistribution(1, 32, log=True)
    # no hint and neither Literal nor bool, or opted out: stays at its default
    assert "learning.learn_a.untouched" not in dists
    assert "learning.learn_a.frozen_flag" not in dists
    # built-ins: Literal optimizer and operator, bool sparse_output, unhinted floats not searched
    builtin = SearchSpace(get_registry()).distributions()
    assert builtin["learning.backprop.optimizer"] == CategoricalDistribution(["adam", "sgd"])
    assert builtin["growth.random.operator"] == CategoricalDistribution(["split", "clone", "zero"])
    assert builtin["connectivity.sparse_random.sparse_output"] == CategoricalDistribution([False, True])
    assert isinstance(builtin["growth.random.units"], IntDistribution)
    assert "growth.random.noise" not in builtin and "learning.backprop.momentum" not in builtin


def test_literal_and_bool_fields_are_sampled_as_categoricals() -> None:
    space = SearchSpace(fake_registry(), principles={"learning": ["learn_a"]})
    algos, flags = set(), set()
    for trial, slots in sample(space):
        config = slots["learning"]["config"]
        assert set(config) == {"lr", "steps", "algo", "flag", "scale"}
        algos.add(config["algo"])
        flags.add(config["flag"])
        assert isinstance(config["flag"], bool) and isinstance(config["steps"], int)
        assert trial.params["learning.learn_a.flag"] is config["flag"]
    assert algos == {"a", "b", "c"} and flags == {False, True}


def test_restriction_is_respected() -> None:
    space = SearchSpace(get_registry(), principles={"growth": ["random"], "connectivity": "all",
                                                    "trigger": ["every_k"]})
    assert space.choices["growth"] == ("random",)
    registry = get_registry()
    assert space.choices["connectivity"] == tuple(sorted(registry.names("connectivity")))
    assert {"dense", "sparse_random"} <= set(space.choices["connectivity"])
    for trial, slots in sample(space):
        assert slots["growth"]["name"] == "random" and slots["trigger"]["name"] == "every_k"
        assert "growth.random.units" in trial.params
        assert not any(k.startswith("trigger.never.") for k in trial.params)
    assert space.size_hint() == (len(registry.names("connectivity")) * len(registry.names("learning"))
                                 * len(registry.names("composition")))
    assert SearchSpace(get_registry()).size_hint() == math.prod(len(get_registry().names(s)) for s in SLOTS)


def test_fixed_values_are_applied_and_not_searched() -> None:
    fixed = {"learning.backprop.lr": 0.003, "growth.random.noise": 0.1, "growth.random.operator": "zero"}
    space = SearchSpace(get_registry(), fixed=fixed)
    assert "learning.backprop.lr" not in space.distributions()
    assert "growth.random.operator" not in space.distributions()
    for trial, slots in sample(space):
        assert "learning.backprop.lr" not in trial.params
        if slots["learning"]["name"] == "backprop":
            assert slots["learning"]["config"]["lr"] == 0.003
            assert "learning.backprop.weight_decay" in trial.params
        if slots["growth"]["name"] == "random":
            assert slots["growth"]["config"]["noise"] == 0.1
            assert slots["growth"]["config"]["operator"] == "zero"
            assert "growth.random.units" in trial.params
            assert not {"growth.random.noise", "growth.random.operator"} & set(trial.params)
        elif slots["growth"]["name"] == "none":  # fixed values of another principle never leak in
            assert slots["growth"]["config"] == {}


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown growth principle 'nope'; known: (\w+, )*none, random"):
        SearchSpace(get_registry(), principles={"growth": ["random", "nope"]})
    with pytest.raises(UnknownNameError, match=r"unknown slot 'grwoth'; known: .*growth"):
        SearchSpace(get_registry(), principles={"grwoth": "all"})
    with pytest.raises(ConfigError, match=r"empty list"):
        SearchSpace(get_registry(), principles={"growth": []})


def test_bad_fixed_parameters() -> None:
    with pytest.raises(ConfigError, match=r"'learning\.backprop\.lrr'.*learning\.backprop\.lr"):
        SearchSpace(get_registry(), fixed={"learning.backprop.lrr": 0.1})
    # a principle left out by the restriction has no parameters in this space
    with pytest.raises(ConfigError, match=r"unknown fixed parameter 'growth\.random\.units'"):
        SearchSpace(get_registry(), principles={"growth": ["none"]}, fixed={"growth.random.units": 4})
    with pytest.raises(ConfigError, match=r"restrict the slot instead"):
        SearchSpace(get_registry(), fixed={"growth": "random"})
    with pytest.raises(ConfigError, match=r"learning\.backprop\.lr"):
        SearchSpace(get_registry(), fixed={"learning.backprop.lr": 50.0})  # le=10


@pytest.mark.parametrize(("field", "match"), [
    ("x: float = Field(0.5, ge=0.0, le=1.0, json_schema_extra={'search': {'low': 0.1, 'high': 2.0}})",
     r"growth\.bad\.x: search hint high=2\.0"),
    ("x: float = Field(0.5, gt=0.0, json_schema_extra={'search': {'low': 0.0, 'high': 1.0, 'log': True}})",
     r"growth\.bad\.x"),
    ("x: int = Field(2, ge=1, json_schema_extra={'search': {'low': 1.5, 'high': 4}})",
     r"growth\.bad\.x is an int field"),
    ("x: float = Field(0.5, json_schema_extra={'search': {'low': 2.0, 'high': 1.0}})",
     r"growth\.bad\.x: search hint low=2\.0 is above high"),
    ("x: float = Field(0.5, json_schema_extra={'search': {'low': 0.1, 'hi': 1.0}})",
     r"growth\.bad\.x: unknown search hint key"),
    ("x: bool = Field(False, json_schema_extra={'search': {'low': 0, 'high': 1}})",
     r"growth\.bad\.x: a low/high search hint needs an int or float field"),
    ("x: int = Field(2, ge=1, le=5, json_schema_extra={'search': {'choices': [1, 2, 9]}})",
     r"growth\.bad\.x: search hint choice 9"),
])
def test_search_hints_must_fit_the_field(field: str, match: str) -> None:
    """The registry refuses the class (a plugin's is skipped with a warning): in the space, it had
    failed every campaign that searched its slot."""
    namespace: dict[str, Any] = {"PrincipleConfig": PrincipleConfig, "Field": Field}
    exec(f"class BadConfig(PrincipleConfig):\n    {field}\n", namespace)
    with pytest.raises(PluginError, match=match):
        fake_registry([fake("growth", "bad", namespace["BadConfig"])])


def test_incompatible_combination_raises_before_config_params() -> None:
    reg = fake_registry()
    space = SearchSpace(reg)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rejected = accepted = 0
    for _ in range(60):
        trial = study.ask()
        try:
            slots = space.suggest(trial)
        except ConfigError as exc:
            assert "incompatible" in str(exc)
            assert trial.params["learning"] == "learn_b" and trial.params["growth"] == "grow_bad"
            assert set(trial.params) == set(SLOTS)  # rejected before any config parameter
            tell_rejected(study, trial, exc)
            frozen = study.trials[-1]
            assert frozen.state == TrialState.PRUNED and frozen.user_attrs[REJECTED_ATTR] == str(exc)
            rejected += 1
            continue
        assert (slots["learning"]["name"], slots["growth"]["name"]) != ("learn_b", "grow_bad")
        study.tell(trial, 1.0)
        accepted += 1
    assert rejected > 0 and accepted > 0
    combos = list(space.combinations())
    assert len(combos) == space.size_hint() - 2  # learn_b x grow_bad, for both connectivities
    assert all((c["learning"], c["growth"]) != ("learn_b", "grow_bad") for c in combos)


# -- enqueue round trip ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["builtin", "fake"])
def test_params_for_round_trips_through_enqueue(which: str) -> None:
    registry = get_registry() if which == "builtin" else fake_registry()
    fixed = {"learning.backprop.lr": 0.003} if which == "builtin" else {"learning.learn_a.lr": 0.05}
    space = SearchSpace(registry, fixed=fixed)
    chosen = [slots for _, slots in sample(space, n=25, seed=3)]
    target = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=99))
    for slots in chosen:
        params = space.params_for(slots)
        target.enqueue_trial(params)
        trial = target.ask()
        assert space.suggest(trial) == slots
        assert trial.params == params
        target.tell(trial, 0.0)


def test_params_for_accepts_recipes_and_partial_configs() -> None:
    space = SearchSpace(fake_registry())
    recipe = Recipe(connectivity="conn_b", learning={"name": "learn_a", "algo": "c", "steps": 5},
                    trigger="trig_a", growth="grow_c", composition="comp_a", seed=7)
    params = space.params_for(recipe)
    assert params["learning.learn_a.algo"] == "c" and params["learning.learn_a.steps"] == 5
    assert params["learning.learn_a.lr"] == 0.01  # a default, filled in so the trial reproduces it
    assert params["learning.learn_a.scale"] == 1.5
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params)
    slots = space.suggest(study.ask())
    assert Recipe(**slots, seed=7) == recipe.model_copy(update={
        "learning": Recipe(learning={"name": "learn_a", "config": {
            "lr": 0.01, "steps": 5, "algo": "c", "flag": False, "scale": 1.5}}).learning})


def test_params_for_rejects_what_the_space_cannot_reproduce() -> None:
    reg = fake_registry()
    space = SearchSpace(reg, principles={"growth": ["grow_a", "grow_c"]}, fixed={"learning.learn_a.lr": 0.05})
    base = {"connectivity": {"name": "conn_a"}, "trigger": {"name": "trig_a"},
            "composition": {"name": "comp_a"}, "growth": {"name": "grow_a"}}
    with pytest.raises(UnknownNameError, match=r"'grow_bad'.*known: grow_a, grow_c"):
        space.params_for({**base, "learning": {"name": "learn_a"}, "growth": {"name": "grow_bad"}})
    with pytest.raises(ConfigError, match=r"learning\.learn_a\.lr=0\.01 but the space fixes it at 0\.05"):
        space.params_for({**base, "learning": {"name": "learn_a"}})
    with pytest.raises(ConfigError, match=r"learning\.learn_a\.untouched=0\.5 but the space does not search"):
        space.params_for({**base, "learning": {"name": "learn_a", "config": {"lr": 0.05, "untouched": 0.5}}})
    with pytest.raises(ConfigError, match=r"growth\.grow_a\.units=40 is outside the searched \[1, 32\]"):
        space.params_for({**base, "learning": {"name": "learn_b"}, "growth": {"name": "grow_a",
                                                                                "config": {"units": 40}}})
    with pytest.raises(ConfigError, match=r"learning\.learn_a\.steps=4 is outside"):  # off the step grid
        space.params_for({**base, "learning": {"name": "learn_a", "config": {"lr": 0.05, "steps": 4}}})
    with pytest.raises(ConfigError, match=r"learning\.learn_a"):  # not a field at all
        space.params_for({**base, "learning": {"name": "learn_a", "config": {"nope": 1}}})


# -- fingerprint and description ------------------------------------------------------------------


def test_fingerprint_is_order_independent() -> None:
    reg = get_registry()
    a = SearchSpace(reg, principles={"growth": ["random", "none"],
                                     "connectivity": ["sparse_random", "dense"]},
                    fixed={"learning.backprop.lr": 0.003, "growth.random.noise": 0.1})
    b = SearchSpace(reg, principles={"connectivity": ["dense", "sparse_random", "dense"],
                                     "growth": ["none", "random"]},
                    fixed={"growth.random.noise": 0.1, "learning.backprop.lr": 0.003})
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 16 and int(a.fingerprint, 16) >= 0
    assert SearchSpace(reg).fingerprint == SearchSpace(reg, principles={s: "all" for s in SLOTS}).fingerprint
    assert SearchSpace(reg).fingerprint == SearchSpace(get_registry()).fingerprint
    assert a.fingerprint != SearchSpace(reg, principles={"growth": ["random", "none"]}).fingerprint
    other_fixed = {"learning.backprop.lr": 0.004, "growth.random.noise": 0.1}
    assert a.fingerprint != SearchSpace(reg, principles=dict(a.choices), fixed=other_fixed).fingerprint


def test_fingerprint_changes_when_a_stored_metric_changes_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A campaign resumed after an accounting change opens a new study version (runs keep one meaning)."""
    from principlelab.studies import space as space_module

    base = SearchSpace(fake_registry()).describe()
    monkeypatch.setattr(space_module, "METRICS_VERSION", space_module.METRICS_VERSION + 1)
    bumped = SearchSpace(fake_registry()).describe()
    assert bumped["fingerprint"] != base["fingerprint"] and bumped["metrics"] == base["metrics"] + 1


def test_fingerprint_changes_with_plugins_and_schemas() -> None:
    base = SearchSpace(fake_registry()).fingerprint
    assert SearchSpace(fake_registry()).fingerprint == base
    # a plugin adds a principle
    assert SearchSpace(fake_registry([fake("trigger", "trig_new")])).fingerprint != base

    # a Config changes: a bound (schema only), or a search hint (schema and distribution)
    class WiderBound(PrincipleConfig):
        units: int = Field(4, ge=1, le=128, json_schema_extra={"search": {"low": 1, "high": 32, "log": True}})

    class WiderHint(PrincipleConfig):
        units: int = Field(4, ge=1, le=64, json_schema_extra={"search": {"low": 1, "high": 64, "log": True}})

    for config in (WiderBound, WiderHint):
        reg = Registry()
        for slot, name, cls in fake_registry().items():
            reg.add(fake("growth", "grow_a", config) if (slot, name) == ("growth", "grow_a") else cls, SOURCE)
        assert SearchSpace(reg).fingerprint != base
    # removing a principle
    reg = fake_registry()
    reg.remove("growth", "grow_c")
    assert SearchSpace(reg).fingerprint != base


def test_describe_is_json_and_matches_the_space() -> None:
    space = SearchSpace(get_registry(), fixed={"learning.backprop.lr": 0.003})
    desc = json.loads(json.dumps(space.describe()))
    assert desc["fingerprint"] == space.fingerprint
    assert desc["slots"] == {slot: list(get_registry().names(slot)) for slot in SLOTS}
    assert desc["fixed"] == {"learning.backprop.lr": 0.003}
    assert desc["size_hint"] == space.size_hint()
    dists = space.distributions()
    assert set(desc["params"]) == set(dists)
    for key, value in desc["params"].items():
        assert json_to_distribution(json.dumps(value)) == dists[key]


# -- recipe keys ----------------------------------------------------------------------------------


def test_recipe_key_fills_defaults_and_ignores_seed_task_fidelity() -> None:
    reg = get_registry()
    bare = {"learning": {"name": "backprop", "config": {}}, "growth": {"name": "random"}}
    explicit = {
        "connectivity": {"name": "dense", "config": {}},
        "learning": {"name": "backprop", "config": {"optimizer": "adam", "lr": 3e-3, "momentum": 0.9,
                                                    "weight_decay": 0.0}},
        "trigger": {"name": "never"},
        "growth": {"name": "random", "config": {"units": 8, "operator": "split", "noise": 0.05,
                                                "max_total": 1024}},
        "composition": "sequential",
    }
    key = recipe_key(reg, bare, {})
    assert len(key) == 16
    assert recipe_key(reg, explicit, {"hidden": [256, 256], "activation": "relu"}) == key
    assert recipe_key(reg, explicit) == key  # network defaults to NetworkSpec()
    different = {**bare, "learning": {"name": "backprop", "config": {"lr": 1e-3}}}
    assert recipe_key(reg, different, {}) != key
    assert recipe_key(reg, bare, {"hidden": [64]}) != key
    assert recipe_key(reg, {**bare, "growth": {"name": "none"}}, {}) != key
    r1 = Recipe(**bare, seed=1, task="digits", fidelity="coarse")
    r2 = Recipe(**explicit, seed=5, task="other", fidelity="fine")
    assert recipe_key(reg, r1) == recipe_key(reg, r2) == key
    space = SearchSpace(reg)
    assert space.recipe_key(bare, {}) == key
    with pytest.raises(ConfigError, match=r"learning\.backprop\.lr"):
        recipe_key(reg, {"learning": {"name": "backprop", "config": {"lr": -1.0}}})
    with pytest.raises(UnknownNameError):
        recipe_key(reg, {"growth": {"name": "nope"}})
    with pytest.raises(ConfigError, match=r"network\.hidden"):
        recipe_key(reg, bare, {"hidden": [0]})


def test_recipe_key_of_suggested_slots_is_stable() -> None:
    space = SearchSpace(get_registry())
    keys = [recipe_key(space.registry, slots, {"hidden": [32]}) for _, slots in sample(space, n=20, seed=1)]
    again = [recipe_key(space.registry, slots, {"hidden": [32]}) for _, slots in sample(space, n=20, seed=1)]
    assert keys == again


# -- samplers -------------------------------------------------------------------------------------


def _optimise(space: SearchSpace, sampler: optuna.samplers.BaseSampler, n: int) -> tuple[optuna.Study, int]:
    """``n`` ask/tell rounds; learn_b (no lr: score 0) looks best, and learn_b x grow_bad is rejected."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rejected = 0
    for _ in range(n):
        trial = study.ask()
        try:
            slots = space.suggest(trial)
        except ConfigError as exc:
            tell_rejected(study, trial, exc)
            rejected += 1
            continue
        config = slots["learning"]["config"]
        score = -abs(math.log10(config.get("lr", 0.01)) + 2) + (slots["growth"]["name"] == "grow_a")
        study.tell(trial, score)
    return study, rejected


def test_tpe_handles_the_conditional_space_without_warnings() -> None:
    space = SearchSpace(fake_registry())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = optuna.samplers.TPESampler(seed=0, multivariate=False, constant_liar=False,
                                             n_startup_trials=5)
        study, rejected = _optimise(space, sampler, 40)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) + rejected == 40
    # rejected trials are told PRUNED, which TPE ranks worst: it does not keep proposing them
    # (told FAIL, TPE ignores them and proposes the same combination again and again)
    assert rejected <= 8
    assert {t.params["learning"] for t in complete} <= {"learn_a", "learn_b"}
    assert study.best_trial.params["growth"] == "grow_a"


def test_multivariate_grouped_tpe_works_too() -> None:
    for registry in (get_registry(), fake_registry()):
        space = SearchSpace(registry)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=5)
            study, rejected = _optimise(space, sampler, 30)
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 30 - rejected
        assert rejected <= 8
