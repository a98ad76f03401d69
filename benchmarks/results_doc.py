"""``docs/results.md`` from the runs of ``benchmarks/results.py``: mean ± std over seeds per row,
the three tables and the sentences under them (every number in them computed from the runs)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from results_rows import CAPSULE_R0, CAPSULE_R3, MATCHED, Settings, compute_methods, growth_rows, trigger_rows

import principlelab
from principlelab.registry import get_registry

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
           "*params (all)* is `RunResult.params`, the parameters the predictions use: the network's "
           "active parameters plus those the composition or learning rule owns (the capsule head's "
           "projection and transforms; forward_forward's label embedding). The capsule and forward_forward "
           "runs never use the network's output layer, so it is not counted. *params (network)* is the "
           "network's part alone.", ""]
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
           "network (a firing after the last epoch or on the last training step grows nothing and is not "
           "counted). **Accuracy per 10k "
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


