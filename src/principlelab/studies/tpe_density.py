"""One parameter of independent TPE in one pass: Optuna's Parzen estimators, draws and acquisition
without Optuna's per-parameter objects, with the log-densities in SciPy's C.

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
from collections.abc import Callable

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
    weights_below = _mixture_weights(len(below), weights, prior_weight)
    weights_above = _mixture_weights(len(above), weights, prior_weight)
    active = rng.choice(len(weights_below), p=weights_below, size=n_candidates)
    if isinstance(distribution, CategoricalDistribution):
        table_below = _categorical_table(below, len(distribution.choices), prior_weight)
        table_above = _categorical_table(above, len(distribution.choices), prior_weight)
        cumulative = np.cumsum(table_below[active], axis=-1)
        cumulative[:, -1] = 1
        candidates = np.sum(cumulative < rng.rand(n_candidates)[:, np.newaxis], axis=-1)
        log_pdf_below, log_pdf_above = np.log(table_below[:, candidates].T), np.log(table_above[:, candidates].T)
    else:
        assert isinstance(distribution, FloatDistribution | IntDistribution)
        kernels_below = _Kernels(below, distribution)
        candidates = kernels_below.draw(active, rng)
        log_pdf_below = kernels_below.log_pdf(candidates)
        log_pdf_above = _Kernels(above, distribution).log_pdf(candidates)
    score = _mixture_log_pdf(log_pdf_below, weights_below) - _mixture_log_pdf(log_pdf_above, weights_above)
    return float(candidates[np.argmax(score)])


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


def _categorical_table(observed: np.ndarray, n_choices: int, prior_weight: float) -> np.ndarray:
    """``[n_kernels, n_choices]`` each kernel's probability of each choice: one kernel per observation,
    plus the prior (uniform); a single uniform kernel when nothing was observed."""
    if len(observed) == 0:
        return np.full((1, n_choices), fill_value=1.0 / n_choices)
    n_kernels = len(observed) + 1
    table = np.full((n_kernels, n_choices), fill_value=prior_weight / n_kernels)
    table[np.arange(len(observed)), observed.astype(int)] += 1
    row_sums = table.sum(axis=1, keepdims=True)
    return table / np.where(row_sums == 0, 1, row_sums)


class _Kernels:
    """The truncated normal kernels of one numerical parameter, on its search scale (log for ``log=True``),
    over ``[low - step/2, high + step/2]`` for a stepped parameter: ``mus``, ``sigmas`` ``[n_kernels]``."""

    def __init__(self, observed: np.ndarray, distribution: FloatDistribution | IntDistribution) -> None:
        self.distribution = distribution
        self.step = float(distribution.step or 0.0)
        low, high = distribution.low, distribution.high
        if distribution.step is not None:
            low, high = low - distribution.step / 2, high + distribution.step / 2
        # as Optuna: the truncation bounds' logs with math, the kernels' with numpy (the two may round apart)
        self.low, self.high = (math.log(low), math.log(high)) if distribution.log else (low, high)
        if distribution.log:
            observed, low, high = np.log(observed), np.log(low), np.log(high)
        order = np.argsort(observed)
        with_ends = np.empty(len(observed) + 2)
        with_ends[0], with_ends[1:-1], with_ends[-1] = low, observed[order], high
        sorted_sigmas = np.maximum(with_ends[1:-1] - with_ends[0:-2], with_ends[2:] - with_ends[1:-1])
        if len(with_ends) >= 4:  # consider_endpoints=False: the outer kernels look inwards only
            sorted_sigmas[0] = with_ends[2] - with_ends[1]
            sorted_sigmas[-1] = with_ends[-2] - with_ends[-3]
        sigmas = sorted_sigmas[np.argsort(order)]
        n_kernels = len(observed) + 1
        sigmas = np.clip(sigmas, (high - low) / min(100.0, 1.0 + n_kernels), high - low)  # the magic clip
        self.mus = np.append(observed, [0.5 * (low + high)])
        self.sigmas = np.append(sigmas, [high - low])
        self.a, self.b = (self.low - self.mus) / self.sigmas, (self.high - self.mus) / self.sigmas  # standardised
        self.log_mass = _log_gauss_mass(self.a, self.b)

    def draw(self, active: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        """``[n]`` draws (external scale, on the step grid) from kernels ``active`` ``[n]``: Optuna's
        truncated-normal draw (``_truncnorm.rvs``) with Optuna's arguments, to rounding (:func:`_draw_standard`)."""
        values = _draw_standard(self.a[active], self.b[active], self.log_mass[active], rng)
        values = values * self.sigmas[active] + self.mus[active]
        if self.distribution.log:
            values = np.exp(values)
        if self.step:
            low, high = self.distribution.low, self.distribution.high
            values = np.clip(low + np.round((values - low) / self.step) * self.step, low, high)
        return values

    def log_pdf(self, values: np.ndarray) -> np.ndarray:
        """``[n, n_kernels]`` each kernel's log-density (log-mass of the step bin) at ``values`` ``[n]``."""
        scale = np.log if self.distribution.log else _identity
        if self.step:
            left = (scale(values - self.step / 2)[:, np.newaxis] - self.mus) / self.sigmas
            right = (scale(values + self.step / 2)[:, np.newaxis] - self.mus) / self.sigmas
            return _log_gauss_mass(left, right) - self.log_mass
        x = (scale(values)[:, np.newaxis] - self.mus) / self.sigmas
        out = -(x ** 2) / 2.0 - _LOG_SQRT_2PI - self.log_mass - np.log(self.sigmas)
        return np.where((x < self.a) | (x > self.b), -np.inf, out)


def _draw_standard(a: np.ndarray, b: np.ndarray, log_mass: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """``[n]`` draws of standard normals truncated to ``[a, b]`` (``[n]`` each; ``log_mass``: their
    :func:`_log_gauss_mass`) by inverting the CDF at uniform numbers drawn from ``rng``.

    Optuna's ``_truncnorm.rvs`` and ``ppf``, step by step: the same one call to ``rng.uniform``, then
    ``Phi(x) = Phi(a) + q * mass`` solved in the left tail (for ``a >= 0`` the mirrored problem in
    ``-b``, with ``1 - q``), in logs. Optuna solves ``log Phi(x) = y`` with a Newton iteration stopped at
    a relative step of 1e-8; ``scipy.special.ndtri_exp`` solves it directly, so the two agree to about
    1e-12 relative rather than to the bit.
    """
    q = rng.uniform(low=0, high=1, size=len(a))
    left = a < 0
    with np.errstate(divide="ignore"):  # q == 0: log 0, whose draw is a (below)
        log_q = np.where(left, np.log(q), np.log1p(-q))
    x = ndtri_exp(np.logaddexp(log_ndtr(np.where(left, a, -b)), log_q + log_mass))
    return np.where(q == 0, a, np.where(left, x, -x))


def _identity(values: np.ndarray) -> np.ndarray:
    return values


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
    """``[n]`` the mixture's log-density from each kernel's ``[n, n_kernels]`` and the weights ``[n_kernels]``."""
    return _log_sum_exp(kernel_log_pdfs + np.log(kernel_weights))


def _log_sum_exp(weighted: np.ndarray) -> np.ndarray:
    """``[n]`` log of the sum over kernels of ``exp(weighted)`` ``[n, n_kernels]``, -inf where all are -inf."""
    top = weighted.max(axis=1)
    top[np.isneginf(top)] = 0
    with np.errstate(divide="ignore"):
        return np.log(np.exp(weighted - top[:, np.newaxis]).sum(axis=1)) + top
