"""``SplitOnceTPESampler``: Optuna's TPE, the same samples, the history ranked once per trial and each
parameter's values gathered from arrays kept by trial number."""

from __future__ import annotations

import math
import random
from typing import Any

import optuna
import pytest

from principlelab.studies import tpe

# Optuna 4.x marks constant_liar experimental (the CI's Optuna 4.5 rerun); 5.x does not
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.ERROR)


def assert_same_trials(ours: Any, theirs: Any) -> None:
    """``ours`` equals ``theirs`` (trials as nested tuples, lists and dicts), but floats (a float parameter,
    a value) only to 1e-10 relative: under Optuna 5 the sampler draws Optuna's candidates to rounding
    (``tpe_density._draw_standard``), so a float parameter may differ from Optuna's in its last digits."""
    if isinstance(ours, float) and isinstance(theirs, float):
        assert math.isclose(ours, theirs, rel_tol=1e-10, abs_tol=1e-12), (ours, theirs)
    elif isinstance(ours, list | tuple) and isinstance(theirs, list | tuple):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (ours, theirs)
        for mine, other in zip(ours, theirs, strict=True):
            assert_same_trials(mine, other)
    elif isinstance(ours, dict) and isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), (ours, theirs)
        for key in ours:
            assert_same_trials(ours[key], theirs[key])
    else:
        assert type(ours) is type(theirs) and ours == theirs, (ours, theirs)


def conditional(trial: optuna.Trial) -> float:
    """A small conditional space like a campaign's: a choice, then that choice's parameters."""
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    x = trial.suggest_float(f"{kind}.x", 1e-3, 1.0, log=True)
    n = trial.suggest_int(f"{kind}.n", 1, 16)
    flag = trial.suggest_categorical("flag", [True, False])
    value = x * {"a": 1.0, "b": 0.8, "c": 0.5}[kind] + 0.01 * n + (0.1 if flag else 0.0)
    for step in range(1, 10):
        trial.report(value * step / 9, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


@pytest.mark.parametrize("pruner", [None, "hyperband"])
@pytest.mark.parametrize("constant_liar", [False, True])
def test_samples_equal_optunas_tpe(pruner: str | None, constant_liar: bool) -> None:
    histories = []
    for cls in (optuna.samplers.TPESampler, tpe.SplitOnceTPESampler):
        study = optuna.create_study(
            direction="maximize", study_name="same",  # Hyperband's brackets depend on the study name
            sampler=cls(seed=7, n_startup_trials=8, constant_liar=constant_liar, multivariate=False),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
            if pruner else optuna.pruners.NopPruner())
        study.optimize(conditional, n_trials=60)
        histories.append([(t.state, t.params, t.value) for t in study.trials])
    assert_same_trials(histories[1], histories[0])
    assert sum(state == optuna.trial.TrialState.COMPLETE for state, _, _ in histories[0]) > 10


@pytest.mark.parametrize("constant_liar", [False, True])
@pytest.mark.parametrize("pruner", [None, "hyperband"])  # Hyperband: TPE reads the storage for each parameter
def test_the_split_is_computed_once_per_trial(monkeypatch: pytest.MonkeyPatch, pruner: str | None,
                                              constant_liar: bool) -> None:
    assert tpe._INSTALLED
    wrapped = tpe._tpe_module._split_trials
    original = wrapped.__closure__[0].cell_contents  # Optuna's function, which the wrapper calls
    calls = {"n": 0}

    def counting(*args):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return original(*args)

    for cell in wrapped.__closure__:
        if cell.cell_contents is original:
            monkeypatch.setattr(cell, "cell_contents", counting)

    def run(cls: type[optuna.samplers.TPESampler]) -> None:
        study = optuna.create_study(
            direction="maximize", sampler=cls(seed=0, n_startup_trials=5, constant_liar=constant_liar,
                                              multivariate=False),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9) if pruner else None)
        study.optimize(conditional, n_trials=20)

    run(tpe.SplitOnceTPESampler)
    assert calls["n"] == 15  # once per trial after the 5 startup ones, not once per parameter
    calls["n"] = 0
    run(optuna.samplers.TPESampler)
    assert calls["n"] >= 2 * 15  # another TPESampler: Optuna's behaviour, once per parameter


