"""Parameters of independent TPE in one pass: Optuna's Parzen estimators, draws and acquisition without
Optuna's per-parameter objects, with the log-densities in SciPy's C, for one parameter
(:func:`sample_internal`) or several at once (:func:`sample_many`: the parameters a trial announced,
see :mod:`~principlelab.studies.tpe_plan`; each gets the value it would get alone).

For each parameter of each trial Optuna 5 builds two ``_ParzenEstimator`` objects (each a
``_MixtureOfProductDistribution`` of batched distributions), draws the candidates from the good one and
scores them with both (``TPESampler._sample``); the scoring computes ``log Phi`` one element at a time in
Python (``np.frompyfunc``). :func:`sample_internal` computes the same mixtures (weights, kernel centres and
widths, the prior kernel, the magic clip, the step bins, the log scale) with the same float64
operations, and scores the candidates with ``scipy.special.log_ndtr`` and ``ndtr``. The candidates are
drawn as Optuna's truncated-normal draw (``_truncnorm.rvs``) draws them: the same uniform numbers from the
same generator in the same order, each turned into a value by the truncated normal's inverse CDF. Optuna
inverts it with a Newton iteration in Python (``_ndtri_exp``, ``log_ndtr`` one element at a time), this
module with SciPy's exact ``ndtri_exp``: the values agree to about 1e-12 relative, and the generator
advances as Optuna's. So the scores and the draws are Optuna's to rounding, and the sample is Optuna's but
for a float parameter's last digits (``tests/test_tpe_density.py`` compares densities, draws and samples
with Optuna's objects, and whole studies with ``TPESampler``). Per campaign trial that halves TPE's time
after 60 trials (docs/performance.md).

Only what a campaign's TPE uses takes this path: one parameter at a time (independent TPE, Optuna 5),
one objective, Optuna's estimator class, magic clip on and ``consider_endpoints`` off; :func:`supported`
checks the arguments, and anything else runs Optuna's own code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe.sampler import default_weights
from scipy.special import log_ndtr, ndtr, ndtri_exp

__all__ = ["sample_internal", "supported"]

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def supported(parameters: object) -> bool:
    """Whether Optuna's ``_ParzenEstimatorParameters`` are those this module computes (Optuna 5's
    estimator, whose ``multivariate`` field is unused)."""
    return (getattr(parameters, "consider_magic_clip", None) is True
            and getattr(parameters, "consider_endpoints", None) is False)


def sample_internal(below: np.ndarray, above: np.ndarray, distribution: BaseDistribution, rng: np.random.RandomState,
                    n_candidates: int, weights: Callable[[int], np.ndarray], prior_weight: float) -> float:
    """TPE's sample of one parameter, in Optuna's internal representation (a category's index).

    ``below``, ``above``: ``[n_below]``, ``[n_above]`` internal values of the good and the bad trials that
    have the parameter (Optuna's ``_get_internal_repr``); ``weights``: Optuna's weights function;
    ``rng``: the sampler's, advanced exactly as Optuna's ``_MixtureOfProductDistribution.sample``.
    """
    draws = rng.random_sample((1, 2, n_candidates))  # what Optuna's rng.choice, then its uniform draw, take
    return sample_many([(below, above, distribution)], draws, weights, prior_weight)[0]


Observed = tuple[np.ndarray, np.ndarray, BaseDistribution]
"""One parameter's ``below`` and ``above`` internal values and its distribution (see :func:`sample_internal`)."""


def sample_many(entries: Sequence[Observed], draws: np.ndarray, weights: Callable[[int], np.ndarray],
                prior_weight: float) -> list[float]:
    """TPE's samples of several parameters at once, each as :func:`sample_internal` samples it alone.

    ``draws``: ``[len(entries), 2, n_candidates]`` uniform numbers in [0, 1): for entry ``i``, what
    :func:`sample_internal` would draw from the generator when sampling it (Optuna draws them as
    ``rng.choice(n_kernels, p=weights, size=n)``, then ``n`` uniform numbers for the candidates; both take
    ``n`` doubles from the generator whatever the parameter). Parameters of the same kind (categorical or
    numerical) with the same numbers of good and bad observations are computed together, one array
    operation for all of them.
    """
    samples = [0.0] * len(entries)
    groups: dict[tuple[str, int, int], list[int]] = {}
    for i, (below, above, distribution) in enumerate(entries):
        groups.setdefault((_kind(distribution), len(below), len(above)), []).append(i)
    n_candidates = draws.shape[-1]
    for (kind, n_below, n_above), same in groups.items():
        per_group = max(1, _GROUP_ELEMENTS // (n_candidates * (max(n_below, n_above) + 1)))
        for start in range(0, len(same), per_group):
            _sample_group(entries, draws, same[start:start + per_group], kind, (n_below, n_above), weights,
                          prior_weight, samples)
    return samples


_GROUP_ELEMENTS = 16384
"""Most candidate-by-kernel values one group computes at once (128 KiB an array): past that, larger arrays
cost more per parameter than one parameter at a time (they leave the CPU's cache), so long histories
are sampled in smaller groups, down to one parameter."""


def _sample_group(entries: Sequence[Observed], draws: np.ndarray, members: list[int], kind: str,
                  sizes: tuple[int, int], weights: Callable[[int], np.ndarray], prior_weight: float,
                  samples: list[float]) -> None:
    """Sample ``entries[members]`` (one kind, ``sizes`` good and bad observations each) into ``samples``."""
    n_below, n_above = sizes
    weights_below = _mixture_weights(n_below, weights, prior_weight)
    weights_above = _mixture_weights(n_above, weights, prior_weight)
    cdf = np.cumsum(weights_below)
    cdf /= cdf[-1]
    active = cdf.searchsorted(draws[members, 0], side="right")  # [g, n]: numpy's choice, row by row
    uniform = draws[members, 1]
    below = np.array([entries[i][0] for i in members]).reshape(len(members), n_below)
    above = np.array([entries[i][1] for i in members]).reshape(len(members), n_above)
    distributions = [entries[i][2] for i in members]
    if kind == "categorical":
        n_choices = [len(d.choices) for d in distributions]  # type: ignore[attr-defined]
        table_below = _categorical_tables(below, n_choices, prior_weight)
        table_above = _categorical_tables(above, n_choices, prior_weight)
        candidates = _draw_categories(table_below, active, uniform, n_choices)
        log_pdf_below = _table_log_pdf(table_below, candidates)
        log_pdf_above = _table_log_pdf(table_above, candidates)
    else:
        kernels_below = _Kernels(below, distributions)  # type: ignore[arg-type]
        candidates = kernels_below.draw(active, uniform)
        log_pdf_below = kernels_below.log_pdf(candidates)
        log_pdf_above = _Kernels(above, distributions).log_pdf(candidates)  # type: ignore[arg-type]
    score = _mixture_log_pdf(log_pdf_below, weights_below) - _mixture_log_pdf(log_pdf_above, weights_above)
    best = candidates[np.arange(len(members)), np.argmax(score, axis=1)]
    for i, value in zip(members, best.tolist(), strict=True):
        samples[i] = float(value)


def _kind(distribution: BaseDistribution) -> str:
    if isinstance(distribution, CategoricalDistribution):
        return "categorical"
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    return "numerical"


def _mixture_weights(n_observations: int, weights: Callable[[int], np.ndarray], prior_weight: float) -> np.ndarray:
    """``[n_observations + 1]`` kernel weights, the prior's last, summing to 1 (Optuna's ``_ParzenEstimator``);
    read-only, and kept for Optuna's own ``default_weights`` (a function of ``n`` alone)."""
    if weights is default_weights:
        return _default_mixture_weights(n_observations, prior_weight)
    return _normalised_weights(n_observations, weights, prior_weight)


def _normalised_weights(n_observations: int, weights: Callable[[int], np.ndarray], prior_weight: float) -> np.ndarray:
    if n_observations == 0:
        kernel_weights = np.array([1.0])
    else:
        kernel_weights = np.append(np.array(weights(n_observations))[:n_observations], [prior_weight])
        kernel_weights = kernel_weights / kernel_weights.sum()
    kernel_weights.flags.writeable = False
    return kernel_weights


@functools.lru_cache(maxsize=4096)
def _default_mixture_weights(n_observations: int, prior_weight: float) -> np.ndarray:
    return _normalised_weights(n_observations, default_weights, prior_weight)


def _categorical_tables(observed: np.ndarray, n_choices: list[int], prior_weight: float) -> np.ndarray:
    """``[g, n_kernels, max(n_choices)]`` for each of ``g`` parameters (``observed``: ``[g, n]`` category
    indices), each kernel's probability of each choice: one kernel per observation, plus the prior
    (uniform); a single uniform kernel when nothing was observed. Choices past a parameter's own count
    have probability 0."""
    g, n = observed.shape
    counts = np.array(n_choices)
    real = np.arange(max(n_choices)) < counts[:, np.newaxis]  # [g, c]
    if n == 0:
        return np.where(real, 1.0 / counts[:, np.newaxis], 0.0)[:, np.newaxis, :]
    n_kernels = n + 1
    table = np.where(real[:, np.newaxis, :], prior_weight / n_kernels, 0.0) * np.ones((1, n_kernels, 1))
    table[np.arange(g)[:, np.newaxis], np.arange(n), observed.astype(int)] += 1
    row_sums = table.sum(axis=2, keepdims=True)
    return table / np.where(row_sums == 0, 1, row_sums)


def _draw_categories(table: np.ndarray, active: np.ndarray, uniform: np.ndarray, n_choices: list[int]) -> np.ndarray:
    """``[g, n]`` categories drawn from kernels ``active`` ``[g, n]`` of ``table`` at ``uniform`` ``[g, n]``
    (Optuna's: the first choice whose cumulative probability reaches the number, the last one at 1)."""
    cumulative = np.cumsum(table[np.arange(len(table))[:, np.newaxis], active], axis=-1)  # [g, n, c]
    last_or_past = np.arange(cumulative.shape[-1]) >= np.array(n_choices)[:, np.newaxis, np.newaxis] - 1
    cumulative = np.where(last_or_past, 1.0, cumulative)
    return np.sum(cumulative < uniform[:, :, np.newaxis], axis=-1)


def _table_log_pdf(table: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """``[g, n, n_kernels]`` each kernel's log-probability of ``categories`` ``[g, n]``, C-contiguous: the
    sum over kernels (:func:`_log_sum_exp`) then adds in Optuna's order, which decides between categories
    of equal probability (exact ties are common: equal counts, equal weights)."""
    return np.log(table[np.arange(len(table))[:, np.newaxis], :, categories])  # [g, n] then the kernels


class _Kernels:
    """The truncated normal kernels of ``g`` numerical parameters with ``n`` observations each, on their
    search scales (log for ``log=True``), over ``[low - step/2, high + step/2]`` for a stepped parameter:
    ``mus``, ``sigmas`` ``[g, n + 1]``, the prior's last."""

    def __init__(self, observed: np.ndarray, distributions: Sequence[FloatDistribution | IntDistribution]) -> None:
        g, n = observed.shape
        self.rows = np.arange(g)[:, np.newaxis]
        self.ranges = np.array([(d.low, d.high) for d in distributions], dtype=float)  # [g, 2]: external scale
        self.stepped = np.array([d.step is not None for d in distributions])
        self.steps = np.array([float(d.step or 0.0) for d in distributions])[:, np.newaxis]  # [g, 1]
        self.logs = np.array([d.log for d in distributions])
        bounds = [(d.low - d.step / 2, d.high + d.step / 2) if d.step is not None else (d.low, d.high)
                  for d in distributions]
        # as Optuna: the truncation bounds' logs with math, the kernels' with numpy (the two may round apart)
        truncation = [(math.log(low), math.log(high)) if d.log else (low, high)
                      for d, (low, high) in zip(distributions, bounds, strict=True)]
        kernel_bounds = [(np.log(low), np.log(high)) if d.log else (low, high)
                         for d, (low, high) in zip(distributions, bounds, strict=True)]
        self.low, self.high = (np.array(column, dtype=float)[:, np.newaxis] for column in zip(*truncation, strict=True))
        low, high = (np.array(column, dtype=float)[:, np.newaxis] for column in zip(*kernel_bounds, strict=True))
        observed = self._to_search_scale(observed)
        order = np.argsort(observed, axis=1)
        with_ends = np.concatenate([low, observed[self.rows, order], high], axis=1)
        sorted_sigmas = np.maximum(with_ends[:, 1:-1] - with_ends[:, 0:-2], with_ends[:, 2:] - with_ends[:, 1:-1])
        if n >= 2:  # consider_endpoints=False: the outer kernels look inwards only
            sorted_sigmas[:, 0] = with_ends[:, 2] - with_ends[:, 1]
            sorted_sigmas[:, -1] = with_ends[:, -2] - with_ends[:, -3]
        sigmas = sorted_sigmas[self.rows, np.argsort(order, axis=1)]
        sigmas = np.clip(sigmas, (high - low) / min(100.0, 1.0 + n + 1), high - low)  # the magic clip
        self.mus = np.concatenate([observed, 0.5 * (low + high)], axis=1)
        self.sigmas = np.concatenate([sigmas, high - low], axis=1)
        self.a, self.b = (self.low - self.mus) / self.sigmas, (self.high - self.mus) / self.sigmas  # standardised
        self.log_mass = _log_gauss_mass(self.a, self.b)

    def _to_search_scale(self, values: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``values`` ``[r, m]`` of parameters ``rows`` on their search scales: the log for ``log=True`` rows."""
        logs = self.logs[rows]
        if not logs.any():
            return values
        values = values.astype(float)
        values[logs] = np.log(values[logs])
        return values

    def draw(self, active: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """``[g, n]`` draws (external scale, on the step grid) from kernels ``active`` ``[g, n]`` at the
        uniform numbers ``uniform`` ``[g, n]``: Optuna's truncated-normal draw (``_truncnorm.rvs``) with
        Optuna's arguments, to rounding (:func:`_draw_standard`)."""
        a, b, log_mass = self.a[self.rows, active], self.b[self.rows, active], self.log_mass[self.rows, active]
        values = _draw_standard(a, b, log_mass, uniform) * self.sigmas[self.rows, active] + self.mus[self.rows, active]
        if self.logs.any():
            values[self.logs] = np.exp(values[self.logs])
        if self.stepped.any():
            stepped = self.stepped
            low, high, steps = self.ranges[stepped, :1], self.ranges[stepped, 1:], self.steps[stepped]
            values[stepped] = np.clip(low + np.round((values[stepped] - low) / steps) * steps, low, high)
        return values

    def log_pdf(self, values: np.ndarray) -> np.ndarray:
        """``[g, n, n_kernels]`` each kernel's log-density (log-mass of the step bin) at ``values`` ``[g, n]``."""
        if self.stepped.all():
            return self._stepped_log_pdf(values, slice(None))
        if not self.stepped.any():
            return self._continuous_log_pdf(values, slice(None))
        out = np.empty((*values.shape, self.mus.shape[1]))
        out[self.stepped] = self._stepped_log_pdf(values[self.stepped], self.stepped)
        out[~self.stepped] = self._continuous_log_pdf(values[~self.stepped], ~self.stepped)
        return out

    def _stepped_log_pdf(self, values: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """The log-mass of each value's step bin, for parameters ``rows`` (``values``: theirs)."""
        mus, sigmas, steps = self.mus[rows][:, np.newaxis, :], self.sigmas[rows][:, np.newaxis, :], self.steps[rows]
        left = (self._to_search_scale(values - steps / 2, rows)[:, :, np.newaxis] - mus) / sigmas
        right = (self._to_search_scale(values + steps / 2, rows)[:, :, np.newaxis] - mus) / sigmas
        return _log_gauss_mass(left, right) - self.log_mass[rows][:, np.newaxis, :]

    def _continuous_log_pdf(self, values: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """The log-density at each value, for parameters ``rows`` (``values``: theirs)."""
        mus, sigmas = self.mus[rows][:, np.newaxis, :], self.sigmas[rows][:, np.newaxis, :]
        x = (self._to_search_scale(values, rows)[:, :, np.newaxis] - mus) / sigmas
        out = -(x ** 2) / 2.0 - _LOG_SQRT_2PI - self.log_mass[rows][:, np.newaxis, :] - np.log(sigmas)
        return np.where((x < self.a[rows][:, np.newaxis, :]) | (x > self.b[rows][:, np.newaxis, :]), -np.inf, out)


def _draw_standard(a: np.ndarray, b: np.ndarray, log_mass: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Draws of standard normals truncated to ``[a, b]`` (``log_mass``: their :func:`_log_gauss_mass`) by
    inverting the CDF at the uniform numbers ``q`` (all of one shape).

    Optuna's ``_truncnorm.rvs`` and ``ppf``, step by step (``q`` is what its ``rng.uniform`` would
    draw): ``Phi(x) = Phi(a) + q * mass`` solved in the left tail (for ``a >= 0`` the mirrored problem in
    ``-b``, with ``1 - q``), in logs. Optuna solves ``log Phi(x) = y`` with a Newton iteration stopped at
    a relative step of 1e-8; ``scipy.special.ndtri_exp`` solves it directly, so the two agree to about
    1e-12 relative rather than to the bit.
    """
    left = a < 0
    with np.errstate(divide="ignore"):  # q == 0: log 0, whose draw is a (below)
        log_q = np.where(left, np.log(q), np.log1p(-q))
    x = ndtri_exp(np.logaddexp(log_ndtr(np.where(left, a, -b)), log_q + log_mass))
    return np.where(q == 0, a, np.where(left, x, -x))


def _log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(Phi(b) - Phi(a))`` elementwise, computed in the left tail (Optuna's ``_log_gauss_mass``)."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape)
    left, right = b <= 0, a > 0
    central = ~(left | right)
    with np.errstate(divide="ignore"):
        if left.any():
            out[left] = _log_diff(log_ndtr(b[left]), log_ndtr(a[left]))
        if right.any():
            out[right] = _log_diff(log_ndtr(-a[right]), log_ndtr(-b[right]))
        if central.any():
            out[central] = np.log1p(-ndtr(a[central]) - ndtr(-b[central]))
    return out


def _log_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """``log(p - q)`` from ``log p``, ``log q`` (p >= q)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return log_p + np.log1p(-np.exp(log_q - log_p))


def _mixture_log_pdf(kernel_log_pdfs: np.ndarray, kernel_weights: np.ndarray) -> np.ndarray:
    """``[..., n]`` the mixture's log-density from each kernel's ``[..., n, n_kernels]`` and the weights
    ``[n_kernels]``."""
    return _log_sum_exp(kernel_log_pdfs + np.log(kernel_weights))


def _log_sum_exp(weighted: np.ndarray) -> np.ndarray:
    """``[..., n]`` log of the sum over kernels of ``exp(weighted)`` ``[..., n, n_kernels]``, -inf where all
    are -inf."""
    top = weighted.max(axis=-1)
    top[np.isneginf(top)] = 0
    with np.errstate(divide="ignore"):
        return np.log(np.exp(weighted - top[..., np.newaxis]).sum(axis=-1)) + top
