"""Choosing what moves to the next fidelity level, and how well the lower level predicted it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Candidate:
    """One recipe at a level: its mean objective over seeds, its cost, and a run to copy it from."""

    recipe_key: str
    value: float
    cost: float
    run_id: int


def top_k(candidates: Sequence[Candidate], k: int) -> list[Candidate]:
    """The ``k`` best by value (ties: cheaper first, then key, so every worker picks the same)."""
    return sorted(candidates, key=lambda c: (-c.value, c.cost, c.recipe_key))[:k]


def pareto(candidates: Sequence[Candidate], k: int) -> list[Candidate]:
    """The non-dominated set over (value high, cost low), best value first, at most ``k``.

    A front longer than ``k`` keeps ``k`` of its points spread evenly along it by rank: the best
    value, the cheapest, and evenly between (with ``k = 1``, the best value). Cutting at the ``k``
    best values would drop the cheap end of the front, the small networks the rule is for.
    """
    front = top_k([c for c in candidates
                   if not any((o.value >= c.value and o.cost <= c.cost) and (o.value > c.value or o.cost < c.cost)
                              for o in candidates)], len(candidates))
    if len(front) <= k or k <= 1:
        return front[:max(k, 0)]
    return [front[int(i * (len(front) - 1) / (k - 1) + 0.5)] for i in range(k)]


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho and Kendall's tau between two levels' values of the same recipes."""

    n: int
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float
    constant: tuple[str, ...] = ()
    """Which sides (``lower``, ``upper``) gave every recipe the same value, leaving rho undefined (NaN)."""

    def predicts(self, min_spearman: float) -> bool:
        """At least 3 recipes and rho >= ``min_spearman`` (up to float rounding: scipy gives 0.8999...
        for a hand-computed 0.9); NaN never predicts."""
        return self.n >= 3 and self.spearman == self.spearman and self.spearman >= min_spearman - 1e-9

    def summary(self, lower: str = "coarse", upper: str = "fine") -> str:
        """One line: the two levels' names, the number of recipes, rho and tau with their p-values."""
        if self.constant and self.n >= 2:
            tied = " and ".join({"lower": lower, "upper": upper}[side] for side in self.constant)
            return (f"{lower}-vs-{upper} rank correlation over {self.n} recipes: undefined, every recipe scored "
                    f"the same at {tied}")
        return (f"{lower}-vs-{upper} rank correlation over {self.n} recipes: Spearman rho={self.spearman:.3f} "
                f"(p={self.spearman_p:.3g}), Kendall tau={self.kendall:.3f} (p={self.kendall_p:.3g})")


def rank_correlation(lower: Sequence[float], upper: Sequence[float]) -> RankCorrelation:
    """Rank agreement of ``lower[i]`` and ``upper[i]`` (same recipe ``i`` at two levels); NaN if n < 2."""
    assert len(lower) == len(upper), f"{len(lower)} lower values vs {len(upper)} upper values"
    n = len(lower)
    constant = tuple(side for side, values in (("lower", lower), ("upper", upper)) if len(set(values)) < 2)
    if n < 2 or constant:
        nan = float("nan")
        return RankCorrelation(n, nan, nan, nan, nan, constant if n >= 2 else ())
    rho = stats.spearmanr(lower, upper)
    tau = stats.kendalltau(lower, upper)  # scipy's p is exact for small n without ties
    rho_p = exact_spearman_p(lower, upper, float(rho.statistic)) if n <= EXACT_SPEARMAN_MAX_N else rho.pvalue
    return RankCorrelation(n, float(rho.statistic), float(rho_p), float(tau.statistic), float(tau.pvalue))


EXACT_SPEARMAN_MAX_N = 8
"""Up to this many recipes Spearman's p is exact (all n! pairings); above, scipy's t approximation."""


def exact_spearman_p(lower: Sequence[float], upper: Sequence[float], rho: float) -> float:
    """Two-sided permutation p of Spearman's ``rho``: the share of all pairings of ``upper`` with
    ``lower`` whose |rho| is at least the observed one. scipy's t approximation is far off for a few
    recipes (it gives p = 0 for 3 recipes in the same order, whose exact p is 1/3)."""
    rank_lower = stats.rankdata(lower) - (len(lower) + 1) / 2
    rank_upper = stats.rankdata(upper) - (len(upper) + 1) / 2
    pairings = np.array(list(itertools.permutations(rank_upper)))  # [n!, n]
    rhos = pairings @ rank_lower / np.sqrt((rank_lower @ rank_lower) * (rank_upper @ rank_upper))
    return float(np.mean(np.abs(rhos) >= abs(rho) - 1e-9))
