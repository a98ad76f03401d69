"""``tpe_density``: one parameter of independent TPE computed in one pass, with Optuna's densities, draws
and samples (to rounding), for every kind of distribution a campaign uses."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from principlelab.studies import tpe, tpe_density
from test_tpe import assert_same_trials

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.skipif(not tpe.GATHERS_BY_TRIAL, reason="the lean path follows Optuna 5's estimator")
_parzen = importlib.import_module("optuna.samplers._tpe.parzen_estimator")
_sampler = importlib.import_module("optuna.samplers._tpe.sampler")
_truncnorm = importlib.import_module("optuna.samplers._tpe._truncnorm")

DISTRIBUTIONS = {
    "float": FloatDistribution(-2.0, 3.0),
    "log float": FloatDistribution(1e-4, 1.0, log=True),
    "stepped float": FloatDistribution(0.0, 1.0, step=0.125),
    "int": IntDistribution(1, 16),
    "log int": IntDistribution(1, 512, log=True),
    "stepped int": IntDistribution(8, 96, step=8),
    "categorical": CategoricalDistribution(["relu", "tanh", None, 3, True]),
}


def observations(distribution: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` internal values of ``distribution``, with repeats (as a study's history has)."""
    if isinstance(distribution, CategoricalDistribution):
        return rng.integers(0, len(distribution.choices), size=n).astype(np.int64)
    values = rng.uniform(0, 1, size=n)
    if distribution.log:
        values = np.exp(np.log(distribution.low) + values * (np.log(distribution.high) - np.log(distribution.low)))
    else:
        values = distribution.low + values * (distribution.high - distribution.low)
    if distribution.step is not None:
        values = distribution.low + np.round((values - distribution.low) / distribution.step) * distribution.step
    if isinstance(distribution, IntDistribution):
        values = np.round(values)
    values[: n // 4] = values[n // 4: 2 * (n // 4)]  # repeated values: kernels of equal centre
    return np.clip(values, distribution.low, distribution.high)


def optunas_estimator(observed: np.ndarray, distribution: Any) -> Any:
    parameters = _parzen._ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True,
                                                    consider_endpoints=False, weights=_sampler.default_weights,
                                                    multivariate=True)
    return _parzen._ParzenEstimator({"p": observed}, {"p": distribution}, parameters)


def lean_log_pdf(observed: np.ndarray, distribution: Any, at: np.ndarray) -> np.ndarray:
    weights = tpe_density._mixture_weights(len(observed), _sampler.default_weights, 1.0)
    if isinstance(distribution, CategoricalDistribution):
        table = tpe_density._categorical_tables(observed[np.newaxis], [len(distribution.choices)], 1.0)
        log_pdf = tpe_density._table_log_pdf(table, at.astype(np.int64)[np.newaxis])
    else:
        log_pdf = tpe_density._Kernels(observed[np.newaxis], [distribution]).log_pdf(at[np.newaxis])
    return tpe_density._mixture_log_pdf(log_pdf, weights)[0]


@pytest.mark.parametrize("kind", list(DISTRIBUTIONS))
@pytest.mark.parametrize("n", [0, 1, 3, 30, 140])  # 140: Optuna's weights ramp down old trials past 25
def test_the_mixture_densities_are_optunas(kind: str, n: int) -> None:
    distribution, rng = DISTRIBUTIONS[kind], np.random.default_rng(n)
    observed = observations(distribution, n, rng)
    theirs = optunas_estimator(observed, distribution)
    at = theirs.sample(np.random.RandomState(5), 200)["p"]  # points where the density lives, steps included
    expected = theirs.log_pdf({"p": at})
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(lean_log_pdf(observed, distribution, at), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", list(DISTRIBUTIONS))
@pytest.mark.parametrize("sizes", [(0, 0), (2, 5), (4, 40), (25, 200)])
def test_the_sample_is_optunas(kind: str, sizes: tuple[int, int]) -> None:
    distribution, rng = DISTRIBUTIONS[kind], np.random.default_rng(sum(sizes))
    below, above = observations(distribution, sizes[0], rng), observations(distribution, sizes[1], rng)
    for seed in range(25):
        mpe_below, mpe_above = optunas_estimator(below, distribution), optunas_estimator(above, distribution)
        theirs_rng, ours_rng = np.random.RandomState(seed), np.random.RandomState(seed)
        candidates = mpe_below.sample(theirs_rng, 24)
        score = mpe_below.log_pdf(candidates) - mpe_above.log_pdf(candidates)
        expected = optuna.samplers.TPESampler._compare(candidates, score)["p"]
        ours = tpe_density.sample_internal(below, above, distribution, ours_rng, 24, _sampler.default_weights, 1.0)
        if kind in ("float", "log float"):  # Optuna's draw to rounding (test_the_draws_are_optunas)
            assert ours == pytest.approx(expected, rel=1e-10, abs=1e-12), (seed, ours, expected)
        else:  # a step grid or a category: exactly
            assert ours == expected, (seed, ours, expected)
        assert ours_rng.randint(2**31) == theirs_rng.randint(2**31)  # the generator advanced as Optuna's


def test_categories_of_equal_probability_are_chosen_as_optuna_chooses() -> None:
    """Choices 1 and 2 have the same counts, good and bad, and equal weights: their scores are equal but
    for rounding, which Optuna's order of summing the kernels decides (8 kernels: a pairwise sum)."""
    distribution = CategoricalDistribution(["a", "b", "c"])
    below, above = np.array([0, 2, 1]), np.array([1, 1, 0, 2, 0, 0, 2])
    chosen = set()
    for seed in range(40):
        mpe_below, mpe_above = optunas_estimator(below, distribution), optunas_estimator(above, distribution)
        candidates = mpe_below.sample(np.random.RandomState(seed), 24)
        score = mpe_below.log_pdf(candidates) - mpe_above.log_pdf(candidates)
        expected = optuna.samplers.TPESampler._compare(candidates, score)["p"]
        ours = tpe_density.sample_internal(below, above, distribution, np.random.RandomState(seed), 24,
                                           _sampler.default_weights, 1.0)
        assert ours == expected, seed
        chosen.add(ours)
    assert chosen == {1}  # 0 is worse, and Optuna's rounding favours 1 over 2 (another order of sums picks 2)


@pytest.mark.parametrize("interval", ["central", "at the low end", "at the high end", "narrow", "far tails"])
def test_the_draws_are_optunas(interval: str) -> None:
    """``_draw_standard`` against Optuna's ``_truncnorm.rvs`` at the uniform numbers ``rvs`` draws: values to 1e-10."""
    rng = np.random.default_rng(len(interval))
    n = 5000
    a, b = -rng.exponential(2.0, n), rng.exponential(2.0, n)  # kernels' bounds hold the centre: a <= 0 <= b
    if interval == "at the low end":  # an observation at the low bound
        a[:] = 0.0
    elif interval == "at the high end":
        b[:] = 0.0
    elif interval == "narrow":  # a wide kernel on a narrow range (the prior's width is the range's)
        a, b = -rng.uniform(0, 1e-3, n), rng.uniform(0, 1e-3, n)
    elif interval == "far tails":  # a narrow kernel (the magic clip allows 1/100 of the range)
        a, b = -rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    theirs_rng, ours_rng = np.random.RandomState(3), np.random.RandomState(3)
    expected = _truncnorm.rvs(a, b, random_state=theirs_rng)
    ours = tpe_density._draw_standard(a, b, tpe_density._log_gauss_mass(a, b), ours_rng.uniform(0, 1, size=n))
    assert ((ours >= a) & (ours <= b)).all()
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)
    assert ours_rng.randint(2**31) == theirs_rng.randint(2**31)  # rvs draws n uniform numbers, no more


