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
built-in principles are loaded (``PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD=1``).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

import principlelab
from principlelab.core.recipe import make_recipe
from principlelab.core.tasks import load_task
from principlelab.core.trainer import Trainer
from principlelab.registry import get_registry

REPO = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Every knob of the experiments; ``--quick`` swaps in :data:`QUICK`."""

    compute_hidden: tuple[int, ...] = (256, 256)
    budget_epochs: tuple[int, ...] = (10, 30)  # backprop epochs that define the budgets
    growth_epochs: int = 30
    growth_k: int = 6  # every_k period: firings after epochs 6, 12, 18, 24
    growth_firings: int = 4
    growth_units: int = 16  # units per firing (every rule), so 64 in all
    small_2l: tuple[int, ...] = (64, 64)
    small_1l: tuple[int, ...] = (64,)
    trigger_epochs: int = 30
    trigger_k: int = 6
    trigger_units: int = 16


FULL = Settings()
QUICK = Settings(budget_epochs=(2,), growth_epochs=5, growth_k=1, trigger_epochs=4, trigger_k=1)

CAPSULE_R3 = "capsule_routing, paper r=3 (routing_iterations=2)"
CAPSULE_R0 = "capsule_routing, r=0 uniform coupling (routing_iterations=0)"


def slot(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "config": config}


def recipe_dict(task: str, seed: int, epochs: int, hidden: tuple[int, ...], **slots: Any) -> dict[str, Any]:
    return {"task": task, "seed": seed, "fidelity": {"name": "results", "epochs": epochs},
            "network": {"hidden": list(hidden)}, **slots}


def compute_methods() -> dict[str, dict[str, Any]]:
    """Table 1 rows: label -> recipe slots."""
    return {
        "backprop (sequential)": {},
        "forward_forward": {"learning": slot("forward_forward")},
        CAPSULE_R3: {"composition": slot("capsule_routing", routing_iterations=2)},
        CAPSULE_R0: {"composition": slot("capsule_routing", routing_iterations=0)},
    }


def growth_rows(s: Settings, hidden: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Table 2 rows: label -> (hidden widths, recipe slots). Every growing row splits ``units``
    units per firing of ``every_k`` and at most ``firings * units`` in all."""
    total = s.growth_firings * s.growth_units
    caps = {"operator": "split", "top_fraction": 1.0, "coarse_cap": s.growth_units,
            "medium_cap": s.growth_units, "fine_cap": s.growth_units, "max_total_units": total}
    trigger = slot("every_k", k=s.growth_k, max_firings=s.growth_firings)
    final = tuple(w + total // len(hidden) for w in hidden)
    return {
        "none (start size)": {"hidden": hidden, "slots": {}},
        "random": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("random", units=s.growth_units, max_total=total, operator="split")}},
        "extrema (percentile)": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("extrema", mode="percentile", percentile=20.0, **caps)}},
        "katz (in-influence)": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("katz", **caps)}},
        "extrema (auto: dead/always-max), not size-matched": {"hidden": hidden, "slots": {
            "trigger": trigger, "growth": slot("extrema", **caps)}},
        f"static {list(final)} (final size, no growth)": {"hidden": final, "slots": {}},
    }


MATCHED = ("random", "extrema (percentile)", "katz (in-influence)")


def trigger_rows(s: Settings) -> dict[str, dict[str, Any]]:
    """Table 3 rows: label -> trigger slot (growth: random, ``trigger_units`` per firing)."""
    return {
        "never": slot("never"),
        f"every_k (k={s.trigger_k})": slot("every_k", k=s.trigger_k),
        "grad_variance": slot("grad_variance"),
        "signal_economy": slot("signal_economy"),
        "plateau": slot("plateau"),
    }


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


# ------------------------------------------------------------------------------------ summaries


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        values = [float(v) for v in values]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))


