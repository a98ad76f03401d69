"""TPE that ranks the history once per trial, not once per parameter: :class:`SplitOnceTPESampler`.

Optuna's independent TPE samples each parameter on its own, and for each it reads the study's trials,
filters them by state, counts the finished ones, and splits them into the good ``gamma`` fraction and
the rest (:func:`optuna.samplers._tpe.sampler._split_trials`: a pass over every trial reading its
constraints and, for pruned trials, its last intermediate value, then sorts). A campaign trial samples
about twenty-four parameters, so all of that is repeated for each over the same trials, and it grows
with the study.

The split depends only on the trials, so :class:`SplitOnceTPESampler` computes it (and the filtering
and counting before it) once for each distinct list of trials and reuses it for the next parameters
(``_split_for``): without constant liar, once per snapshot of the study's trials (Optuna takes a new
snapshot at every ask and tell); with constant liar, once for each distinct list of trial objects
read from the storage (storages replace a trial's object when it changes; the cache holds the
objects, so an address is never reused while cached). The samples are the same as
:class:`~optuna.samplers.TPESampler`'s with the same seed, to rounding in a float parameter's last digits
(see :mod:`~principlelab.studies.tpe_density`; ``tests/test_tpe.py`` checks it, with the
history changing between two parameters of one trial).

Each parameter's density is built from the internal values of every trial in the good and the bad
part that has the parameter, which Optuna gathers with a pass over all those trials for each
parameter of each trial (``TPESampler._get_internal_repr``). A finished trial's parameters never
change, so this sampler keeps each parameter's internal values by trial number
(:class:`_ParameterColumns`) and gathers them with one array lookup; running trials (constant liar)
are read each time, as Optuna does. The values and their order are Optuna's.

This path needs Optuna 5 (``GATHERS_BY_TRIAL``: Optuna passes the study to ``_get_internal_repr``)
and independent TPE, and follows Optuna 5's ``_sample``. Elsewhere (Optuna 4, multivariate TPE)
Optuna's own methods run, with only the split cached during this sampler's calls (a wrapper of
Optuna's private ``_split_trials``; where the installed Optuna has none, the sampler is plain TPE).
Under Optuna 5 each parameter's two densities, candidates and acquisition are computed by
:mod:`principlelab.studies.tpe_density` (Optuna's draws and densities to rounding) instead
of Optuna's estimator objects. ``benchmarks/bench_sampler.py`` measures it (docs/performance.md).
"""

from __future__ import annotations

import importlib
import inspect
import operator
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

from principlelab.studies import tpe_density
from principlelab.studies.tpe_plan import Entries, ExpectedParameters, same_distribution

__all__ = ["SplitOnceTPESampler"]

_tpe_module = importlib.import_module("optuna.samplers._tpe.sampler")
_ParzenEstimator = importlib.import_module("optuna.samplers._tpe.parzen_estimator")._ParzenEstimator
_NUMBER = operator.attrgetter("number")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_LIAR_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # as Optuna's _sample
GATHERS_BY_TRIAL = "study" in inspect.signature(TPESampler._get_internal_repr).parameters
"""Whether this Optuna passes the study to ``_get_internal_repr`` (5.0 on), where values are kept by trial."""
_SplitCache = dict[tuple[Any, ...], Any]
_NOT_EXPECTED = object()
_active_cache: ContextVar[_SplitCache | None] = ContextVar("principlelab_tpe_split_cache", default=None)


def _install() -> bool:
    """Wrap Optuna's ``_split_trials`` (once per process) so calls made by this sampler are cached."""
    original = getattr(_tpe_module, "_split_trials", None)
    if original is None or not callable(original):
        return False
    if getattr(original, "_principlelab_cached", False):
        return True

    def split_trials(study: Any, trials: list[FrozenTrial], n_below: int, *args: Any) -> Any:
        cache = _active_cache.get()
        if cache is None:  # any other TPESampler: Optuna's own behaviour
            return original(study, trials, n_below, *args)
        key = (n_below, args, tuple(map(id, trials)))  # a changed trial is a new object (see the module docstring)
        if key not in cache:
            below, above = original(study, trials, n_below, *args)
            cache.clear()  # one entry: a trial's parameters all split the same trials
            cache[key] = (below, above)
        below, above = cache[key]
        return list(below), list(above)

    split_trials._principlelab_cached = True  # type: ignore[attr-defined]
    setattr(_tpe_module, "_split_trials", split_trials)  # noqa: B010 (a private name mypy does not know)
    return True


