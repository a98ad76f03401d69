"""Generate ``docs/results.md``: the built-in principles compared on digits and mnist1d.

Three experiments, every row over seeds ``0..N-1`` (mean ± sample std):

1. **Learning rules and compositions at a fixed training-compute budget.** A 2x256 ReLU MLP. The
   budget is what backprop (sequential) spends in ``B`` epochs, in training MACs (the learning
   rule's ``macs_per_sample`` x samples). Every other method gets the whole number of epochs whose
   training MACs come closest to the budget. Rows: backprop, forward_forward, capsule_routing with
   the paper's r=3 (``routing_iterations=2``) and with uniform coupling (``routing_iterations=0``).
2. **Growth targeting at equal final size.** Start small, grow on a fixed schedule (``every_k``,
   4 firings), every rule splits (Net2Wider) the same number of units per firing, capped at the same
   total. Rows: no growth, random, extrema, katz, extrema in its default mode (not size-matched:
   it adds units only where it finds extremal ones) and a static network of the final size.
   Two variants: two hidden layers (a unit's parameter cost depends on its layer, so the final
   sizes can differ slightly; the doc says by how much) and one hidden layer (exactly equal sizes).
3. **Triggers** with the same growth rule (random, 16 units per firing): never, every_k,
   grad_variance, signal_economy, plateau. Growth firings, units added, accuracy, accuracy per
   parameter.

Usage::

    .venv/bin/python benchmarks/results.py                       # 5 seeds, digits + mnist1d, 2 workers
    .venv/bin/python benchmarks/results.py --quick --out /tmp/r.md  # 1 seed, tiny epochs (smoke test)
    .venv/bin/python benchmarks/results.py --json results.json   # also write every run

Every run uses one torch thread; ``--workers`` processes (spawned) run them in parallel. Only the
built-in principles are loaded (``PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD=1``). The rows of the
tables are in ``results_rows.py``, the write-up (summaries, tables, sentences) in ``results_doc.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from results_doc import Stat, machine, render, summarize
from results_rows import FULL, QUICK, Settings, compute_methods, growth_rows, recipe_dict, slot, trigger_rows

from principlelab.core.recipe import make_recipe
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.registry import get_registry

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------------ one run


@dataclass
class Job:
    table: str  # "compute", "growth2", "growth1", "trigger"
    task: str
    row: str
    seed: int
    recipe: dict[str, Any]
    group: str = ""  # e.g. the budget of a compute table
    meta: dict[str, Any] = field(default_factory=dict)


def init_worker() -> None:
    torch.set_num_threads(1)


def extra_params(trainer: Trainer) -> int:
    """Trained parameters outside the network: the composition's and the learning rule's own."""
    net_ids = {id(p) for p in trainer.net.parameters()}
    comp = [p for p in trainer.composition.parameters() if id(p) not in net_ids]
    seen = net_ids | {id(p) for p in comp}
    rule: list[torch.Tensor] = []
    optimizer = getattr(trainer.learning, "optimizer", None)
    if optimizer is not None:
        for group in optimizer.param_groups:
            rule += [p for p in group["params"] if id(p) not in seen]
    return sum(p.numel() for p in comp) + sum(p.numel() for p in rule)


def run_job(job: Job) -> dict[str, Any]:
    """Train one recipe; the numbers the tables need."""
    torch.set_num_threads(1)
    recipe = make_recipe(job.recipe)
    principles = get_registry().instantiate(recipe)
    task = load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
    trainer = Trainer(recipe, principles, task)
    firings: list[int] = []
    grow = trainer._grow

    def counting_grow(firing: Any, epoch: int) -> Any:
        firings.append(epoch)
        return grow(firing, epoch)

    trainer._grow = counting_grow  # type: ignore[method-assign]
    hidden_before = trainer.net.num_hidden_units()
    started = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - started
    params = result.params  # everything trained: the network plus composition- and rule-owned tensors
    extra = extra_params(trainer)
    return {
        "table": job.table, "task": job.task, "row": job.row, "seed": job.seed, "group": job.group,
        "meta": job.meta, "epochs": recipe.fidelity.epochs, "test_accuracy": result.test_accuracy,
        "params": params - extra, "params_total": params, "macs": result.macs,
        "train_macs": trainer.signals.train_macs, "eval_macs": trainer.signals.eval_macs,
        "wall_s": wall, "widths": list(result.widths)[1:-1], "firings": len(firings),
        "firing_epochs": firings, "units_added": trainer.net.num_hidden_units() - hidden_before,
        "acc_per_10k": result.test_accuracy / params * 1e4,
    }


# -------------------------------------------------------------------------------- the job list


def epoch_train_macs(recipe: dict[str, Any]) -> int:
    """Training MACs of one epoch of ``recipe`` (static network: macs_per_sample x samples)."""
    r = make_recipe(recipe)
    task = load_task(r.task, fidelity=r.fidelity, seed=r.seed)
    trainer = Trainer(r, get_registry().instantiate(r), task)
    return trainer.learning.macs_per_sample(trainer.net, trainer.composition) * task.x_train.shape[0]


def build_jobs(s: Settings, tasks: list[str], seeds: int) -> tuple[list[Job], dict[str, Any]]:
    jobs: list[Job] = []
    plan: dict[str, Any] = {"budgets": {}}
    for task in tasks:
        per_epoch = {label: epoch_train_macs(recipe_dict(task, 0, 1, s.compute_hidden, **slots))
                     for label, slots in compute_methods().items()}
        for b in s.budget_epochs:
            budget = b * per_epoch["backprop (sequential)"]
            group = f"budget = backprop x {b} epochs"
            plan["budgets"][f"{task}/{b}"] = {"budget_macs": budget, "per_epoch_macs": per_epoch}
            for label, slots in compute_methods().items():
                epochs = max(1, round(budget / per_epoch[label]))
                for seed in range(seeds):
                    jobs.append(Job("compute", task, label, seed,
                                    recipe_dict(task, seed, epochs, s.compute_hidden, **slots), group,
                                    {"budget_macs": budget, "budget_epochs": b}))
        for table, hidden in (("growth2", s.small_2l), ("growth1", s.small_1l)):
            for label, row in growth_rows(s, hidden).items():
                for seed in range(seeds):
                    jobs.append(Job(table, task, label, seed,
                                    recipe_dict(task, seed, s.growth_epochs, row["hidden"], **row["slots"])))
        growth = slot("random", units=s.trigger_units, operator="split")
        for label, trig in trigger_rows(s).items():
            for seed in range(seeds):
                jobs.append(Job("trigger", task, label, seed,
                                recipe_dict(task, seed, s.trigger_epochs, s.small_2l, trigger=trig, growth=growth)))
    return jobs, plan


def static_jobs(sm: dict, s: Settings, tasks: list[str], seeds: int) -> list[Job]:
    """Phase 2: for every trigger row that grew, a static network of its mean final widths (rounded),
    trained from scratch for the same epochs: is growing with that trigger better than starting big?"""
    jobs = []
    for task in tasks:
        for label in trigger_rows(s):
            widths = tuple(round(w) for w in sm[("trigger", task, "", label)]["widths"])
            if widths == tuple(s.small_2l):
                continue
            for seed in range(seeds):
                jobs.append(Job("trigger_static", task, label, seed,
                                recipe_dict(task, seed, s.trigger_epochs, widths), meta={"widths": list(widths)}))
    return jobs


def run_all(jobs: list[Job], workers: int) -> list[dict[str, Any]]:
    total, done, records = len(jobs), 0, []
    started = time.perf_counter()

    def report(rec: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        print(f"[{done}/{total}] {time.perf_counter() - started:6.1f}s  {rec['table']:8s} {rec['task']:8s} "
              f"{rec['row'][:48]:48s} seed {rec['seed']}  acc {rec['test_accuracy']:.3f}  "
              f"{rec['wall_s']:.2f}s", flush=True)

    # longest first (compute table, mnist1d) so the pool drains evenly
    order = sorted(jobs, key=lambda j: (j.table != "compute", j.task != "mnist1d"))
    if workers <= 1:
        init_worker()
        for job in order:
            records.append(run_job(job))
            report(records[-1])
        return records
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker) as pool:
        futures = [pool.submit(run_job, job) for job in order]
        for fut in cf.as_completed(futures):
            records.append(fut.result())
            report(records[-1])
    return records



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per row (default 5)")
    parser.add_argument("--tasks", nargs="+", default=["digits", "mnist1d"], choices=["digits", "mnist1d"])
    parser.add_argument("--quick", action="store_true", help="1 seed, a few epochs (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md", help="the Markdown file")
    parser.add_argument("--json", type=Path, help="also write every run and summary here")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    s = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    started = time.perf_counter()
    jobs, plan = build_jobs(s, args.tasks, args.seeds)
    print(f"phase 1: {len(jobs)} runs, {args.workers} worker(s)", flush=True)
    records = run_all(jobs, args.workers)
    second = static_jobs(summarize(records), s, args.tasks, args.seeds)
    print(f"phase 2: {len(second)} runs (static networks of the triggers' final sizes)", flush=True)
    records += run_all(second, args.workers)
    sm = summarize(records)
    argv_shown = sys.argv[1:] if argv is None else argv
    info = {"command": shlex.join([".venv/bin/python", "benchmarks/results.py", *argv_shown]),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "workers": args.workers, "runs": len(records), "wall_s": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, s, sm, plan, info))
    print(f"wrote {args.out} ({info['wall_s']:.0f} s)", flush=True)
    if args.json:
        summaries = [{"table": k[0], "task": k[1], "group": k[2], "row": k[3],
                      **{m: vars(v) for m, v in st.items() if isinstance(v, Stat)}, "widths": st["widths"]}
                     for k, st in sm.items()]
        args.json.write_text(json.dumps({"info": info, "settings": vars(args) | {"out": str(args.out),
                                         "json": str(args.json)}, "plan": plan,
                                         "summaries": summaries, "runs": records}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
