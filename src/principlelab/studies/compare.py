"""Paired comparison of two principles or recipes over matched seeds (``plab compare``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, select
from sqlalchemy.orm import Session

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError, UnknownNameError
from principlelab.studies.db import LeaderboardDB, RunRow, StudyVersionRow, campaign_row
from principlelab.studies.leaderboard import (
    ALPHA,
    MIN_KEY_PREFIX,
    check_known,
    higher_is_better,
    study_version_filter,
    task_and_level,
)


def compare(db: LeaderboardDB, *, campaign: str, a: str, b: str, metric: str = "test_accuracy",
            task: str | None = None, level: str | None = None,
            study_version: int | str | None = None) -> dict[str, Any]:
    """A paired comparison of A and B over matched seeds at one fidelity level.

    ``a`` and ``b`` are each ``slot=name`` (every complete run with that principle) or a recipe key (or
    a unique prefix of at least 6 characters). Runs are matched on ``(task, level, seed)``: for every
    such cell where both sides have complete runs, the pair is (mean of A's runs, mean of B's runs).
    Only one level's cells are paired: ``level``, or else the highest level where both sides have at
    least 2 matched cells (``level`` in the result says which). ``study_version`` restricts the runs as in
    :func:`~principlelab.studies.leaderboard.query`; ``study_versions`` in the result lists the study
    versions the paired runs come from.
    The paired t-test (``scipy.stats.ttest_rel``) decides ``significant`` (p < 0.05); the Wilcoxon
    signed-rank test is added when there are at least 6 pairs and not all differences are zero. When
    every difference is the same non-zero number (accuracies move in steps of one test sample, so a few
    pairs can differ by exactly one sample each), the differences have no variance and the t statistic
    is infinite or rounding noise; the exact sign test (``scipy.stats.binomtest``) decides instead
    (``test`` says which, ``p`` is its p-value, ``p_sign`` the sign test's): with 3 pairs its p is 0.25,
    from 6 on below 0.05. ``shared_runs`` counts runs on both sides (e.g. a principle and one of its
    recipes); two sides with the same runs are a ConfigError.
    ``mean_diff`` is ``mean_b - mean_a``; ``better`` is ``"a"``/``"b"`` when significant, else None.
    Fewer than 2 pairs is a ConfigError.
    """
    higher = higher_is_better(metric)
    col = getattr(RunRow, metric)
    with db.session(write=False) as session:
        row = campaign_row(session, campaign)
        campaign_id = row.id
        level_order: dict[str, int] = {
            name: index for name, index in session.execute(
                select(StudyVersionRow.level, func.max(StudyVersionRow.level_index))
                .where(StudyVersionRow.campaign_id == campaign_id).group_by(StudyVersionRow.level))}
        in_campaign = [RunRow.campaign_id == campaign_id]
        base = [*in_campaign, RunRow.status == "complete", col.is_not(None),
                *task_and_level(session, row, in_campaign, task, level),
                *study_version_filter(session, row, study_version, f"in campaign {campaign!r}")]
        sides, conds = [], []
        for name, spec in (("A", a), ("B", b)):
            label, cond = _side(session, campaign, campaign_id, name, spec)
            conds.append(cond)
            cells = session.execute(
                select(RunRow.task, RunRow.level, RunRow.seed, func.avg(cast(col, Float)), func.count(col))
                .where(*base, cond).group_by(RunRow.task, RunRow.level, RunRow.seed)).all()
            sides.append((label, {(r[0], r[1], r[2]): float(r[3]) for r in cells},
                          {(r[0], r[1], r[2]): int(r[4]) for r in cells}))
        (label_a, cells_a, counts_a), (label_b, cells_b, counts_b) = sides
        if label_a == label_b:
            raise ConfigError(f"compare: A and B are the same ({label_a}); name two different principles or recipes")
        keys, level = _one_level(sorted(set(cells_a) & set(cells_b)), level, level_order)
        # each side's runs at the compared level: (run id, study version)
        at_level = [dict(session.execute(
            select(RunRow.id, StudyVersionRow.version)
            .join(StudyVersionRow, StudyVersionRow.id == RunRow.study_version_id)
            .where(*base, RunRow.level == level, cond)).all()) if keys else {} for cond in conds]
    ids_a, ids_b = set(at_level[0]), set(at_level[1])
    versions = sorted({*at_level[0].values(), *at_level[1].values()})
    if ids_a and ids_a == ids_b:
        raise ConfigError(f"compare: A ({label_a}) and B ({label_b}) select the same {len(ids_a)} runs at fidelity "
                          f"{level!r}; a paired test of runs against themselves says nothing")
    (runs_a, in_a), (runs_b, in_b) = _runs_at(counts_a, level), _runs_at(counts_b, level)
    if len(keys) < 2:
        scope = "".join(f", {k}={v}" for k, v in (("task", task), ("fidelity", level)) if v)
        raise ConfigError(
            f"compare: only {len(keys)} (task, fidelity, seed) cell(s) have complete runs with {metric} for "
            f"both A ({label_a}: {runs_a} runs in {in_a} cells) and B ({label_b}: {runs_b} runs in "
            f"{in_b} cells) in campaign {campaign!r}{scope}; a paired test needs at least 2 — run "
            "more seeds, or compare at a level where both ran")
    xa = [cells_a[k] for k in keys]
    xb = [cells_b[k] for k in keys]
    diffs = [y - x for x, y in zip(xa, xb)]
    t_stat = p_t = w_stat = p_w = p_sign = None
    from scipy import stats

    constant = _all_equal(diffs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if constant and diffs[0] != 0:  # no variance: t is infinite (or rounding noise), its p meaningless
            p_sign = float(stats.binomtest(sum(d > 0 for d in diffs), len(diffs), 0.5).pvalue)
        elif not constant:
            res = stats.ttest_rel(xb, xa)
            t_stat, p_t = _finite(res.statistic), _finite(res.pvalue)
            if len(keys) >= 6:
                try:
                    wres = stats.wilcoxon(xb, xa)
                    w_stat, p_w = _finite(wres.statistic), _finite(wres.pvalue)
                except ValueError:
                    pass
    n = len(keys)
    over = (f"over {n} paired seeds" if len({k[0] for k in keys}) == 1 else f"over {n} paired (task, seed) cells")
    over += f" at fidelity {level!r}" if level is not None else ""
    mean_a, mean_b = sum(xa) / n, sum(xb) / n
    mean_diff = mean_b - mean_a
    test, p_value = ("sign test", p_sign) if p_sign is not None else ("paired t-test", p_t)
    significant = p_value is not None and p_value < ALPHA
    better = None
    if significant:
        better = "b" if (mean_diff > 0) == higher else "a"
    wil = f", Wilcoxon p={p_w:.3g}" if p_w is not None else ""
    p_text = f"p={p_value:.3g}" if p_value is not None else "p undefined (all differences zero)"
    if p_sign is not None:
        p_text += f"; every difference is {diffs[0]:+.4g}, so the t-test has no variance"
    if significant:
        win, lose = ("B", "A") if better == "b" else ("A", "B")
        labels = {"A": label_a, "B": label_b}
        verdict = (f"{win} ({labels[win]}) is better than {lose} ({labels[lose]}) on {metric}: "
                   f"A {mean_a:.4g} vs B {mean_b:.4g} (B-A {mean_diff:+.4g}) {over}; "
                   f"significant at p<{ALPHA} by the {test} ({p_text}{wil})")
    else:
        verdict = (f"no significant difference between A ({label_a}) and B ({label_b}) on {metric}: "
                   f"A {mean_a:.4g} vs B {mean_b:.4g} (B-A {mean_diff:+.4g}) {over}; "
                   f"{test} {p_text}{wil}")
    return {"campaign": campaign, "metric": metric, "level": level, "study_versions": versions,
            "higher_is_better": higher, "a": label_a, "b": label_b, "n_pairs": n, "runs_a": runs_a,
            "runs_b": runs_b, "shared_runs": len(ids_a & ids_b), "mean_a": mean_a, "mean_b": mean_b,
            "mean_diff": mean_diff, "t": t_stat, "p_t": p_t, "w": w_stat, "p_w": p_w, "p_sign": p_sign,
            "test": test, "p": p_value, "alpha": ALPHA, "significant": significant, "better": better,
            "verdict": verdict,
            "pairs": [{"task": k[0], "level": k[1], "seed": k[2], "a": x, "b": y}
                      for k, x, y in zip(keys, xa, xb)]}


def _one_level(keys: list[tuple[str, str, int]], level: str | None,
               order: dict[str, int]) -> tuple[list[tuple[str, str, int]], str | None]:
    """The matched ``(task, level, seed)`` cells of one fidelity level, and that level.

    Levels differ in data, epochs and width, so one test never mixes them (pairing a coarse cell with
    fine ones changed a verdict's sign). Without ``level``: the highest level, in the campaign's order,
    with at least 2 matched cells (else the highest with any)."""
    levels = sorted({k[1] for k in keys}, key=lambda name: (order.get(name, -1), name))
    if level is not None or len(levels) <= 1:
        return keys, level if level is not None else (levels[0] if levels else None)
    usable = [name for name in levels if sum(k[1] == name for k in keys) >= 2] or levels
    return [k for k in keys if k[1] == usable[-1]], usable[-1]


def _runs_at(counts: dict[tuple[str, str, int], int], level: str | None) -> tuple[int, int]:
    """``(runs, cells)`` one side has at ``level`` (None: every level), matched or not."""
    inside = [n for key, n in counts.items() if level is None or key[1] == level]
    return sum(inside), len(inside)


def _side(session: Session, campaign: str, campaign_id: int, name: str,
          spec: str) -> tuple[str, ColumnElement[bool]]:
    """``(label, condition)`` for one side of :func:`compare`."""
    if "=" in spec:
        slot, _, principle = (part.strip() for part in spec.partition("="))
        if slot not in SLOTS:
            raise UnknownNameError("slot", slot, SLOTS)
        if not principle:
            raise ConfigError(f"compare: {name} {spec!r} must look like slot=name, e.g. growth=random")
        check_known(session, getattr(RunRow, slot), principle, f"{slot} principle", f"in campaign {campaign!r}",
                    [RunRow.campaign_id == campaign_id])
        return f"{slot}={principle}", getattr(RunRow, slot) == principle
    spec = spec.strip()
    if len(spec) < MIN_KEY_PREFIX:
        raise ConfigError(f"compare: {name} {spec!r} is neither slot=name (e.g. growth=random) nor a "
                          f"recipe key (give at least {MIN_KEY_PREFIX} characters of it)")
    keys = list(session.scalars(select(RunRow.recipe_key).distinct().where(
        RunRow.campaign_id == campaign_id, RunRow.recipe_key.startswith(spec, autoescape=True)).limit(6)))
    if not keys:
        raise ConfigError(f"compare: no recipe key starting with {spec!r} in campaign {campaign!r}; "
                          "plab leaderboard --group-by recipe lists them")
    if len(keys) > 1:
        shown = ", ".join(sorted(keys)[:5])
        raise ConfigError(f"compare: {name} {spec!r} matches several recipe keys ({shown}"
                          f"{', ...' if len(keys) > 5 else ''}); give more characters")
    return keys[0], RunRow.recipe_key == keys[0]


def _all_equal(values: list[float]) -> bool:
    """Whether ``values`` are one number up to rounding (means of the same runs can differ in the last bits)."""
    scale = max(abs(v) for v in values)
    return max(values) - min(values) <= 1e-9 * scale


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


__all__ = ["compare"]