def every_kind(trial: optuna.Trial) -> float:
    """One parameter of each kind, two of them conditional."""
    values = {kind: trial._suggest(kind, distribution) for kind, distribution in DISTRIBUTIONS.items()
              if kind not in ("log int", "stepped float") or trial.number % 3}
    choice = DISTRIBUTIONS["categorical"].choices.index(values["categorical"])
    return float(values["float"] + np.log(values["log float"]) + values["int"] * 0.1 - values.get("log int", 0) * 1e-3
                 + values.get("stepped float", 0) + values["stepped int"] * 0.01 + choice * 0.3)


@pytest.mark.parametrize("constant_liar", [False, True])
def test_a_study_samples_as_optunas_tpe_through_the_lean_path(constant_liar: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    sample_internal = tpe_density.sample_internal

    def counting(*args: Any) -> Any:
        calls["n"] += 1
        return sample_internal(*args)

    monkeypatch.setattr(tpe_density, "sample_internal", counting)
    histories = []
    for cls in (optuna.samplers.TPESampler, tpe.SplitOnceTPESampler):
        study = optuna.create_study(sampler=cls(seed=4, n_startup_trials=10, constant_liar=constant_liar,
                                                multivariate=False))
        study.optimize(every_kind, n_trials=70)
        histories.append([(t.params, t.value) for t in study.trials])
    assert_same_trials(histories[1], histories[0])
    assert calls["n"] > 60 * 5  # each parameter of each trial after the startup ones


@pytest.mark.filterwarnings("ignore:`consider_endpoints` has been deprecated:FutureWarning")
@pytest.mark.parametrize("variant", ["endpoints", "estimator", "multi-objective"])
def test_what_it_does_not_compute_runs_optunas_code(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("the lean path ran")

    monkeypatch.setattr(tpe_density, "sample_internal", refuse)
    kwargs: dict[str, Any] = {"seed": 1, "n_startup_trials": 3, "multivariate": False}
    if variant == "endpoints":
        kwargs["consider_endpoints"] = True
    sampler = tpe.SplitOnceTPESampler(**kwargs)
    if variant == "estimator":
        sampler._parzen_estimator_cls = type("Custom", (_parzen._ParzenEstimator,), {})
    directions = ["minimize", "maximize"] if variant == "multi-objective" else ["minimize"]
    study = optuna.create_study(directions=directions, sampler=sampler)
    study.optimize(lambda t: [t.suggest_float("x", 0, 1)] * len(directions), n_trials=8)
    assert len(study.trials) == 8


def test_mixture_weights_are_kept_only_for_optunas_default_weights() -> None:
    for n in (0, 1, 5, 30, 140):
        kept = tpe_density._mixture_weights(n, _sampler.default_weights, 1.0)
        assert kept is tpe_density._mixture_weights(n, _sampler.default_weights, 1.0)
        np.testing.assert_array_equal(kept, tpe_density._normalised_weights(n, _sampler.default_weights, 1.0))
        assert kept.sum() == pytest.approx(1.0) and not kept.flags.writeable
    calls: list[int] = []

    def custom(n: int) -> np.ndarray:
        calls.append(n)
        return np.arange(1, n + 1, dtype=float)

    first, second = (tpe_density._mixture_weights(4, custom, 1.0) for _ in range(2))
    assert calls == [4, 4] and first is not second
    np.testing.assert_allclose(first, np.array([1, 2, 3, 4, 1]) / 11)