_INSTALLED = _install()


class _ParameterColumns:
    """Internal values of one study's finished trials, for each parameter (and its distribution), by
    trial number: NaN where a trial does not have the parameter (internal values are never NaN)."""

    def __init__(self, storage: Any, study_id: int) -> None:
        self.storage, self.study_id = storage, study_id  # the storage itself: an id() could be reused
        # by name, one entry per distribution the name had: (distribution, values, known)
        self.columns: dict[str, list[tuple[BaseDistribution, np.ndarray, np.ndarray]]] = {}

    def of(self, study: Any) -> bool:
        """Whether these are ``study``'s columns."""
        return study._storage is self.storage and study._study_id == self.study_id

    def gather(self, trials: list[FrozenTrial], name: str, distribution: BaseDistribution,
               numbers: np.ndarray | None = None) -> np.ndarray:
        """``distribution.to_internal_repr`` of parameter ``name`` of each trial in ``trials`` that has it,
        in their order: ``[m]``, float64 (int64 for a categorical parameter with values), as Optuna's.
        ``numbers``: the trials' numbers, if known (``[len(trials)]`` int64)."""
        if numbers is None:
            numbers = _numbers(trials)
        values, known = self._column(name, distribution, int(numbers.max()) + 1 if len(trials) else 0)
        gathered = values[numbers]
        for i in np.flatnonzero(~known[numbers]):  # new since the last call, or still running
            trial = trials[i]
            value = distribution.to_internal_repr(trial.params[name]) if name in trial.params else np.nan
            gathered[i] = value
            if trial.state.is_finished():
                values[trial.number], known[trial.number] = value, True
        gathered = gathered[~np.isnan(gathered)]
        if isinstance(distribution, CategoricalDistribution) and len(gathered):
            return gathered.astype(np.int64)
        return gathered

    def _column(self, name: str, distribution: BaseDistribution, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``[capacity]`` float64 values and bool "finished trial read", for trial numbers below ``size`` at least.

        Looked up by name, then by distribution: Optuna passes a new, equal distribution object for
        each suggestion, and comparing the fields is cheaper than hashing it (``__dict__`` equality of
        two distributions of one class is Optuna's equality; Optuna's ``==`` decides otherwise, as for
        a NaN choice)."""
        entries = self.columns.setdefault(name, [])
        found = next((i for i, (known, *_) in enumerate(entries) if same_distribution(known, distribution)), None)
        if found is not None and len(entries[found][1]) >= size:
            return entries[found][1], entries[found][2]
        capacity = max(64, 2 * size)
        values, known = np.full(capacity, np.nan), np.zeros(capacity, dtype=bool)
        if found is not None:
            _, old_values, old_known = entries[found]
            values[:len(old_values)], known[:len(old_known)] = old_values, old_known
            entries[found] = distribution, values, known
        else:
            entries.append((distribution, values, known))
        return values, known


@dataclass
class _Split:
    """The good ``below`` and the bad ``above`` part of a history, with their trial numbers (int64)."""

    below: list[FrozenTrial]
    above: list[FrozenTrial]
    below_numbers: np.ndarray
    above_numbers: np.ndarray

    def numbers_of(self, trials: list[FrozenTrial]) -> np.ndarray | None:
        """``[len(trials)]`` trial numbers of ``below`` or ``above``; None for any other list."""
        return self.below_numbers if trials is self.below else self.above_numbers if trials is self.above else None


@dataclass
class _History:
    """The study's trials as one read returned them, while one trial samples, and what TPE derives from
    them. ``key`` names every trial object but the sampled trial's (whose object changes with each
    parameter it gets, and which TPE leaves out); ``snapshot`` keeps them alive, so that no identity is
    reused while cached."""

    number: int
    key: tuple[int, ...]
    snapshot: list[FrozenTrial]
    finished: int  # complete and pruned trials
    split: _Split | None = None


class SplitOnceTPESampler(TPESampler):
    """:class:`optuna.samplers.TPESampler`, same arguments and samples, with the good/bad split cached
    and each parameter's values gathered from arrays kept by trial number."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._split_cache: _SplitCache = {}
        self._columns: _ParameterColumns | None = None
        self._history: _History | None = None
        self._expected: ExpectedParameters | None = None

    def _by_trial(self, study: Any) -> bool:
        """Whether this sampler's own independent path runs (Optuna 5, independent TPE)."""
        return GATHERS_BY_TRIAL and not self._is_multivariate(study)

    def _read(self, study: Any, trial: FrozenTrial, *, use_cache: bool) -> _History:
        """The study's trials, read as Optuna's TPE reads them for each parameter
        (``study._get_trials(deepcopy=False, ..., use_cache=use_cache)``: Optuna's snapshot, which it
        drops at every ask and tell, or, with Hyperband, whose bracket study has no snapshot, or with
        constant liar, the storage), and the :class:`_History` of those trial objects: reused while
        they are the same objects, instead of filtered, counted and split again for each parameter."""
        snapshot = study._get_trials(deepcopy=False, states=None, use_cache=use_cache)
        last = self._history
        if last is not None and last.snapshot is snapshot and last.number == trial.number:
            return last
        key = _identity_key(snapshot, trial.number)
        if last is None or last.number != trial.number or last.key != key:
            last = self._history = _History(trial.number, key, snapshot, sum(t.state in _FINISHED for t in snapshot))
        return last

    def _split_for(self, study: Any, trial: FrozenTrial) -> _Split:
        """The good/bad split that Optuna's ``_sample`` computes for each parameter, once per history:
        the complete and pruned trials or, with constant liar, the running ones too, less ``trial``."""
        history = self._read(study, trial, use_cache=not self._constant_liar)
        if history.split is None:
            if self._constant_liar:
                trials = [t for t in history.snapshot if t.state in _LIAR_STATES and t.number != trial.number]
            else:
                trials = [t for t in history.snapshot if t.state in _FINISHED]
            if self._gamma is None:
                self._gamma = (_tpe_module.default_gamma if len(study.directions) <= 1
                               else _tpe_module.default_gamma_multiobjective)
            n = sum(t.state != TrialState.RUNNING for t in trials)  # running trials are not ranked
            below, above = _tpe_module._split_trials(study, trials, self._gamma(n))
            history.split = _Split(below, above, _numbers(below), _numbers(above))
        return history.split

    def _sample(self, study: Any, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Optuna's ``_sample`` (5.x), with the split from :meth:`_split_for`, for one parameter of
        independent TPE; Optuna's own otherwise."""
        if len(search_space) != 1 or not self._by_trial(study):
            return super()._sample(study, trial, search_space)  # type: ignore[no-any-return]
        split = self._split_for(study, trial)
        if self._lean(study):
            ((name, distribution),) = search_space.items()
            parameters = self._parzen_estimator_parameters
            value = tpe_density.sample_internal(*self._observed(study, split, name, distribution), self._rng.rng,
                                                self._n_ei_candidates, parameters.weights, parameters.prior_weight)
            return {name: distribution.to_external_repr(value)}
        mpe_below = self._build_parzen_estimator(study, search_space, split.below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, split.above, handle_below=False)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acquisition = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        sampled = TPESampler._compare(samples_below, acquisition)
        return {name: dist.to_external_repr(sampled[name]) for name, dist in search_space.items()}

    def _lean(self, study: Any) -> bool:
        """Whether :mod:`~principlelab.studies.tpe_density` computes the densities (Optuna's own estimator
        class and arguments it covers, one objective); Optuna's estimators otherwise."""
        return (self._parzen_estimator_cls is _ParzenEstimator and not study._is_multi_objective()
                and tpe_density.supported(self._parzen_estimator_parameters))

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           *study_if_given: Any) -> dict[str, np.ndarray]:
        """Optuna's, from :class:`_ParameterColumns` for one parameter of independent TPE (its only use
        here). Optuna before 5.0 passes no study (and reads a trial's values with its own distribution,
        equal for the compatible distributions a study allows): there, Optuna's own method runs."""
        if not GATHERS_BY_TRIAL or len(search_space) != 1 or len(study_if_given) != 1:
            return super()._get_internal_repr(trials, search_space, *study_if_given)  # type: ignore[call-arg]
        (study,) = study_if_given
        if self._is_multivariate(study):
            return super()._get_internal_repr(trials, search_space, study)  # type: ignore[call-arg]
        if self._columns is None or not self._columns.of(study):
            self._columns = _ParameterColumns(study._storage, study._study_id)
        ((name, distribution),) = search_space.items()
        split = self._history.split if self._history is not None else None
        numbers = split.numbers_of(trials) if split is not None else None
        return {name: self._columns.gather(trials, name, distribution, numbers)}

    def _cached(self, call: Callable[[], Any]) -> Any:
        if not _INSTALLED:
            return call()
        token = _active_cache.set(self._split_cache)
        try:
            return call()
        finally:
            _active_cache.reset(token)

    def expect(self, trial: Any, parameters: Sequence[tuple[str, BaseDistribution]]) -> None:
        """Announce that ``trial`` (an Optuna trial) will suggest ``parameters`` next, in this order, so
        that they are sampled together (:mod:`~principlelab.studies.tpe_plan`: the same values as one at a
        time). Anything else it asks for first simply ends the announcement."""
        self._settle_expected()
        entries = [(name, distribution) for name, distribution in parameters if not distribution.single()]
        if entries:
            self._expected = ExpectedParameters(trial.number, entries, self._n_ei_candidates)

    def _settle_expected(self) -> None:
        expected, self._expected = self._expected, None
        if expected is not None:
            expected.settle(self._rng.rng)

    def _take_expected(self, study: Any, trial: FrozenTrial, name: str, distribution: BaseDistribution) -> Any:
        """The expected parameter ``name``'s value (external), or ``_NOT_EXPECTED`` when it is not the one
        expected next (a value may be None: a categorical choice)."""
        expected = self._expected
        if expected is None or not expected.is_next(trial.number, name, distribution) or not self._lean(study):
            self._settle_expected()
            return _NOT_EXPECTED
        split = self._split_for(study, trial)
        value = expected.take(self._rng.rng, split,
                              lambda entries, draws: self._sample_many(study, split, entries, draws))
        if expected.done:
            self._expected = None
        return distribution.to_external_repr(value)

    def _sample_many(self, study: Any, split: _Split, entries: Entries, draws: np.ndarray) -> list[float]:
        """Internal values of ``entries``, each sampled as :meth:`_sample` samples it alone from ``split``
        with its uniform numbers ``draws[i]``."""
        observed = [self._observed(study, split, name, distribution) for name, distribution in entries]
        parameters = self._parzen_estimator_parameters
        return tpe_density.sample_many(observed, draws, parameters.weights, parameters.prior_weight)

    def _observed(self, study: Any, split: _Split, name: str, distribution: BaseDistribution) -> tpe_density.Observed:
        """Parameter ``name``'s internal values in the good and the bad part of ``split``, and its distribution."""
        search_space = {name: distribution}
        return (self._get_internal_repr(split.below, search_space, study)[name],
                self._get_internal_repr(split.above, search_space, study)[name], distribution)

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        self._settle_expected()
        self._split_cache.clear()
        self._history = None  # release the last trial's objects
        super().before_trial(study, trial)

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        if self._expected is not None and self._expected.number == trial.number:
            self._settle_expected()  # it ended before its last expected parameter
        super().after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._expected = None  # a new generator: nothing to put back
        super().reseed_rng()

    def sample_independent(self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        if not self._by_trial(study):  # Optuna's, with the split cached
            self._settle_expected()
            return self._cached(lambda: super(SplitOnceTPESampler, self).sample_independent(
                study, trial, param_name, param_distribution))
        if self._read(study, trial, use_cache=True).finished < self._n_startup_trials:  # as Optuna's
            self._settle_expected()
            return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)
        value = self._take_expected(study, trial, param_name, param_distribution)
        if value is not _NOT_EXPECTED:
            return value
        return self._sample(study, trial, {param_name: param_distribution})[param_name]

    def sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._cached(lambda: super(SplitOnceTPESampler, self).sample_relative(study, trial, search_space))


def _identity_key(snapshot: list[FrozenTrial], number: int) -> tuple[int, ...]:
    """The identities of the trial objects in ``snapshot``, 0 in place of trial ``number``'s."""
    ids = list(map(id, snapshot))
    if number < len(snapshot) and snapshot[number].number == number:  # storages list trials by number
        ids[number] = 0
    else:
        ids = [0 if t.number == number else i for t, i in zip(snapshot, ids, strict=True)]
    return tuple(ids)


def _numbers(trials: list[FrozenTrial]) -> np.ndarray:
    """``[len(trials)]`` int64: each trial's number."""
    return np.fromiter(map(_NUMBER, trials), dtype=np.int64, count=len(trials))
