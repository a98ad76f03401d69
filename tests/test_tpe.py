"""``SplitOnceTPESampler``: Optuna's TPE, the same samples, the history ranked once per trial."""

from __future__ import annotations

import optuna
import pytest

from principlelab.studies import tpe

optuna.logging.set_verbosity(optuna.logging.ERROR)


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
            sampler=cls(seed=7, n_startup_trials=8, constant_liar=constant_liar),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
            if pruner else optuna.pruners.NopPruner())
        study.optimize(conditional, n_trials=60)
        histories.append([(t.state, t.params, t.value) for t in study.trials])
    assert histories[0] == histories[1]
    assert sum(state == optuna.trial.TrialState.COMPLETE for state, _, _ in histories[0]) > 10


def test_the_split_is_computed_once_per_trial(monkeypatch: pytest.MonkeyPatch) -> None:
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
    study = optuna.create_study(direction="maximize", sampler=tpe.SplitOnceTPESampler(seed=0, n_startup_trials=5))
    study.optimize(conditional, n_trials=20)
    assert calls["n"] == 15  # once per trial after the 5 startup ones, not once per parameter
    calls["n"] = 0
    plain = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    plain.optimize(conditional, n_trials=20)
    assert calls["n"] >= 2 * 15  # another TPESampler: Optuna's behaviour, once per parameter
