"""Expected parameters (``SplitOnceTPESampler.expect``, ``tpe_plan``): sampled together, the values that
sampling them one at a time gives, Optuna's TPE's, whatever the trial then does."""

from __future__ import annotations

import importlib
import random
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from principlelab.errors import ConfigError
from principlelab.registry import get_registry
from principlelab.studies import tpe, tpe_density
from principlelab.studies.space import SearchSpace
from test_tpe import assert_same_trials
from test_tpe_density import DISTRIBUTIONS, observations

pytestmark = [pytest.mark.skipif(not tpe.GATHERS_BY_TRIAL, reason="the lean path follows Optuna 5's estimator"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
optuna.logging.set_verbosity(optuna.logging.ERROR)
_sampler = importlib.import_module("optuna.samplers._tpe.sampler")


@pytest.mark.parametrize("group_elements", [tpe_density._GROUP_ELEMENTS, 3000, 1])  # groups cut at 3000: by 1 to 3
def test_parameters_sampled_together_are_each_sampled_as_alone(group_elements: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tpe_density, "_GROUP_ELEMENTS", group_elements)
    rng = np.random.default_rng(0)
    kinds = list(DISTRIBUTIONS) * 3
    sizes = [(0, 0), (3, 9), (3, 9), (1, 4), (25, 200)]  # some share their sizes: computed as one group
    entries = [(observations(DISTRIBUTIONS[kind], sizes[i % 5][0], rng),
                observations(DISTRIBUTIONS[kind], sizes[i % 5][1], rng), DISTRIBUTIONS[kind])
               for i, kind in enumerate(kinds)]
    for seed in range(10):
        alone_rng = np.random.RandomState(seed)
        alone = [tpe_density.sample_internal(below, above, distribution, alone_rng, 24, _sampler.default_weights, 1.0)
                 for below, above, distribution in entries]
        draws = np.random.RandomState(seed).random_sample((len(entries), 2, 24))
        together = tpe_density.sample_many(entries, draws, _sampler.default_weights, 1.0)
        np.testing.assert_allclose(together, alone, rtol=1e-12)
        assert alone_rng.randint(2**31) == _advanced(seed, draws.size)  # each one took its 2 * 24 numbers


def _advanced(seed: int, n: int) -> int:
    """The next ``randint(2**31)`` of ``RandomState(seed)`` after ``n`` uniform numbers."""
    rng = np.random.RandomState(seed)
    rng.random_sample(n)
    return int(rng.randint(2**31))


SPACE = {"a.x": FloatDistribution(1e-3, 1.0, log=True), "a.n": IntDistribution(1, 16),
         "b.x": FloatDistribution(0.0, 1.0, step=0.125), "b.mode": CategoricalDistribution(["p", "q", None]),
         "flag": CategoricalDistribution([True, False]), "only": CategoricalDistribution(["one"])}


def objective(expect: bool, deviate: bool) -> Any:
    """A conditional objective announcing its parameters when ``expect``; when ``deviate``, some trials
    stop early (an error after their first expected parameter), one asks for a parameter out of order,
    and the study has enqueued trials with a fixed parameter (which Optuna does not sample)."""
    def run(trial: optuna.Trial) -> float:
        announce = trial.study.sampler.expect if expect else lambda *_: None  # type: ignore[attr-defined]
        announce(trial, [("kind", CategoricalDistribution(["a", "b"]))])
        kind = trial.suggest_categorical("kind", ["a", "b"])
        names = [name for name in SPACE if name.startswith(kind)] + ["only", "flag"]
        if deviate and trial.number % 7 == 3:
            names = names[::-1]  # announced in one order, asked in another
            announce(trial, [(name, SPACE[name]) for name in names[::-1]])
        else:
            announce(trial, [(name, SPACE[name]) for name in names])
        values = {}
        for i, name in enumerate(names):
            values[name] = trial._suggest(name, SPACE[name])
            if deviate and i == 0 and trial.number % 5 == 2:
                raise ValueError("stopped after its first parameter")
            if deviate and trial.number % 6 == 1:
                trial.report(0.1 * i, i)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        x = values.get("a.x", values.get("b.x", 0.0))
        return float(x + 0.01 * values.get("a.n", 0) + (0.2 if values["flag"] else 0.0)
                     + (0.1 if values.get("b.mode") == "q" else 0.0))
    return run


@pytest.mark.parametrize("deviate", [False, True])
@pytest.mark.parametrize("constant_liar", [False, True])
@pytest.mark.parametrize("pruner", [None, "hyperband"])
def test_a_study_with_expectations_samples_as_optunas_tpe(deviate: bool, constant_liar: bool, pruner: str | None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    together = {"n": 0}
    sample_many = tpe_density.sample_many

    def counting(entries: Any, *args: Any) -> Any:
        together["n"] += len(entries) > 1
        return sample_many(entries, *args)

    monkeypatch.setattr(tpe_density, "sample_many", counting)
    histories = []
    for cls, expect in ((optuna.samplers.TPESampler, False), (tpe.SplitOnceTPESampler, True)):
        study = optuna.create_study(
            direction="maximize", study_name="same",
            sampler=cls(seed=5, n_startup_trials=8, constant_liar=constant_liar, multivariate=False),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4) if pruner else None)
        if deviate:
            for n in range(20, 80, 9):
                study.enqueue_trial({"kind": "a", "a.n": 3 + n % 5}, skip_if_exists=False)
        study.optimize(objective(expect, deviate), n_trials=80, catch=(ValueError,))
        histories.append([(t.state, t.params, t.value) for t in study.trials])
    assert_same_trials(histories[1], histories[0])
    assert together["n"] > 40  # most trials sampled their fields together
    if deviate:
        assert {state for state, *_ in histories[1]} >= {optuna.trial.TrialState.FAIL,
                                                         optuna.trial.TrialState.COMPLETE}


@pytest.mark.parametrize("constant_liar", [False, True])
def test_a_history_that_changes_between_two_expected_parameters(constant_liar: bool) -> None:
    """Trials finish between two parameters of another trial (as other workers' do): the parameters
    not handed out yet are sampled from the new history, as one at a time."""
    histories = []
    for cls, expect in ((optuna.samplers.TPESampler, False), (tpe.SplitOnceTPESampler, True)):
        study = optuna.create_study(
            direction="maximize",
            sampler=cls(seed=2, n_startup_trials=6, constant_liar=constant_liar, multivariate=False))
        order, open_trials = random.Random(1), []
        fields = [("a.x", SPACE["a.x"]), ("a.n", SPACE["a.n"]), ("flag", SPACE["flag"])]
        for _ in range(90):
            trial = study.ask()
            if expect:
                study.sampler.expect(trial, fields)  # type: ignore[attr-defined]
            values = [trial._suggest(*fields[0])]
            open_trials.append(trial)
            if len(open_trials) > 2 and order.random() < 0.5:  # another trial ends between two parameters
                other = open_trials.pop(order.randrange(len(open_trials) - 1))
                study.tell(other, order.random())
            values += [trial._suggest(*field) for field in fields[1:]]
            if order.random() < 0.6:
                open_trials.remove(trial)
                study.tell(trial, float(values[0]) + 0.01 * values[1] + 0.1 * values[2])
        histories.append([(t.number, t.state, t.params, t.value) for t in study.trials])
    assert_same_trials(histories[1], histories[0])


def test_the_search_space_announces_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SearchSpace.suggest`` tells the sampler the five slots, then the chosen principles' fields: the
    same trials as without the announcements, most parameters sampled in groups."""
    space = SearchSpace(get_registry())
    histories, calls = [], {"together": 0, "alone": 0}
    sample_many = tpe_density.sample_many

    def counting(entries: Any, *args: Any) -> Any:
        calls["together" if len(entries) > 1 else "alone"] += 1
        return sample_many(entries, *args)

    monkeypatch.setattr(tpe_density, "sample_many", counting)
    for announce in (False, True):
        with monkeypatch.context() as patch:
            if not announce:
                patch.setattr(tpe.SplitOnceTPESampler, "expect", None)  # a sampler without the hook
            study = optuna.create_study(direction="maximize", sampler=tpe.SplitOnceTPESampler(
                seed=0, n_startup_trials=10, multivariate=False))
            score = random.Random(0)
            for _ in range(40):
                trial = study.ask()
                try:
                    space.suggest(trial)
                except ConfigError:  # a rejected combination
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                study.tell(trial, score.random())
        histories.append([(t.state, t.params) for t in study.trials])
        if not announce:
            alone, calls["alone"] = calls["alone"], 0
    assert_same_trials(histories[1], histories[0])
    assert alone > 300 and calls["alone"] == 0 and calls["together"] >= 30  # one call per trial for its fields
