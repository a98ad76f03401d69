"""Optuna's Hyperband pruner, with each bracket's study built once.

Optuna hands the sampler a bracket study of the trial's bracket for every parameter a trial samples
(``optuna.pruners._filter_study``, called from ``Trial._suggest``), and once more when the trial starts
and ends. Each is built anew: a new class, a new :class:`optuna.study.Study` (which looks its study
up in the storage), about a tenth of a campaign trial's sampling. :class:`BracketReusingHyperbandPruner`
builds each bracket's study once per study and hands the same object out again, with its snapshot of
the trials dropped, so each call reads the storage afresh, as a new one would. Pruning decisions and
samples are Optuna's (``tests/test_tpe.py``, ``tests/test_hyperband.py``).
"""

from __future__ import annotations

from typing import Any

import optuna


class BracketReusingHyperbandPruner(optuna.pruners.HyperbandPruner):
    """:class:`optuna.pruners.HyperbandPruner`, same arguments and decisions; bracket studies are reused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._study: optuna.study.Study | None = None  # whose bracket studies are kept
        self._brackets: dict[int, optuna.study.Study] = {}

    def _create_bracket_study(self, study: optuna.study.Study, bracket_id: int) -> optuna.study.Study:
        if study is not self._study:  # another study (or none yet): forget the last one's brackets
            self._study, self._brackets = study, {}
        bracket = self._brackets.get(bracket_id)
        if bracket is None:
            bracket = self._brackets[bracket_id] = super()._create_bracket_study(study, bracket_id)
        else:  # as a new one has: no snapshot of the trials (Study._get_trials(use_cache=True) reads anew)
            bracket._thread_local.cached_all_trials = None
        return bracket
