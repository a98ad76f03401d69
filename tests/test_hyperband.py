"""``BracketReusingHyperbandPruner``: Optuna's Hyperband, the same decisions and samples, each bracket's
study built once per study and handed out without a stale snapshot of the trials."""

from __future__ import annotations

import optuna
import pytest

from principlelab.studies import tpe
from principlelab.studies.hyperband import BracketReusingHyperbandPruner
from test_tpe import conditional  # a conditional space with per-step reports, so that Hyperband prunes

# Optuna 4.x marks constant_liar experimental (the CI's Optuna 4.5 rerun); 5.x does not
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.mark.parametrize("sampler", [optuna.samplers.TPESampler, tpe.SplitOnceTPESampler])
@pytest.mark.parametrize("constant_liar", [False, True])
def test_trials_equal_those_under_optunas_hyperband(sampler: type, constant_liar: bool) -> None:
    histories = []
    for pruner in (optuna.pruners.HyperbandPruner, BracketReusingHyperbandPruner):
        study = optuna.create_study(
            direction="maximize", study_name="same",  # Hyperband's brackets depend on the study name
            sampler=sampler(seed=3, n_startup_trials=8, constant_liar=constant_liar, multivariate=False),
            pruner=pruner(min_resource=1, max_resource=9, reduction_factor=3, bootstrap_count=0))
        study.optimize(conditional, n_trials=60)
        histories.append([(t.state, t.params, t.value, t.intermediate_values) for t in study.trials])
    assert histories[0] == histories[1]
    states = [state for state, *_ in histories[0]]
    assert states.count(optuna.trial.TrialState.PRUNED) > 5 and states.count(optuna.trial.TrialState.COMPLETE) > 5


def test_a_bracket_study_is_built_once_and_reads_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    create = optuna.pruners.HyperbandPruner._create_bracket_study

    def counting(self: optuna.pruners.HyperbandPruner, study: optuna.study.Study, bracket_id: int) -> object:
        built.append(bracket_id)
        return create(self, study, bracket_id)

    monkeypatch.setattr(optuna.pruners.HyperbandPruner, "_create_bracket_study", counting)
    pruner = BracketReusingHyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
    study = optuna.create_study(pruner=pruner)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    bracket = pruner._create_bracket_study(study, 0)
    assert len(bracket._get_trials(deepcopy=False, use_cache=True)) == 1  # its snapshot now holds one trial
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    again = pruner._create_bracket_study(study, 0)
    assert again is bracket
    assert len(again._get_trials(deepcopy=False, use_cache=True)) == 2  # read anew, as a new one would
    assert built.count(0) == 1

    other = optuna.create_study(pruner=pruner)  # another study: brackets of its own
    assert pruner._create_bracket_study(other, 0) is not bracket
    assert pruner._create_bracket_study(other, 0)._study is other
    assert built.count(0) == 2


def test_campaign_levels_use_it() -> None:
    from principlelab.studies.campaign_file import parse_campaign
    from principlelab.studies.optuna_setup import make_pruner

    spec = parse_campaign('name = "c"\ntasks = ["digits"]\n[[levels]]\nname = "coarse"\nepochs = 2\ntrials = 4\n')
    assert isinstance(make_pruner(spec.levels[0], 0, max_resource=100), BracketReusingHyperbandPruner)
