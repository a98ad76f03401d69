"""Promotion rules (top-k, Pareto) and the coarse-vs-fine rank correlation with its warning."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from principlelab.cli import main
from principlelab.studies import campaign as campaign_module
from principlelab.studies.campaign import CampaignOutcome, CampaignRunner
from principlelab.studies.campaign_file import parse_campaign
from principlelab.studies.promotion import Candidate, RankCorrelation, pareto, rank_correlation, top_k

# ----------------------------------------------------------------------------------- rank correlation


def test_identical_ranks_give_one():
    corr = rank_correlation([0.1, 0.5, 0.3, 0.9], [0.2, 0.6, 0.4, 0.95])  # same order, other values
    assert corr.n == 4
    assert corr.spearman == pytest.approx(1.0) and corr.kendall == pytest.approx(1.0)
    assert corr.predicts(0.5)


def test_reversed_ranks_give_minus_one():
    corr = rank_correlation([1, 2, 3, 4, 5], [50, 40, 30, 20, 10])
    assert corr.spearman == pytest.approx(-1.0) and corr.kendall == pytest.approx(-1.0)
    assert not corr.predicts(0.5) and not corr.predicts(-0.9)


def test_one_swap_among_five_matches_the_hand_computed_values():
    # ranks 1 2 3 4 5 vs 1 2 3 5 4: sum d^2 = 2, rho = 1 - 6*2/(5*24) = 0.9;
    # of 10 pairs, 9 concordant and 1 discordant: tau = (9 - 1)/10 = 0.8
    corr = rank_correlation([0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.5, 0.4])
    assert corr.n == 5
    assert corr.spearman == pytest.approx(0.9)
    assert corr.kendall == pytest.approx(0.8)
    # exact p: 5 of the 120 pairings have rho >= 0.9 (this one and the other single swaps of neighbours), 5 <= -0.9
    assert corr.spearman_p == pytest.approx(10 / 120) and corr.kendall_p == pytest.approx(10 / 120)
    assert corr.predicts(0.9) and not corr.predicts(0.95)  # the threshold is inclusive
    assert corr.summary() == ("coarse-vs-fine rank correlation over 5 recipes: Spearman rho=0.900 "
                              f"(p={corr.spearman_p:.3g}), Kendall tau=0.800 (p={corr.kendall_p:.3g})")


@pytest.mark.parametrize(("lower", "upper"), [
    ([], []),                          # nothing promoted
    ([0.5], [0.7]),                    # one recipe: no ranking
    ([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]),  # constant coarse values
    ([0.1, 0.2, 0.3], [0.4, 0.4, 0.4]),  # constant fine values
])
def test_undefined_correlation_is_nan_and_does_not_predict(lower, upper):
    corr = rank_correlation(lower, upper)
    assert corr.n == len(lower)
    assert all(math.isnan(v) for v in (corr.spearman, corr.spearman_p, corr.kendall, corr.kendall_p))
    assert not corr.predicts(-1.0)
    if len(lower) < 2:
        assert "rho=nan" in corr.summary() and corr.constant == ()
    else:  # it read 'rho=nan (p=nan)'
        side = "coarse" if len(set(lower)) < 2 else "fine"
        assert corr.summary() == f"coarse-vs-fine rank correlation over 3 recipes: undefined, every recipe scored " \
                                 f"the same at {side}"


def test_spearman_p_is_exact_for_few_recipes():
    corr = rank_correlation([0.1, 0.2, 0.3], [0.5, 0.6, 0.7])
    assert corr.spearman_p == pytest.approx(1 / 3)  # 2 of 6 pairings reach |rho| = 1 (scipy's t approximation: 0)
    x = [0.9444, 0.9333, 0.9259, 0.9259, 0.9074, 0.95, 0.91]  # with a tie
    y = [0.97, 0.96, 0.98, 0.95, 0.99, 0.93, 0.94]
    rho = stats.spearmanr(x, y).statistic
    brute = [stats.spearmanr(x, perm).statistic for perm in itertools.permutations(y)]
    assert rank_correlation(x, y).spearman_p == pytest.approx(np.mean(np.abs(brute) >= abs(rho) - 1e-9))
    big = rank_correlation(list(range(9)), [0, 2, 1, 3, 5, 4, 6, 8, 7])  # 9 recipes: scipy's approximation
    assert big.spearman_p == pytest.approx(stats.spearmanr(list(range(9)), [0, 2, 1, 3, 5, 4, 6, 8, 7]).pvalue)


def test_predicts_needs_three_recipes_and_the_threshold():
    assert not rank_correlation([0.1, 0.2], [0.3, 0.4]).predicts(0.0)  # rho = 1 over 2 recipes: no evidence
    assert RankCorrelation(3, 0.5, 0.1, 0.4, 0.1).predicts(0.5)
    assert not RankCorrelation(3, 0.49, 0.1, 0.4, 0.1).predicts(0.5)
    assert not RankCorrelation(10, float("nan"), float("nan"), 0.4, 0.1).predicts(-1.0)


# ------------------------------------------------------------------------------------------ top-k


def cand(key: str, value: float, cost: float = 100.0, run_id: int = 0) -> Candidate:
    return Candidate(key, value, cost, run_id)


def test_top_k_orders_by_value_then_cost_then_key():
    cands = [cand("e", 0.5), cand("b", 0.9, 200), cand("a", 0.9, 200), cand("c", 0.9, 50), cand("d", 0.7)]
    assert [c.recipe_key for c in top_k(cands, 4)] == ["c", "a", "b", "d"]
    assert [c.recipe_key for c in top_k(cands, 1)] == ["c"]
    assert [c.recipe_key for c in top_k(list(reversed(cands)), 3)] == ["c", "a", "b"]  # input order is irrelevant
    assert len(top_k(cands, 99)) == 5 and top_k([], 3) == []


# ----------------------------------------------------------------------------------------- pareto


def test_pareto_keeps_only_non_dominated_points_best_value_first():
    cands = [
        cand("big", 0.90, 100),
        cand("twin", 0.90, 100),   # equal to "big": neither dominates the other
        cand("mid", 0.80, 50),
        cand("worse", 0.85, 120),  # dominated by big (lower value, higher cost)
        cand("same_cost", 0.70, 50),  # dominated by mid (same cost, lower value)
        cand("tiny", 0.60, 10),
        cand("pricey", 0.90, 150),  # dominated by big (same value, higher cost)
    ]
    assert [c.recipe_key for c in pareto(cands, 10)] == ["big", "twin", "mid", "tiny"]
    assert [c.recipe_key for c in pareto(list(reversed(cands)), 4)] == ["big", "twin", "mid", "tiny"]
    assert [c.recipe_key for c in pareto([cand("only", 0.1)], 5)] == ["only"]


def test_a_front_longer_than_k_keeps_both_ends_and_points_between():
    """The cut must not drop the cheap end of the front: that is what Pareto promotion is for."""
    front = [cand(f"p{i}", 0.95 - 0.05 * i, 1000 // (i + 1)) for i in range(7)]  # each cheaper, less accurate
    dominated = [cand("d", 0.5, 900)]
    assert [c.recipe_key for c in pareto(front + dominated, 2)] == ["p0", "p6"]
    assert [c.recipe_key for c in pareto(front + dominated, 3)] == ["p0", "p3", "p6"]
    assert [c.recipe_key for c in pareto(front + dominated, 4)] == ["p0", "p2", "p4", "p6"]
    assert [c.recipe_key for c in pareto(front, 6)] == ["p0", "p1", "p2", "p4", "p5", "p6"]
    assert [c.recipe_key for c in pareto(front, 1)] == ["p0"] and pareto(front, 0) == []


def test_pareto_front_of_a_chain_is_its_best_point():
    chain = [cand(str(i), 0.5 + i / 10, 100 - i) for i in range(5)]  # each better and cheaper than the last
    assert [c.recipe_key for c in pareto(chain, 5)] == ["4"]


# ------------------------------------------------------------------------ the warning of a campaign

CAMPAIGN = """
name = "corr"
tasks = ["digits"]
[network]
hidden = [16]
[search]
connectivity = ["dense"]
learning = ["backprop"]
trigger = ["never"]
growth = ["none", "random"]
composition = ["sequential"]
[[levels]]
name = "coarse"
data_fraction = 0.2
epochs = 1
trials = 3
sampler = "random"
pruner = "none"
[[levels]]
name = "fine"
epochs = 1
seeds = 1
[promotion]
k = 4
min_spearman = 0.5
"""


@dataclass
class FakeRun:
    id: int
    recipe_key: str
    objective: float
    params: int = 100
    macs: int = 1000


class FakeDB:
    """What :meth:`CampaignRunner.report_correlation` reads: promotions into a level and its runs."""

    def __init__(self, coarse: dict[str, float], fine: dict[str, list[float]]) -> None:
        self.coarse, self.fine = coarse, fine

    def promotions(self, *, to_study_version_id=None, from_study_version_id=None):
        assert to_study_version_id == 2
        return [SimpleNamespace(recipe_key=key, source_value=value) for key, value in self.coarse.items()]

    def runs_for_study_version(self, study_version_id, *, status=None):
        assert (study_version_id, status) == (2, "complete")
        return [FakeRun(i, key, value) for i, (key, values) in enumerate(self.fine.items()) for value in values]


def report(coarse: dict[str, float], fine: dict[str, list[float]]) -> tuple[RankCorrelation, CampaignOutcome]:
    runner = CampaignRunner.__new__(CampaignRunner)  # no database: only report_correlation is exercised
    runner.spec, runner.db, runner.outcome = parse_campaign(CAMPAIGN), FakeDB(coarse, fine), CampaignOutcome()
    lower = SimpleNamespace(task="digits", study_version_id=1, level=SimpleNamespace(name="coarse"))
    upper = SimpleNamespace(task="digits", study_version_id=2, level=SimpleNamespace(name="fine"))
    return runner.report_correlation(lower, upper), runner.outcome


def test_report_correlation_warns_when_coarse_ranks_are_reversed_at_fine():
    coarse = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    fine = {"a": [0.60, 0.62], "b": [0.70], "c": [0.80], "d": [0.90, 0.88]}  # means over seeds, reversed
    corr, outcome = report(coarse, fine)
    assert (corr.n, corr.spearman) == (4, pytest.approx(-1.0))
    assert outcome.correlations == {("digits", "coarse", "fine"): corr}
    assert outcome.warnings == [
        "warning: on digits, the coarse level does not predict the fine level (Spearman rho=-1.000 over 4 "
        "recipes, threshold 0.5); make coarse less coarse or promote more recipes"]


def test_report_correlation_says_when_every_recipe_tied():
    """It warned that coarse 'does not predict' fine, with rho=nan, when the promoted recipes all tied."""
    corr, outcome = report({"a": 0.5, "b": 0.5, "c": 0.5}, {"a": [0.9], "b": [0.8], "c": [0.7]})
    assert corr.constant == ("lower",)
    assert outcome.warnings == [
        "warning: on digits, the 3 promoted recipes all scored the same at coarse, so there is no ranking to "
        "compare; the level cannot tell them apart (too few epochs to differ, or principles that change nothing "
        "here)"]


def test_report_correlation_is_quiet_when_coarse_predicts_fine():
    corr, outcome = report({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": [0.95], "b": [0.9], "c": [0.85]})
    assert corr.spearman == pytest.approx(1.0) and outcome.warnings == []


def test_recipes_with_the_same_fine_results_tie_whatever_the_order_of_their_runs():
    """The mean over seeds must not depend on the order the runs come in (a plain sum differs in the
    last bit here), or two recipes with the same results rank apart, and the campaign's rho differs
    from the report's (report/data.py)."""
    values = [0.1344, 0.8474, 0.7638]
    assert sum(values) / 3 != sum(values[::-1]) / 3  # the case this guards against
    corr, _ = report({"a": 0.9, "b": 0.8, "c": 0.7}, {"a": values, "b": values[::-1], "c": [0.1, 0.1]})
    assert corr.spearman == pytest.approx(math.sqrt(3) / 2)  # ranks (3, 2, 1) against (2.5, 2.5, 1)


