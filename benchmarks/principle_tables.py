"""The measured numbers of docs/principles/*.md: one function per page, each printing the page's table (and
the numbers its sentences quote) in the page's format.

    .venv/bin/python benchmarks/principle_tables.py --page set       # one page (names: see PAGES)
    .venv/bin/python benchmarks/principle_tables.py --page all       # every page, about a minute on 2 cores
    .venv/bin/python benchmarks/principle_tables.py --page all --quick   # seed 0, 2 epochs: a smoke test

Every run trains through ``Trainer`` with the principles the registry builds from the recipe (what
``principlelab.run`` does), the whole training split unless a page says otherwise, batch 64, one torch
thread. Unnamed slots take the recipe defaults: dense / backprop (adam, lr 3e-3) / never / none / sequential.
Wall times measure this machine; accuracies and counts are deterministic.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

QUICK = False  # --quick: seed 0 only, every run cut to 2 epochs


def seeds(n: int) -> range:
    return range(1 if QUICK else n)


def fit(seed: int, *, epochs: int, hidden: list[int], task: str = "digits", data_fraction: float = 1.0,
        activation: str = "relu", **slots: Any) -> tuple[Any, dict[str, Any], Any]:
    """Train one recipe; returns the result, the principles and the trainer (for a principle's own state)."""
    from principlelab.core.recipe import make_recipe
    from principlelab.core.tasks import load_task
    from principlelab.core.trainer import Trainer
    from principlelab.registry import get_registry

    recipe = make_recipe({"task": task, "seed": seed, "network": {"hidden": hidden, "activation": activation},
                          "fidelity": {"epochs": 2 if QUICK else epochs, "data_fraction": data_fraction},
                          **slots})
    principles = get_registry().instantiate(recipe)
    trainer = Trainer(recipe, principles, load_task(task, fidelity=recipe.fidelity, seed=seed))
    return trainer.run(), principles, trainer


def runs(n_seeds: int, **kwargs: Any) -> list[Any]:
    return [fit(seed, **kwargs)[0] for seed in seeds(n_seeds)]


# ------------------------------------------------------------------------------------------ formatting
def table(header: list[str], rows: list[list[Any]]) -> None:
    """A markdown table, as the pages write them."""
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


def accs(results: list[Any], sep: str = ", ", short: bool = False) -> str:
    """Test accuracies to 3 decimals (``short``: without the leading 0, ``.956``)."""
    text = [f"{r.test_accuracy:.3f}" for r in results]
    return sep.join(t.removeprefix("0") if short else t for t in text)


def mean(results: list[Any]) -> str:
    return f"{statistics.mean(r.test_accuracy for r in results):.3f}"


def wall(results: list[Any]) -> str:
    """Seconds per run: ``≈m`` when the runs agree within 30 %, else the range."""
    times = [r.wall_s for r in results]
    lo, hi = min(times), max(times)
    def num(x: float) -> str:
        return f"{x:.1f}" if x >= 0.095 else f"{x:.2f}"
    return f"≈{num(statistics.mean(times))}" if hi <= 1.3 * lo else f"{num(lo)}-{num(hi)}"


def overhead(label: str, base: dict[str, Any], other: dict[str, Any], **kwargs: Any) -> None:
    """Wall time of ``other`` against ``base``: the sum over seeds 0-4, the two interleaved."""
    totals = [0.0, 0.0]
    for seed in seeds(5):
        for i, slots in enumerate((base, other)):
            totals[i] += fit(seed, **kwargs, **slots)[0].wall_s
    print(f"{label}: {100 * (totals[1] / totals[0] - 1):+.0f} % wall time")


def units(result: Any) -> int:
    return sum(result.widths[1:-1])


EVERY_2 = {"name": "every_k", "config": {"k": 2}}


# ---------------------------------------------------------------------------------------- the pages
def set_page() -> None:
    """connectivity_set.md, "Results", and the cost of rewiring."""
    columns = [("dense", {"name": "dense"}),
               ("sparse_random", {"name": "sparse_random", "config": {"density": 0.25}}),
               ("set (normal)", {"name": "set", "config": {"density": 0.25, "regrow_init": "normal"}}),
               ("set (zero)", {"name": "set", "config": {"density": 0.25, "regrow_init": "zero"}})]
    rows, means = [], []
    for task, hidden, epochs in [("digits", [64, 64], 12), ("mnist1d", [128, 128], 30)]:
        cells = [runs(3, task=task, hidden=hidden, epochs=epochs, connectivity=c) for _, c in columns]
        rows.append([f"{task} {'-'.join(map(str, hidden))}, {epochs} epochs", *(accs(c, " ", True) for c in cells)])
        means.append(f"{task} {mean(cells[2])} and {mean(cells[3])}")
    table(["task", *(name for name, _ in columns)], rows)
    print("\nset (normal) and set (zero), mean of the 3 seeds: " + "; ".join(means))
    overhead("set against sparse_random, mnist1d 256-256, 10 epochs", {"connectivity": "sparse_random"},
             {"connectivity": "set"}, task="mnist1d", hidden=[256, 256], epochs=10)


def extrema_page() -> None:
    """growth_extrema.md, "Measured"."""
    rows = [("none", {"name": "none"}, "relu", ""),
            ("extrema defaults (auto → dead/always_max, vertical clone up)", {"name": "extrema"}, "relu", ""),
            ("extrema `operator=split`", {"name": "extrema", "config": {"operator": "split"}}, "relu", ""),
            ("extrema defaults, tanh", {"name": "extrema"}, "tanh", ": no unit saturates on ≥ 50 %")]
    out = []
    for label, growth, activation, note in rows:
        results = runs(3, hidden=[32, 32], epochs=8, activation=activation, growth=growth, trigger=EVERY_2)
        events = sorted({len(r.growth_events) for r in results})
        out.append([label, accs(results), "/".join(map(str, sorted({units(r) for r in results}))),
                    "/".join(map(str, events)) + (note if events == [0] else "")])
    table(["growth", "test accuracy (seeds 0, 1, 2)", "hidden units", "events"], out)


def soft_clamp_page() -> None:
    """learning_soft_clamp.md, "Results", and the cost of clamping."""
    learners = [("backprop", "backprop"), ("soft_clamp (defaults)", "soft_clamp"),
                ("decay 0.2", {"name": "soft_clamp", "config": {"decay": 0.2}})]
    for task, hidden, epochs in [("digits", [64, 64], 12), ("mnist1d", [128, 128], 30)]:
        print(f"- {task}, {'-'.join(map(str, hidden))}, {epochs} epochs:")
        for label, learning in learners:
            print(f"  - {label} " + accs(runs(3, task=task, hidden=hidden, epochs=epochs, learning=learning),
                                         " / ", True))
    overhead("soft_clamp against backprop, mnist1d 256-256, 10 epochs, Adam", {"learning": "backprop"},
             {"learning": "soft_clamp"}, task="mnist1d", hidden=[256, 256], epochs=10)


def snapshots_page() -> None:
    """composition_snapshots.md, "Measured": the composition, and each part alone for seed 0."""
    rows, shapes, walls = [], set(), []
    for label, composition in [("snapshots, residual (default)", "snapshots"),
                               ("snapshots, residual, decay 0.5",
                                {"name": "snapshots", "config": {"refinement_decay": 0.5}}),
                               ("snapshots, ensemble", {"name": "snapshots", "config": {"mode": "ensemble"}}),
                               ("sequential (same growth)", "sequential")]:
        results, parts = [], "-"
        for seed in seeds(3):
            result, principles, trainer = fit(seed, hidden=[32], epochs=10, trigger=EVERY_2,
                                              growth={"name": "random", "config": {"units": 8}},
                                              composition=composition)
            results.append(result)
            comp = principles["composition"]
            if hasattr(comp, "snapshots"):
                shapes.add((result.widths[1], len(result.growth_events), len(comp.snapshots)))
                if seed == 0:
                    scores = comp.evaluate_parts(trainer.net, trainer.task.x_test)
                    parts = ", ".join(f"{float((s.argmax(1) == trainer.task.y_test).float().mean()):.3f}"
                                      for s in scores)
        walls += [r.wall_s for r in results]
        rows.append([label, accs(results), parts])
    table(["composition", "test accuracy (seeds 0, 1, 2)", "parts (seed 0)"], rows)
    print("\n(final width, growth events, snapshots) of the snapshot runs: "
          f"{sorted(shapes)}; mean wall per run {statistics.mean(walls):.2f} s")


def capsule_routing_page() -> None:
    """composition_capsule_routing.md, "Measured"."""
    rows = []
    for label, hidden, epochs, composition in [
            ("hidden (64,), 10 epochs, default routing", [64], 10, "capsule_routing"),
            ("hidden (64,), 10 epochs, `routing_iterations=0`", [64], 10,
             {"name": "capsule_routing", "config": {"routing_iterations": 0}}),
            ("hidden (256, 256), 30 epochs (default recipe)", [256, 256], 30, "capsule_routing"),
            ("sequential baseline, hidden (256, 256), 30 epochs", [256, 256], 30, "sequential")]:
        results = runs(3, hidden=hidden, epochs=epochs, composition=composition)
        rows.append([label, accs(results), wall(results)])
    table(["setup", "test accuracy (seeds 0, 1, 2)", "wall s/run"], rows)


def forward_forward_page() -> None:
    """learning_forward_forward.md, "Measured", and the means and the cost its decisions quote."""
    from principlelab.core.network import Network
    from principlelab.plugins.learning.forward_forward import ForwardForward

    rows = []
    for label, hidden, epochs, fraction in [("2x256, 10", [256, 256], 10, 1.0), ("2x256, 30", [256, 256], 30, 1.0),
                                            ("3x128, 10", [128] * 3, 10, 1.0),
                                            ("1x32, 8 epochs, half the data (the conformance kit's tiny run)",
                                             [32], 8, 0.5)]:
        results = runs(5, hidden=hidden, epochs=epochs, data_fraction=fraction, learning="forward_forward")
        rows.append([label, accs(results), mean(results), wall(results) + " s"])
    table(["network, epochs", "test accuracy (seeds 0..4)", "mean", "wall per run"], rows)
    print("\nMean test accuracy, seeds 0-2, 10 epochs:")
    for label, hidden, config in [("2x256, defaults", [256, 256], {}),
                                  ("2x256, hidden_norm=unit", [256, 256], {"hidden_norm": "unit"}),
                                  ("2x256, input_norm=unit", [256, 256], {"input_norm": "unit"}),
                                  ("2x256, input_norm=none", [256, 256], {"input_norm": "none"}),
                                  ("2x256, skip_first_layer_goodness", [256, 256], {"skip_first_layer_goodness": True}),
                                  ("3x128, defaults", [128] * 3, {}),
                                  ("3x128, skip_first_layer_goodness", [128] * 3, {"skip_first_layer_goodness": True})]:
        learning = {"name": "forward_forward", "config": config}
        print(f"- {label}: {mean(runs(3, hidden=hidden, epochs=10, learning=learning))}")
    print(f"- backprop (defaults), 2x256, seeds 0-4: {mean(runs(5, hidden=[256, 256], epochs=10))}")
    net = Network([64, 256, 256, 10], generator=torch.Generator().manual_seed(0))
    ratio = ForwardForward().macs_per_sample(net, None) / sum(b.active_weights() for b in net.layers[:-1])
    print(f"- training MACs per sample, 2x256 on digits: {ratio:.2f}x the hidden forward MACs")


def katz_page() -> None:
    """growth_katz.md, "Measured": the solver's time on two networks, then growth on digits."""
    from principlelab.core.katz import katz_centrality, network_adjacency
    from principlelab.core.network import Network

    def timed(net: Network, method: str) -> float:
        """The best of 5 calls, seconds."""
        best = float("inf")
        for _ in range(1 if QUICK else 5):
            start = time.perf_counter()
            katz_centrality(net, alpha=0.1, method=method)  # type: ignore[arg-type]
            best = min(best, time.perf_counter() - start)
        return best

    g = torch.Generator().manual_seed(0)
    net = Network([64, 256, 256, 256, 10], generator=g)
    print(f"- Katz on a 64-256-256-256-10 MLP ({sum(net.widths)} units, {network_adjacency(net)[0].nnz} edges): "
          f"recursion {1e3 * timed(net, 'recursion'):.2g} ms; sparse path {1e3 * timed(net, 'sparse'):.2g} ms")
    for density in (0.02, 0.05):
        net = Network([64, *[1000] * 10, 10], generator=g)
        for block in net.layers[1:-1]:
            block.mask = (torch.rand(block.weight.shape, generator=g) < density).float()
        net._changed()
        print(f"- Katz on {sum(net.widths)} units at {density:.0%} density ({network_adjacency(net)[0].nnz} "
              f"edges): recursion {timed(net, 'recursion'):.2g} s, sparse {timed(net, 'sparse'):.2g} s")
    print("- Digits, hidden (32, 32) ReLU, 8 epochs, `every_k` k=2. Test accuracy for seeds 0, 1, 2:")
    for label, growth in [("`katz` defaults", "katz"),
                          ("`katz` `split`, out-influence",
                           {"name": "katz", "config": {"operator": "split", "influence": "out"}}),
                          ("`none`", "none")]:
        results = runs(3, hidden=[32, 32], epochs=8, growth=growth, trigger=EVERY_2)
        grown = "/".join(map(str, sorted({units(r) for r in results})))
        print(f"  - {label}: {accs(results)}" + (f"; 64 → {grown} hidden units" if growth != "none" else ""))


def signal_economy_page() -> None:
    """trigger_signal_economy.md, "Observed behaviour": seed 0, random growth of 8 units, defaults."""
    for task, hidden, epochs in [("mnist1d", [128, 128], 30), ("digits", [64, 64], 12)]:
        result, principles, _ = fit(0, task=task, hidden=hidden, epochs=epochs, trigger="signal_economy",
                                    growth={"name": "random", "config": {"units": 8}})
        log, trigger = principles["trigger"].log, principles["trigger"]

        def count(kind: str, signal: str | None = None, log: list[dict[str, Any]] = log) -> int:
            return sum(e["kind"] == kind and signal in (None, e["signal"]) for e in log)

        found = sorted({e["reason"].split(": ", 1)[1].split(" (")[0]
                        for e in log if e["kind"] == "earn" and e["signal"] == "cit"})
        values = ", ".join(f"{s} {trigger.base[s]:g} → {trigger.values[s]:.2g}" for s in trigger.base)
        baseline = fit(0, task=task, hidden=hidden, epochs=epochs)[0]
        print(f"- {task} {'-'.join(map(str, hidden))} ReLU, {epochs} epochs: {trigger.fired} firings "
              f"({len(result.growth_events)} growth events); {count('earn', 'spike')} spikes, "
              f"{count('earn', 'plateau')} plateaus; {count('purchase')} CIT purchases, {count('earn', 'cit')} "
              f"found a boundary {found}; {count('revaluation')} revaluations: {values}; test accuracy "
              f"{result.test_accuracy:.3f}, {baseline.test_accuracy:.3f} without growth (never / none)")


def sparse_random_page() -> None:
    """connectivity_sparse_random.md: the realised density of a small block at density 0.02."""
    from principlelab.core.recipe import NetworkSpec
    from principlelab.registry import get_registry

    net = get_registry().get("connectivity", "sparse_random")(density=0.02).build(
        NetworkSpec(hidden=(256, 256)), in_features=64, num_classes=10, width_cap=None,
        generator=torch.Generator().manual_seed(0))
    print(f"64 -> 256 block at density 0.02 (first block of 64-256-256-10, seed 0): "
          f"{float(net.layers[0].mask.mean()):.3f}")


def backprop_page() -> None:
    """learning_backprop.md: the default lr on mnist1d 256-256, 30 epochs (seeds 0-2)."""
    print("mnist1d 256-256, 30 epochs: " + accs(runs(3, task="mnist1d", hidden=[256, 256], epochs=30)))


def grad_variance_page() -> None:
    """trigger_grad_variance.md: how often `change > 0.5` holds on i.i.d. Gaussian norms (no training)."""
    from scipy import stats

    for window in (10, 50):
        f = stats.f(window - 1, window - 1)
        print(f"windows of {window}: P(change > 0.5) = {f.sf(1.5) + f.cdf(0.5):.2f}")


PAGES: dict[str, Callable[[], None]] = {
    "set": set_page, "extrema": extrema_page, "soft_clamp": soft_clamp_page, "snapshots": snapshots_page,
    "capsule_routing": capsule_routing_page, "forward_forward": forward_forward_page, "katz": katz_page,
    "signal_economy": signal_economy_page, "grad_variance": grad_variance_page,
    "sparse_random": sparse_random_page, "backprop": backprop_page}


def main() -> None:
    global QUICK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", required=True, choices=[*PAGES, "all"])
    parser.add_argument("--quick", action="store_true", help="seed 0 only, 2 epochs per run (a smoke test)")
    args = parser.parse_args()
    QUICK = args.quick
    os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    torch.set_num_threads(1)
    for name, page in PAGES.items():
        if args.page in (name, "all"):
            print(f"## {name}\n" if args.page == "all" else "", end="")
            page()
            print()


if __name__ == "__main__":
    main()
