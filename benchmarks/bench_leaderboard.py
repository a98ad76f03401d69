"""Leaderboard query latency on a synthetic SQLite database of ``--rows`` runs (default 10^5).

The database (a temporary file) holds 3 campaigns x 2 tasks x 2 fidelity levels, ~2000 recipes spread
over the campaigns (random principle per slot), each run at several seeds; about 85 % of runs are
complete, 10 % pruned and 5 % failed. Rows are bulk-inserted (executemany), then each query is timed
as the median of ``--repeats`` (default 5) calls, after one warm-up call:

* ``query(group_by="recipe")``: the library call (mean/std/count per recipe in SQL, top 20);
* ``plab leaderboard --group-by recipe --json``: the CLI command in-process via click's CliRunner,
  opening the database each time (engine, schema check, query, JSON output);
* a few more shapes for context (runs, one campaign, one slot, a where-filter, a compare).

The two recipe queries must answer in under 1 s; the script exits 1 if they do not.

Usage::

    .venv/bin/python benchmarks/bench_leaderboard.py                # 10^5 rows
    .venv/bin/python benchmarks/bench_leaderboard.py --rows 300000 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import insert

from principlelab.cli.leaderboard_cmd import leaderboard
from principlelab.core.recipe import SLOTS
from principlelab.studies.compare import compare
from principlelab.studies.db import LeaderboardDB, RunRow
from principlelab.studies.leaderboard import query

PRINCIPLES = {
    "connectivity": ["dense", "sparse_random", "skip", "local"],
    "learning": ["backprop", "feedback_alignment", "hebbian", "forward_forward"],
    "trigger": ["never", "every_k", "plateau", "gradient_norm", "loss_spike"],
    "growth": ["none", "random", "split", "net2wider", "gradmax", "firefly"],
    "composition": ["sequential", "residual", "ensemble"],
}
CAMPAIGNS = ("alpha", "beta", "gamma")
TASKS = ("digits", "mnist1d")
LEVELS = (("coarse", 0), ("fine", 1))


def build(db: LeaderboardDB, rows: int, n_recipes: int, seed: int) -> None:
    """Campaigns, study versions and ``rows`` synthetic runs, bulk-inserted."""
    rng = random.Random(seed)
    sv_ids: dict[tuple[str, str, str], tuple[int, int, str]] = {}
    for name in CAMPAIGNS:
        camp = db.get_or_create_campaign(name, f"hash-{name}", json.dumps({"name": name}))
        for task in TASKS:
            for level, index in LEVELS:
                sv = db.get_or_create_study_version(camp.id, task, level, index, f"fp-{name}-{level}", "{}",
                                                    lambda v, n=name, t=task, lv=level: f"{n}/{t}/{lv}/v{v}")
                sv_ids[(name, task, level)] = (camp.id, sv.id, sv.optuna_study_name)
    recipes = []
    for i in range(n_recipes):
        slots = {slot: rng.choice(PRINCIPLES[slot]) for slot in SLOTS}
        configs = {slot: {"units": rng.choice([4, 8, 16])} if slot == "growth" else {} for slot in SLOTS}
        key = hashlib.sha256(json.dumps([i, slots, configs], sort_keys=True).encode()).hexdigest()[:16]
        quality = rng.gauss(0.0, 0.05)
        recipes.append((CAMPAIGNS[i % len(CAMPAIGNS)], key, slots, configs, quality))
    trial_numbers: dict[str, int] = {}
    seeds: dict[tuple[str, str, str], int] = {}
    batch: list[dict[str, Any]] = []
    for _ in range(rows):
        camp_name, key, slots, configs, quality = rng.choice(recipes)
        task = rng.choice(TASKS)
        level = "coarse" if rng.random() < 0.7 else "fine"
        camp_id, sv_id, study = sv_ids[(camp_name, task, level)]
        number = trial_numbers.get(study, 0)
        trial_numbers[study] = number + 1
        seed_key = (key, task, level)
        seeds[seed_key] = seeds.get(seed_key, -1) + 1
        draw = rng.random()
        run_status = "complete" if draw < 0.85 else "pruned" if draw < 0.95 else "failed"
        done = run_status != "failed"
        acc = min(1.0, max(0.0, 0.85 + quality + (0.05 if level == "fine" else 0) + rng.gauss(0, 0.02)))
        params = rng.randint(5_000, 200_000)
        batch.append({
            "campaign_id": camp_id, "study_version_id": sv_id, "optuna_study_name": study,
            "trial_number": number, "task": task, "level": level, "seed": seeds[seed_key],
            "status": run_status, "failure_reason": None if done else rng.choice(
                ["loss became NaN", "growth error: width cap", "out of memory"]),
            **slots, **{f"{slot}_config": cfg for slot, cfg in configs.items()}, "recipe_key": key,
            "recipe_json": {"task": task, **{slot: {"name": slots[slot], "config": configs[slot]}
                                             for slot in SLOTS}},
            "test_accuracy": acc if done else None,
            "val_accuracy": acc + rng.gauss(0, 0.01) if done else None,
            "test_loss": 1.0 - acc if done else None, "val_loss": 1.0 - acc if done else None,
            "params": params, "macs": params * rng.randint(10_000, 100_000), "samples_seen": 100_000,
            "wall_s": rng.uniform(1, 60), "growth_event_count": rng.randint(0, 5),
            "versions": {"principlelab": "0.1.0"}, "space_fingerprint": "fp",
            "objective": acc if done else None,
        })
        if len(batch) == 20_000:
            _flush(db, batch)
    _flush(db, batch)


def _flush(db: LeaderboardDB, batch: list[dict[str, Any]]) -> None:
    if batch:
        with db.session() as session:
            session.execute(insert(RunRow), batch)
        batch.clear()


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds over ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic runs (default 100000)")
    parser.add_argument("--recipes", type=int, default=2000, help="distinct recipes (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per query (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = LeaderboardDB(url)
        start = time.perf_counter()
        build(db, args.rows, args.recipes, args.seed)
        build_s = time.perf_counter() - start
        size_mb = (Path(tmp) / "bench.db").stat().st_size / 2**20
        print(f"built {args.rows} runs ({args.recipes} recipes) in {build_s:.1f} s; "
              f"database {size_mb:.0f} MiB (+ WAL)")

        runner = CliRunner()
        from principlelab.cli import main as plab

        # through the plab group once the command is registered there, else the command itself
        command, prefix = (plab, ["leaderboard"]) if "leaderboard" in plab.commands else (leaderboard, [])

        def cli() -> list[dict[str, Any]]:
            res = runner.invoke(command, [*prefix, "--storage", url, "--group-by", "recipe", "--json"])
            if res.exit_code != 0:
                raise SystemExit(f"CLI failed: {res.output}{res.exception!r}")
            return json.loads(res.stdout)

        best = query(db, group_by="recipe", top=1, campaign="alpha")[0]["recipe_key"]
        cases: list[tuple[str, Callable[[], Any], bool]] = [
            ("query(group_by='recipe')", lambda: query(db, group_by="recipe"), True),
            ("plab leaderboard --group-by recipe --json", cli, True),
            ("query(group_by='recipe', top=0) [all groups]",
             lambda: query(db, group_by="recipe", top=0), False),
            ("query() [runs]", lambda: query(db), False),
            ("query(campaign='beta', group_by='recipe')",
             lambda: query(db, campaign="beta", group_by="recipe"), False),
            ("query(group_by='growth')", lambda: query(db, group_by="growth"), False),
            ("query(group_by='recipe', study_version='latest')",
             lambda: query(db, group_by="recipe", study_version="latest"), False),
            ("query(where={'growth': 'split'}, group_by='recipe')",
             lambda: query(db, where={"growth": "split"}, group_by="recipe"), False),
            ("compare(growth=random vs growth=split)",
             lambda: compare(db, campaign="alpha", a="growth=random", b="growth=split"), False),
            ("compare(recipe prefix vs growth=none)",
             lambda: compare(db, campaign="alpha", a=best[:8], b="growth=none"), False),
        ]
        failed = False
        print(f"CLI via {'plab group' if prefix else 'the leaderboard command (not yet in the plab group)'}")
        print(f"{'query':<55} {'median s':>9}  rows")
        for label, fn, must in cases:
            seconds, result = timed(fn, args.repeats)
            n = len(result) if isinstance(result, list) else result.get("n_pairs")
            flag = ""
            if must and seconds >= 1.0:
                flag, failed = "  FAIL (>= 1 s)", True
            print(f"{label:<55} {seconds:9.4f}  {n}{flag}")
        db.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
