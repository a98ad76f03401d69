"""The conformance kit run over every registered built-in principle, and checks that it catches bugs."""

from __future__ import annotations

import os

os.environ["PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # hermetic: built-in plugins only

import random
from typing import Any, ClassVar

import pytest
import torch
from pydantic import Field

from principlelab.core.principles import Composition, Firing, GrowthRule, PrincipleConfig, Trigger
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.random import RandomGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.registry import get_registry
from principlelab.testing import (
    CompositionConformance,
    ConnectivityConformance,
    GrowthRuleConformance,
    LearningRuleConformance,
    PrincipleConformance,
    TriggerConformance,
    run_tiny,
)

REGISTRY = get_registry()  # cached per autoload setting: never one built with third-party plugins


def _principle_fixture(slot: str) -> Any:
    @pytest.fixture(params=REGISTRY.names(slot))
    def principle_class(self: Any, request: pytest.FixtureRequest) -> type:
        return get_registry().get(slot, request.param)

    return principle_class


class TestConnectivity(ConnectivityConformance):
    principle_class = _principle_fixture("connectivity")


class TestLearningRule(LearningRuleConformance):
    principle_class = _principle_fixture("learning")


class TestTrigger(TriggerConformance):
    principle_class = _principle_fixture("trigger")


class TestGrowthRule(GrowthRuleConformance):
    principle_class = _principle_fixture("growth")


class TestComposition(CompositionConformance):
    principle_class = _principle_fixture("composition")


class TestGrowthRuleNonDefaultConfig(GrowthRuleConformance):
    """The ``config`` fixture: the random rule with every operator it offers."""

    @pytest.fixture
    def principle_class(self) -> type:
        return RandomGrowth

    @pytest.fixture(params=["zero", "clone"])
    def config(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return {"operator": request.param, "units": 5, "noise": 0.0}


def test_every_slot_has_builtins() -> None:
    for slot in ("connectivity", "learning", "trigger", "growth", "composition"):
        assert REGISTRY.names(slot), f"no built-in {slot} principle registered"


def test_run_tiny_overrides() -> None:
    result = run_tiny({"growth": "random", "trigger": {"name": "every_k", "k": 2}, "fidelity": {"epochs": 3}})
    assert len(result.epochs) == 3
    assert result.recipe.fidelity.data_fraction == 0.5  # the tiny defaults are merged, not replaced
    assert result.widths[1] > 32  # grew at the end of epoch 2


# ----------------------------------------------------------------- the kit catches broken principles
class _Unbounded(Trigger):
    name: ClassVar[str] = "t_unbounded"

    class Config(PrincipleConfig):
        patience: int = Field(3, ge=1, le=10, json_schema_extra={"search": {"low": 0, "high": 20}})

    def on_step(self, signals: Any) -> Firing | None:
        return None


class _NoDefault(_Unbounded):
    name: ClassVar[str] = "t_no_default"

    class Config(PrincipleConfig):
        patience: int


class _EmptyReason(_Unbounded):
    name: ClassVar[str] = "t_empty_reason"

    def on_epoch_end(self, signals: Any) -> Firing | None:
        return Firing(reason="")


class _Moody(_Unbounded):
    name: ClassVar[str] = "t_moody"

    def on_step(self, signals: Any) -> Firing | None:
        return Firing("coin flip") if random.random() < 0.3 else None


class _Liar(GrowthRule):
    """Adds random outgoing weights, yet claims function preservation and no new parameters."""

    name: ClassVar[str] = "t_liar"

    def grow(self, net: Any, signals: Any, generator: torch.Generator) -> list:
        events = net.add_units(1, 2, init="zero", generator=generator)
        with torch.no_grad():
            net.layers[1].weight[:, -2:] = 1.0
        for event in events:
            event.params_delta = 0
        return events


class _Forgetful(Backprop):
    """Does not move its optimizer to the grown tensors."""

    name: ClassVar[str] = "t_forgetful"

    def on_growth(self, net: Any, composition: Any, remap: Any) -> None:
        pass


class _IgnoresCap(Dense):
    name: ClassVar[str] = "t_ignores_cap"

    def build(self, spec: Any, *, in_features: int, num_classes: int, width_cap: Any, generator: Any) -> Any:
        return super().build(spec, in_features=in_features, num_classes=num_classes, width_cap=None,
                             generator=generator)


class _Transposed(Composition):
    name: ClassVar[str] = "t_transposed"

    def forward(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        return net.forward(x).T


def test_kit_rejects_bad_config() -> None:
    suite = PrincipleConformance()
    with pytest.raises(AssertionError, match="search hint"):
        suite.test_search_hints_inside_bounds(_Unbounded, {})
    with pytest.raises(AssertionError, match="without a default"):
        suite.test_config_fields_have_defaults(_NoDefault)


def test_kit_rejects_bad_triggers() -> None:
    suite = TriggerConformance()
    with pytest.raises(AssertionError, match="without a reason"):
        suite.test_firings_well_formed(_EmptyReason, {})
    with pytest.raises(AssertionError, match="fired differently"):
        suite.test_deterministic(_Moody, {})


def test_kit_rejects_lying_growth() -> None:
    suite = GrowthRuleConformance()
    with pytest.raises(AssertionError, match="params_delta"):
        suite.test_events_account_for_growth(_Liar, {}, "dense")
    with pytest.raises(AssertionError, match="output moved"):
        suite.test_function_preserving(_Liar, {}, "dense")


def test_kit_rejects_learning_rule_that_ignores_growth() -> None:
    with pytest.raises(AssertionError, match="never trained"):
        LearningRuleConformance().test_learns_after_growth(_Forgetful, {})


def test_kit_rejects_connectivity_ignoring_cap_and_bad_composition() -> None:
    with pytest.raises(AssertionError, match="width_cap"):
        ConnectivityConformance().test_build_respects_width_cap(_IgnoresCap, {})
    with pytest.raises(AssertionError, match="shape"):
        CompositionConformance().test_forward_and_loss(_Transposed, {})