def lagged(sampler: optuna.samplers.BaseSampler, n_trials: int, in_hand: int, seed: int = 3) -> list[tuple[Any, ...]]:
    """A study with ``in_hand`` trials open at a time, finished out of order (some pruned, some failed),
    one of them left with only its first parameter while the next is sampled (running trials' partial
    parameters, constant liar), and sometimes another finished between two parameters of one trial."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    order, open_trials = random.Random(seed), []
    for _ in range(n_trials):
        trial = study.ask()
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        open_trials.append((trial, kind))
        if len(open_trials) > in_hand:
            done, done_kind = open_trials.pop(order.randrange(len(open_trials)))
            x = done.suggest_float(f"{done_kind}.x", 1e-3, 1.0, log=True)
            if order.random() < 0.2:  # the history changes between two parameters of one trial
                other, _ = open_trials.pop(order.randrange(len(open_trials)))  # with only its first parameter
                ending = order.choice(["fail", "prune", "complete"])
                if ending == "complete":
                    study.tell(other, order.random())
                else:
                    study.tell(other, state=optuna.trial.TrialState.FAIL if ending == "fail" else
                               optuna.trial.TrialState.PRUNED)
            n = done.suggest_int(f"{done_kind}.n", 1, 16)
            if order.random() < 0.3:
                done.report(x, 1)
                study.tell(done, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(done, x + 0.01 * n)
    return [(t.number, t.state, t.params, t.value) for t in study.trials]


@pytest.mark.parametrize("history", [3, 4, 5])
@pytest.mark.parametrize("constant_liar", [False, True])
def test_a_long_lagged_history_samples_as_optunas_tpe(constant_liar: bool, history: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    gathered = {"n": 0}
    gather = tpe._ParameterColumns.gather

    def counting(self: Any, *args: Any) -> Any:
        gathered["n"] += 1
        return gather(self, *args)

    monkeypatch.setattr(tpe._ParameterColumns, "gather", counting)
    kwargs = {"seed": 11, "n_startup_trials": 10, "constant_liar": constant_liar, "multivariate": False}
    ours = lagged(tpe.SplitOnceTPESampler(**kwargs), 150, in_hand=3, seed=history)
    assert_same_trials(ours, lagged(optuna.samplers.TPESampler(**kwargs), 150, in_hand=3, seed=history))
    if tpe.GATHERS_BY_TRIAL:  # Optuna 5: below and above, for each of three parameters, from the arrays
        assert gathered["n"] > 2 * 3 * 100
    else:  # Optuna 4 passes no study: its own method ran
        assert gathered["n"] == 0


@pytest.mark.skipif(not tpe.GATHERS_BY_TRIAL, reason="Optuna before 5.0 passes no study: its own method runs")
def test_values_are_gathered_in_order_with_optunas_types() -> None:
    study = optuna.create_study()
    for i in range(6):
        trial = study.ask()
        trial.suggest_categorical("c", ["u", "v"])
        if i % 2:
            trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, float(i))
    running = study.ask()
    running.suggest_categorical("c", ["u", "v"])
    running.suggest_float("x", 0.0, 1.0)
    trials = study.get_trials(deepcopy=False)[::-1]  # any order: the caller's is kept
    sampler = tpe.SplitOnceTPESampler(seed=0, multivariate=False)
    plain = optuna.samplers.TPESampler(seed=0, multivariate=False)
    for space in ({"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
                  {"c": optuna.distributions.CategoricalDistribution(["u", "v"])},
                  {"missing": optuna.distributions.FloatDistribution(0.0, 1.0)}):
        for _ in range(2):  # the second time from the arrays
            ours = sampler._get_internal_repr(trials, space, study)
            theirs = plain._get_internal_repr(trials, space, study)
            assert ours.keys() == theirs.keys()
            for name in ours:
                assert ours[name].dtype == theirs[name].dtype and ours[name].tolist() == theirs[name].tolist()


@pytest.mark.skipif(not tpe.GATHERS_BY_TRIAL, reason="Optuna before 5.0 passes no study: its own method runs")
def test_a_name_keeps_one_column_per_distribution() -> None:
    """Columns are found by name, then by an equal distribution (a new object for each suggestion): a
    categorical whose choices changed order gets its own column (its internal values differ), an equal
    one with a NaN choice (equal only by Optuna's ``==``) reuses its column."""
    study = optuna.create_study()
    nan = float("nan")
    for i in range(4):
        trial = study.ask()
        trial.suggest_categorical("c", ["u", "v"])
        trial.suggest_categorical("n", [nan, "w"])
        study.tell(trial, float(i))
    trials = study.get_trials(deepcopy=False)
    sampler = tpe.SplitOnceTPESampler(seed=0, multivariate=False)
    plain = optuna.samplers.TPESampler(seed=0, multivariate=False)
    Categorical = optuna.distributions.CategoricalDistribution
    for space in ({"c": Categorical(["u", "v"])}, {"c": Categorical(["v", "u"])}, {"c": Categorical(["u", "v"])},
                  {"n": Categorical([float("nan"), "w"])}, {"n": Categorical([float("nan"), "w"])}):
        ours, theirs = sampler._get_internal_repr(trials, space, study), plain._get_internal_repr(trials, space, study)
        ((name, values),) = ours.items()
        assert values.tolist() == theirs[name].tolist()
    assert sampler._columns is not None
    assert [len(sampler._columns.columns[name]) for name in ("c", "n")] == [2, 1]