def summarize(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """(table, task, group, row) -> {metric: Stat, 'runs': [...]} in first-seen row order."""
    keys: list[tuple[str, str, str, str]] = []
    runs: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        key = (rec["table"], rec["task"], rec["group"], rec["row"])
        if key not in runs:
            keys.append(key)
            runs[key] = []
        runs[key].append(rec)
    out = {}
    metrics = ("test_accuracy", "params", "params_total", "macs", "train_macs", "eval_macs", "wall_s",
               "firings", "units_added", "acc_per_10k", "epochs")
    for key in keys:
        rs = sorted(runs[key], key=lambda r: r["seed"])
        summary: dict[str, Any] = {m: Stat.of([r[m] for r in rs]) for m in metrics}
        depth = len(rs[0]["widths"])
        summary["widths"] = [statistics.fmean(r["widths"][i] for r in rs if len(r["widths"]) == depth)
                             for i in range(depth)]
        summary["runs"] = rs
        out[key] = summary
    return out


# ------------------------------------------------------------------------------------ formatting


def f_acc(s: Stat) -> str:
    return f"{s.mean:.3f} ± {s.std:.3f}"


def f_int(s: Stat) -> str:
    return f"{s.mean:,.0f} ± {s.std:,.0f}"


def f_num(s: Stat, digits: int = 1) -> str:
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def f_macs(s: Stat) -> str:
    scale, unit = (1e9, "G") if s.mean >= 1e9 else (1e6, "M")
    return f"{s.mean / scale:.3g}{unit} ± {s.std / scale:.2g}{unit}"


def f_widths(ws: list[float]) -> str:
    return "[" + ", ".join(f"{w:.0f}" if abs(w - round(w)) < 0.05 else f"{w:.1f}" for w in ws) + "]"


def compare(a: Stat, b: Stat, name_a: str, name_b: str, what: str = "test accuracy") -> str:
    """One sentence comparing ``a`` with ``b`` by the doc's rule (the larger of the two stds)."""
    diff = a.mean - b.mean
    noise = max(a.std, b.std)
    if a.n < 2 or b.n < 2:
        verdict = "one seed only, no noise estimate"
    elif abs(diff) > noise:
        verdict = f"larger than the seed std ({noise:.3f})"
    else:
        verdict = f"within the seed std ({noise:.3f})"
    if diff == 0:
        return f"{name_a}'s {what} equals {name_b}'s ({a.mean:.3f})"
    rel = "higher than" if diff > 0 else "lower than"
    return f"{name_a}'s {what} ({a.mean:.3f}) is {rel} {name_b}'s ({b.mean:.3f}) by {abs(diff):.3f}, {verdict}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


# ------------------------------------------------------------------------------------ sections


def defaults(slot_name: str, name: str, fld: str) -> Any:
    """The default of config field ``fld`` of a registered principle (for the doc's prose)."""
    return get_registry().get(slot_name, name).Config.model_fields[fld].default


def compute_section(sm: dict, tasks: list[str], s: Settings, plan: dict[str, Any]) -> list[str]:
    out = ["## 1. Learning rules and compositions at a fixed training-compute budget", "",
           f"Network {list(s.compute_hidden)} ReLU, dense, batch 64, full training split, every principle "
           "at its default config except the row's own setting (backprop and the capsule runs: "
           f"{defaults('learning', 'backprop', 'optimizer')}, lr {defaults('learning', 'backprop', 'lr')}; "
           f"forward_forward: AdamW, lr {defaults('learning', 'forward_forward', 'lr')}; capsule: "
           f"{defaults('composition', 'capsule_routing', 'primary_capsules')} primary capsules of "
           f"{defaults('composition', 'capsule_routing', 'primary_dim')} dimensions, class capsules of "
           f"{defaults('composition', 'capsule_routing', 'class_dim')}).",
           "",
           "The **budget** is backprop's training MACs for the stated number of epochs. Every method "
           "trains the whole number of epochs whose training MACs come closest to it (the trainer runs "
           "whole epochs only); *training MACs / budget* shows how close each got. Training MACs per "
           "sample: backprop 3 x forward (network + capsule head); forward_forward "
           "`2 * (first + 2 * rest) + 2 * width_1` (see its page). The MACs column is training + "
           "evaluation (per-epoch validation and the final test); forward_forward's evaluation runs one "
           "pass per class label, so its evaluation MACs are several times the others'.",
           "",
           "*params (all)* is `RunResult.params`: the network's active parameters plus those the "
           "composition or learning rule owns (the capsule head's projection and transforms; "
           "forward_forward's label embedding). *params (network)* is the network's alone. The capsule "
           "runs do not use the network's output layer but it is still counted in both.", ""]
    for task in tasks:
        for b in s.budget_epochs:
            group = f"budget = backprop x {b} epochs"
            budget = plan["budgets"][f"{task}/{b}"]["budget_macs"]
            out += [f"### {task}, {group} ({budget / 1e9:.3g} G training MACs)", ""]
            rows, stats = [], {}
            for label in compute_methods():
                st = sm[("compute", task, group, label)]
                stats[label] = st
                rows.append([label, f"{st['epochs'].mean:.0f}", f"{st['train_macs'].mean / budget:.3f}",
                             f_acc(st["test_accuracy"]), f_int(st["params"]), f_int(st["params_total"]),
                             f_macs(st["macs"]), f_num(st["wall_s"], 2)])
            out += table(["method", "epochs", "training MACs / budget", "test accuracy", "params (network)",
                          "params (all)", "MACs (train + eval)", "wall s"], rows)
            out += ["", *compute_text(stats), ""]
    return out


def compute_text(st: dict[str, dict[str, Any]]) -> list[str]:
    bp = st["backprop (sequential)"]
    acc = {k: v["test_accuracy"] for k, v in st.items()}
    best = max(acc, key=lambda k: acc[k].mean)
    short = {"backprop (sequential)": "backprop", "forward_forward": "forward_forward",
             CAPSULE_R3: "capsule r=3", CAPSULE_R0: "capsule r=0"}
    lines = [f"**What the numbers say.** Highest mean test accuracy: {short[best]} ({acc[best].mean:.3f})."]
    for label in list(st)[1:]:
        ep = st[label]["epochs"].mean
        lines.append(f"{compare(acc[label], acc['backprop (sequential)'], short[label], 'backprop')} "
                     f"(it trained {ep:.0f} epochs, backprop {bp['epochs'].mean:.0f}).")
    lines.append(compare(acc[CAPSULE_R3], acc[CAPSULE_R0], "Routing by agreement (paper r=3)",
                         "uniform coupling (r=0)") + ".")
    walls = ", ".join(f"{short[k]} {v['wall_s'].mean / bp['wall_s'].mean:.1f}x" for k, v in st.items()
                      if k != "backprop (sequential)")
    lines.append(f"Wall time for (about) the same training MACs, relative to backprop: {walls}.")
    ff = st["forward_forward"]
    lines.append(f"forward_forward's evaluation MACs are {ff['eval_macs'].mean / bp['eval_macs'].mean:.1f}x "
                 f"backprop's, so its total MACs are {ff['macs'].mean / bp['macs'].mean:.2f}x backprop's.")
    cap = st[CAPSULE_R3]
    lines.append(f"The capsule head adds {cap['params_total'].mean - cap['params'].mean:,.0f} parameters "
                 f"({(cap['params_total'].mean / cap['params'].mean - 1) * 100:.0f}% of the network's), "
                 "counted in *params (all)*.")
    return [" ".join(lines)]


def growth_section(sm: dict, tasks: list[str], s: Settings) -> list[str]:
    total = s.growth_firings * s.growth_units
    out = ["## 2. Growth targeting at equal final size", "",
           f"Every growing row uses trigger `every_k` (k={s.growth_k}, max_firings={s.growth_firings}), "
           f"{s.growth_epochs} epochs, backprop / sequential / dense, and adds units by Net2Wider `split` "
           f"(function-preserving): **{s.growth_units} units per firing, {total} in all**. "
           "`random` splits uniformly random units of uniformly random hidden layers (`units="
           f"{s.growth_units}, max_total={total}`). `extrema` and `katz` split their most severe targets: "
           f"`operator=split, top_fraction=1.0`, every scale cap `{s.growth_units}`, `max_total_units={total}`. "
           "`extrema (percentile)` targets the units whose mean activation is in the top or bottom 20% of "
           "their layer (this mode always has candidates, so it adds the same number of units as the "
           "others); `katz` the most Katz-central units (in-influence, alpha 0.1) of each layer. "
           "`extrema (auto)` is the rule's default selector (ReLU: dead or always-at-max units); it adds "
           "units only where it finds such units, so it may add fewer: it is **not** size-matched and is "
           "shown for information. The static row is a network of the size the matched rules end at "
           "(`katz` exactly; the others on average), trained from scratch for the same epochs.", ""]
    for table_key, hidden, title in (("growth2", s.small_2l, "two hidden layers"),
                                     ("growth1", s.small_1l, "one hidden layer (exactly equal sizes)")):
        for task in tasks:
            out += [f"### {task}, {title}: start {list(hidden)}, +{total} units", ""]
            rows, stats = [], {}
            for label in growth_rows(s, hidden):
                st = sm[(table_key, task, "", label)]
                stats[label] = st
                rows.append([label, f_widths(st["widths"]), f_num(st["units_added"], 1), f_acc(st["test_accuracy"]),
                             f_int(st["params"]), f_macs(st["macs"]), f_num(st["wall_s"], 2)])
            out += table(["growth", "final widths (mean)", "units added", "test accuracy", "params",
                          "MACs (train + eval)", "wall s"], rows)
            out += ["", *growth_text(stats, total), ""]
    return out


def growth_text(st: dict[str, dict[str, Any]], total: int) -> list[str]:
    lines = ["**What the numbers say.**"]
    matched = {k: st[k] for k in MATCHED}
    units_ok = all(r["units_added"] == total for v in matched.values() for r in v["runs"])
    if units_ok:
        lines.append(f"random, extrema (percentile) and katz each added exactly {total} units in every run.")
    else:
        short = {k: f"{v['units_added'].mean:.1f}" for k, v in matched.items()}
        lines.append(f"NOT every matched rule added {total} units in every run (mean units added: {short}).")
    seeds = sorted({r["seed"] for v in matched.values() for r in v["runs"]})
    per_seed = [[next(r["params"] for r in v["runs"] if r["seed"] == sd) for v in matched.values()]
                for sd in seeds]
    if all(len(set(p)) == 1 for p in per_seed):
        lines.append(f"Their final parameter counts are exactly equal in every seed ({per_seed[0][0]:,}).")
    else:
        spread = max((max(p) - min(p)) / min(p) for p in per_seed)
        means = ", ".join(f"{k} {v['params'].mean:,.0f}" for k, v in matched.items())
        lines.append(
            "Their final parameter counts are **not exactly equal**: the same number of units costs a "
            "different number of parameters in different layers, and the rules put their units in "
            f"different layers (mean params: {means}; largest spread within one seed {spread * 100:.1f}%).")
    acc = {k: v["test_accuracy"] for k, v in st.items()}
    best = max(MATCHED, key=lambda k: acc[k].mean)
    lines.append(f"Among the size-matched rules the highest mean accuracy is {best}'s ({acc[best].mean:.3f}).")
    for k in MATCHED[1:]:
        lines.append(compare(acc[k], acc["random"], k, "random") + ".")
    none_key = next(k for k in st if k.startswith("none"))
    static_key = next(k for k in st if k.startswith("static"))
    lines.append(compare(acc[best], acc[none_key], best, "the no-growth start") + ".")
    lines.append(compare(acc[best], acc[static_key], best, "the static final-size network") + ".")
    lines.append(f"Growing spent {st[best]['macs'].mean / st[static_key]['macs'].mean * 100:.0f}% of the static "
                 "final-size network's MACs (it trains at the small size first).")
    auto_key = next(k for k in st if k.startswith("extrema (auto"))
    auto = st[auto_key]
    lines.append(f"extrema (auto) added {auto['units_added'].mean:.1f} ± {auto['units_added'].std:.1f} units "
                 f"(of {total} allowed) and reached {acc[auto_key].mean:.3f}.")
    return [" ".join(lines)]


def trigger_section(sm: dict, tasks: list[str], s: Settings) -> list[str]:
    out = ["## 3. Triggers, with the same growth rule", "",
           f"Start {list(s.small_2l)}, {s.trigger_epochs} epochs, backprop / sequential / dense; growth `random` "
           f"(split, **{s.trigger_units} units per firing**, `max_total` 1024, no width cap). Triggers at their "
           f"defaults except `every_k` (k={s.trigger_k}). *Growth firings* counts the firings that grew the "
           "network (a firing after the last epoch grows nothing and is not counted). **Accuracy per 10k "
           "params** is `test accuracy / final params x 10^4`, per run, then averaged: it rewards small "
           "networks and says nothing about whether the extra parameters were worth it on their own; "
           "read it together with the accuracy column. *Static net of that size* is a network of the row's "
           "mean final widths (rounded), trained from scratch for the same epochs without growth (seeds "
           "alike): the answer to \"would starting at that size have done as well?\".", ""]
    for task in tasks:
        out += [f"### {task}", ""]
        rows, stats, statics = [], {}, {}
        for label in trigger_rows(s):
            st = sm[("trigger", task, "", label)]
            stats[label] = st
            ref = sm.get(("trigger_static", task, "", label))
            if ref is not None:
                statics[label] = ref
            static_cell = ("same network" if ref is None else
                           f"{f_widths(ref['runs'][0]['meta']['widths'])}: {f_acc(ref['test_accuracy'])}")
            rows.append([label, f_num(st["firings"], 1), f_num(st["units_added"], 0), f_widths(st["widths"]),
                         f_acc(st["test_accuracy"]), f_int(st["params"]), f_num(st["acc_per_10k"], 3),
                         static_cell, f_macs(st["macs"]), f_num(st["wall_s"], 2)])
        out += table(["trigger", "growth firings", "units added", "final widths (mean)", "test accuracy",
                      "params", "accuracy per 10k params", "static net of that size: test accuracy",
                      "MACs (train + eval)", "wall s"], rows)
        out += ["", *trigger_text(stats, statics), ""]
    return out


def trigger_text(st: dict[str, dict[str, Any]], statics: dict[str, dict[str, Any]]) -> list[str]:
    acc = {k: v["test_accuracy"] for k, v in st.items()}
    fired = ", ".join(f"{k} {v['firings'].mean:.1f}" for k, v in st.items() if k != "never")
    best = max(acc, key=lambda k: acc[k].mean)
    eff = max(st, key=lambda k: st[k]["acc_per_10k"].mean)
    every_k = next(k for k in st if k.startswith("every_k"))
    lines = ["**What the numbers say.**", f"Mean growth firings: {fired}.",
             f"Highest mean test accuracy: {best} ({acc[best].mean:.3f}, {st[best]['params'].mean:,.0f} params)."]
    for k in ("grad_variance", "signal_economy", "plateau"):
        lines.append(compare(acc[k], acc[every_k], k, "every_k") + ".")
    if best != "never":
        lines.append(compare(acc[best], acc["never"], best, "never (no growth)") + ".")
    lines.append(f"Highest accuracy per 10k params: {eff} ({st[eff]['acc_per_10k'].mean:.3f}).")
    for k, ref in statics.items():
        static_name = f"a static {f_widths(ref['runs'][0]['meta']['widths'])} network"
        lines.append(compare(acc[k], ref["test_accuracy"], k, static_name) + ".")
    return [" ".join(lines)]


# -------------------------------------------------------------------------------------- the doc


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "principlelab": principlelab.__version__,
            "torch_threads_per_run": 1}