def test_report_correlation_ignores_promoted_recipes_without_a_complete_fine_run():
    corr, outcome = report({"a": 0.9, "b": 0.8, "c": 0.7, "gone": 0.5}, {"a": [0.95], "b": [0.9], "c": [0.85]})
    assert corr.n == 3 and outcome.warnings == []


@pytest.mark.parametrize(("rho", "warned"), [(-0.25, True), (0.75, False)])
def test_campaign_output_shows_the_warning_only_when_coarse_does_not_predict_fine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rho: float, warned: bool):
    seen: list[tuple[list[float], list[float]]] = []

    def fake_rank_correlation(lower, upper):
        seen.append((list(lower), list(upper)))
        return RankCorrelation(len(lower), rho, 0.2, rho, 0.3)

    monkeypatch.setattr(campaign_module, "rank_correlation", fake_rank_correlation)
    path = tmp_path / "corr.toml"
    path.write_text(CAMPAIGN)
    result = CliRunner().invoke(main, ["campaign", "run", str(path), "--storage", f"sqlite:///{tmp_path}/c.db"])
    assert result.exit_code == 0, result.stderr
    assert len(seen) == 1 and len(seen[0][0]) >= 1  # the promoted recipes' coarse and fine values
    assert f"digits coarse -> fine: coarse-vs-fine rank correlation over {len(seen[0][0])} recipes: " \
           f"Spearman rho={rho:.3f}" in result.stdout
    warning = f"warning: on digits, the coarse level does not predict the fine level (Spearman rho={rho:.3f}"
    assert (warning in result.stderr) is warned
