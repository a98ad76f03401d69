"""A conformance kit for principle authors: subclass a slot's suite, provide one fixture.

Like Optuna's ``optuna.testing.pytest_samplers``: each slot has a test class that a plugin's test
module subclasses, giving the fixture ``principle_class`` (and optionally ``config``)::

    import pytest
    from principlelab.testing import GrowthRuleConformance

    class TestMyGrowth(GrowthRuleConformance):
        @pytest.fixture
        def principle_class(self):
            return MyGrowth

        @pytest.fixture
        def config(self):  # optional; default {}
            return {"units": 4}

Suites: :class:`ConnectivityConformance`, :class:`LearningRuleConformance`,
:class:`TriggerConformance`, :class:`GrowthRuleConformance`, :class:`CompositionConformance`; all
share :class:`PrincipleConformance` (name, Config defaults, round trips, bounds, search hints).
Suites that train use a tiny digits recipe (:func:`run_tiny`); override the class attributes
``min_accuracy`` and ``recipe_overrides`` to adapt them. Needs pytest.
"""

import pytest

pytest.register_assert_rewrite(
    "principlelab.testing.conformance",
    "principlelab.testing.conformance_growth",
    "principlelab.testing.conformance_slots",
)

from principlelab.testing.conformance import PrincipleConformance  # noqa: E402
from principlelab.testing.conformance_growth import (  # noqa: E402
    GrowthOutcome,
    GrowthRuleConformance,
    TriggerConformance,
)
from principlelab.testing.conformance_slots import (  # noqa: E402
    CompositionConformance,
    ConnectivityConformance,
    LearningRuleConformance,
)
from principlelab.testing.tiny import run_tiny, tiny_recipe, tiny_trainer  # noqa: E402

__all__ = [
    "CompositionConformance",
    "ConnectivityConformance",
    "GrowthOutcome",
    "GrowthRuleConformance",
    "LearningRuleConformance",
    "PrincipleConformance",
    "TriggerConformance",
    "run_tiny",
    "tiny_recipe",
    "tiny_trainer",
]
