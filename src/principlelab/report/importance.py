"""Which slots and which principle parameters mattered for the objective, from the first (coarse)
Optuna study of a task.

Slot choices (``connectivity``, ``growth``, ...) are parameters of every trial. A principle's own
parameters (``growth.random.units``) exist only in the trials that chose it, so they are assessed
per principle, over those trials alone (copied into an in-memory study). The evaluator is
:class:`optuna.importance.FanovaImportanceEvaluator` with a fixed seed: its interface and its
handling of parameters are the same in Optuna 4 and 5, it is deterministic, and it works on the
few dozen trials a coarse level has (PED-ANOVA wants at least 5 trials in its top quantile, and
changed how it treats conditional parameters in Optuna 5).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from principlelab.core.recipe import SLOTS
from principlelab.errors import StorageError
from principlelab.studies.optuna_setup import logical_trials

MIN_TRIALS = 5
"""Fewest complete trials for an importance estimate (slots overall, or one principle's parameters)."""
MAX_PRINCIPLES = 12


@dataclass
class Importances:
    """Importances of one set of parameters over ``n_trials`` complete trials (``note`` if not computed)."""

    title: str
    n_trials: int
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class StudyImportance:
    study_name: str
    n_complete: int
    n_total: int  # trials, a retried one once (as plab campaign status counts them)
    slots: Importances
    fixed: dict[str, str]  # slots with one choice in every trial
    principles: list[Importances]
    note: str = ""


def evaluator() -> optuna.importance.BaseImportanceEvaluator:
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def _importances(trials: list[FrozenTrial], params: list[str], direction: optuna.study.StudyDirection,
                 title: str) -> Importances:
    result = Importances(title, len(trials))
    if len(trials) < MIN_TRIALS:
        result.note = f"{len(trials)} complete trial(s); at least {MIN_TRIALS} are needed"
        return result
    if not params:
        result.note = "no searched parameters"
        return result
    if len({t.value for t in trials}) < 2:
        result.note = f"all {len(trials)} trials have the same objective value ({trials[0].value:.4g})"
        return result
    study = optuna.create_study(direction=direction, storage=optuna.storages.InMemoryStorage())
    study.add_trials(trials)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator(), params=params)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # degenerate inputs the evaluator refuses
        result.note = f"importance could not be computed: {' '.join(str(exc).split())[:200]}"
        return result
    values = {name: float(v) for name, v in values.items()}
    if not values or not all(math.isfinite(v) for v in values.values()):
        result.note = "importance is undefined for these trials"
        return result
    result.values = dict(sorted(values.items(), key=lambda kv: -kv[1]))
    return result


def study_importance(storage: optuna.storages.BaseStorage, study_name: str) -> StudyImportance:
    """Slot importances over every complete trial; parameter importances per chosen principle."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"the Optuna study {study_name!r} is missing from the database") from None
    all_trials = study.get_trials(deepcopy=False)
    n_trials = logical_trials(all_trials)  # a retried trial once
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    slot_params = [s for s in SLOTS if complete and all(s in t.params for t in complete)]
    fixed = {s: str(complete[0].params[s]) for s in slot_params
             if len({t.params[s] for t in complete}) == 1}
    searched = [s for s in slot_params if s not in fixed]
    slots = _importances(complete, searched, study.direction, "slots")
    principles: list[Importances] = []
    counts = Counter((slot, str(t.params[slot])) for t in complete for slot in searched + list(fixed))
    for (slot, name), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        chose = [t for t in complete if str(t.params.get(slot)) == name]
        prefix = f"{slot}.{name}."
        names = set.intersection(*({p for p in t.params if p.startswith(prefix)} for t in chose))
        if not names:
            continue
        if n < MIN_TRIALS or len(principles) >= MAX_PRINCIPLES:
            principles.append(Importances(f"{slot}={name}", n, note=(
                f"{n} complete trial(s) chose it; at least {MIN_TRIALS} are needed" if n < MIN_TRIALS
                else f"only the {MAX_PRINCIPLES} most-tried principles are shown")))
            continue
        result = _importances(chose, sorted(names), study.direction, f"{slot}={name}")
        result.values = {k.removeprefix(prefix): v for k, v in result.values.items()}
        principles.append(result)
    note = ""
    if len(complete) < MIN_TRIALS:
        note = (f"only {len(complete)} of {n_trials} trials completed (pruned and failed trials have no "
                f"final objective); importance needs at least {MIN_TRIALS}")
    return StudyImportance(study_name, len(complete), n_trials, slots, fixed, principles, note)


__all__ = ["MIN_TRIALS", "Importances", "StudyImportance", "evaluator", "study_importance"]