def render(args: argparse.Namespace, s: Settings, sm: dict, plan: dict[str, Any], info: dict[str, Any]) -> str:
    m = info["machine"]
    head = [
        "# Results", "",
        "Generated by `benchmarks/results.py`; do not edit by hand. Rerun with:", "",
        "```bash", info["command"], "```", "",
        f"- date: {info['date']}",
        f"- machine: {m['nproc']} CPU cores ({m['platform']}), Python {m['python']}, torch {m['torch']}, "
        f"principlelab {m['principlelab']}; one torch thread per run, {info['workers']} worker process(es)",
        f"- seeds: {', '.join(str(i) for i in range(args.seeds))} (mean ± sample std over seeds; "
        f"{info['runs']} runs, {info['wall_s']:.0f} s wall in all)",
        f"- tasks: {', '.join(args.tasks)} at full fidelity: the whole training split (digits 1257, mnist1d 3600 "
        "samples), batch 64, no width cap, fixed validation/test splits; the test accuracy is that of the "
        "network after the last epoch (no early stopping)",
        "- every run is a `Trainer(recipe, principles, task).run()` of built-in principles only; MACs are the "
        "library's counts (see [concepts.md](concepts.md#compute-accounting))",
        "- **comparison rule** used in the text: a difference of means counts as larger than seed noise when "
        "it exceeds the larger of the two rows' standard deviations; otherwise it is called *within the seed "
        f"std*. With {args.seeds} seed{'s' if args.seeds != 1 else ''} this is a rough screen, not a "
        "significance test.",
    ]
    if args.quick:
        head += ["- **QUICK MODE** (`--quick`): one seed and a few epochs; a smoke test, not results."]
    body = [*head, "", *compute_section(sm, args.tasks, s, plan), *growth_section(sm, args.tasks, s),
            *trigger_section(sm, args.tasks, s)]
    return "\n".join(body).rstrip() + "\n"


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
