"""Training-loop throughput: principlelab's Trainer against hand-written PyTorch loops.

Task mnist1d (3600 training samples, 40 features, 10 classes), a 40-256-256-10 ReLU MLP, batch 64,
Adam lr 1e-3, one torch thread. Every variant trains ``--epochs`` epochs from scratch; samples/s is
``epochs * 3600 / wall seconds``, the median over ``--repeats`` runs (repeat ``r`` uses seed ``r``)
after one warm-up epoch of each variant. Variants run round-robin inside each repeat, so slow drift
of the machine spreads over all of them.

Variants:

* ``principlelab``: ``Trainer(recipe, principles, task).run()`` with dense / backprop(adam) / never /
  none / sequential, timed as a whole: per-epoch validation (400 samples) and the final test
  evaluation (1000 samples) included.
* ``principlelab, train only``: the same, but with the validation and test splits cut to one sample,
  so the time is (almost) pure training. Nothing in the library is patched.
* ``plain``: ``nn.Sequential`` of ``Linear``/``ReLU``, ``torch.optim.Adam`` (default options),
  per-epoch ``randperm`` + one gather + slicing, no ``DataLoader``, no ``.item()`` per step. Timed with
  the same per-epoch validation and final test evaluation as the Trainer (``plain``) and without
  (``plain, train only``).
* ``plain, fused AdamW, train only``: the plain loop with the optimizer backprop uses, to isolate the
  Trainer's own per-step overhead.
* ``plain + DataLoader``: the plain loop, training only, fed by
  ``DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)``.
* optimizer variants (skip with ``--no-optimizers``): principlelab, training only, with
  ``backprop``'s optimizer swapped after setup for Adam / AdamW with ``foreach=False``,
  ``foreach=True`` and ``fused=True``.

Train-only runs measure test accuracy after the timer stops. Correctness: pairs that compute the same
thing up to float rounding (principlelab's dense init draws exactly like ``nn.Linear``, and both
loops shuffle with the same generator) must reach mean test accuracies within 0.03; otherwise the
script exits with status 1. Results: ``docs/performance.md``.

Usage::

    .venv/bin/python benchmarks/bench_train_loop.py                # default: 20 epochs, 5 repeats
    .venv/bin/python benchmarks/bench_train_loop.py --epochs 5 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from principlelab.core.recipe import Fidelity, NetworkSpec, Recipe
from principlelab.core.tasks import TaskData, load_task
from principlelab.core.trainer import Trainer, evaluate
from principlelab.plugins.composition.sequential import Sequential
from principlelab.plugins.connectivity.dense import Dense
from principlelab.plugins.growth.none import NoGrowth
from principlelab.plugins.learning.backprop import Backprop
from principlelab.plugins.trigger.never import Never

TASK = "mnist1d"
HIDDEN = (256, 256)
BATCH = 64
LR = 1e-3

# name -> (optimizer class, options); the learning rate is added when building.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "Adam foreach=False": (torch.optim.Adam, {"foreach": False}),
    "Adam foreach=True": (torch.optim.Adam, {"foreach": True}),
    "Adam fused=True": (torch.optim.Adam, {"fused": True}),
    "AdamW foreach=False": (torch.optim.AdamW, {"foreach": False, "weight_decay": 0.0}),
    "AdamW foreach=True": (torch.optim.AdamW, {"foreach": True, "weight_decay": 0.0}),
    "AdamW fused=True": (torch.optim.AdamW, {"fused": True, "weight_decay": 0.0}),
}


@dataclasses.dataclass
class Outcome:
    """One timed run: wall seconds, samples trained, test accuracy, mean loss of the last epoch."""

    seconds: float
    samples: int
    test_accuracy: float
    last_train_loss: float


# ------------------------------------------------------------------------------------ principlelab
def principlelab_run(task: TaskData, epochs: int, seed: int, optimizer: str | None = None,
                     test_on: TaskData | None = None) -> Outcome:
    """Train with principlelab's Trainer; ``optimizer`` names an entry of OPTIMIZERS to swap in.

    ``test_on``: after the timed run, measure test accuracy on this task's test split instead.
    """
    fidelity = Fidelity(epochs=epochs, batch_size=BATCH)
    recipe = Recipe(task=TASK, fidelity=fidelity, seed=seed, network=NetworkSpec(hidden=HIDDEN),
                    learning={"name": "backprop", "config": {"optimizer": "adam", "lr": LR}})
    principles = {"connectivity": Dense(), "learning": Backprop(optimizer="adam", lr=LR), "trigger": Never(),
                  "growth": NoGrowth(), "composition": Sequential()}
    started = time.perf_counter()
    trainer = Trainer(recipe, principles, task)  # type: ignore[arg-type]
    if optimizer is not None:
        cls, options = OPTIMIZERS[optimizer]
        params = trainer.learning._params(trainer.net, trainer.composition)  # type: ignore[attr-defined]
        trainer.learning.optimizer = cls(params, lr=LR, **options)  # type: ignore[attr-defined]
    result = trainer.run()
    seconds = time.perf_counter() - started
    test_acc = result.test_accuracy
    if test_on is not None:
        _, test_acc = evaluate(trainer.learning, trainer.net, trainer.composition, test_on.x_test,
                               test_on.y_test)
    return Outcome(seconds, epochs * task.x_train.shape[0], test_acc, result.epochs[-1].train_loss)


# ------------------------------------------------------------------------------- plain PyTorch
def mlp(in_features: int, num_classes: int) -> nn.Sequential:
    widths = [in_features, *HIDDEN]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


def evaluate_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        scores = model(x)
        loss = F.cross_entropy(scores, y)
        correct = (scores.argmax(1) == y).sum()
    return float(loss), int(correct) / max(1, x.shape[0])


def plain_run(task: TaskData, epochs: int, seed: int, *, loader: str = "slice", validate: bool = True,
              optimizer: str | None = None) -> Outcome:
    """A hand-written loop; ``loader`` is ``"slice"`` (randperm + slicing) or ``"dataloader"``."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = mlp(task.in_features, task.num_classes)
    if optimizer is None:
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    else:
        cls, options = OPTIMIZERS[optimizer]
        opt = cls(model.parameters(), lr=LR, **options)
    x, y = task.x_train, task.y_train
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed + 1)
    if loader == "dataloader":
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH,
                                           shuffle=True, generator=generator)
    last_loss = math.nan
    for _ in range(epochs):
        total = torch.zeros(())
        steps = 0
        if loader == "dataloader":
            batches: Any = data
        else:
            order = torch.randperm(n, generator=generator)
            xs, ys = x[order], y[order]
            batches = ((xs[s:s + BATCH], ys[s:s + BATCH]) for s in range(0, n, BATCH))
        for xb, yb in batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach()
            steps += 1
        last_loss = float(total) / steps  # one host sync per epoch
        if validate:
            evaluate_plain(model, task.x_val, task.y_val)
    seconds = time.perf_counter() - started
    _, test_acc = evaluate_plain(model, task.x_test, task.y_test)
    if validate:  # the whole run includes the final test evaluation, as the Trainer's does
        seconds = time.perf_counter() - started
    return Outcome(seconds, epochs * n, test_acc, last_loss)


# ------------------------------------------------------------------------------------- driver
def tiny_eval(task: TaskData) -> TaskData:
    """``task`` with validation and test cut to one sample: the Trainer's time becomes training time."""
    return dataclasses.replace(task, x_val=task.x_val[:1], y_val=task.y_val[:1], x_test=task.x_test[:1],
                               y_test=task.y_test[:1])


def measure(variants: dict[str, Callable[[int, int], Outcome]], epochs: int, repeats: int,
            log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    for fn in variants.values():  # warm-up: one epoch of each
        fn(1, 0)
    runs: dict[str, list[Outcome]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            runs[name].append(fn(epochs, r))
        log(f"  repeat {r + 1}/{repeats} done")
    summary = {}
    for name, outcomes in runs.items():
        rates = [o.samples / o.seconds for o in outcomes]
        accs = [o.test_accuracy for o in outcomes]
        summary[name] = {
            "samples_per_s": statistics.median(rates),
            "samples_per_s_all": rates,
            "us_per_step": 1e6 * BATCH / statistics.median(rates),
            "test_accuracy_mean": statistics.fmean(accs),
            "last_train_loss_mean": statistics.fmean(o.last_train_loss for o in outcomes),
            "test_accuracy_all": accs,
            "last_train_loss_all": [o.last_train_loss for o in outcomes],
        }
    return summary


ACCURACY_TOLERANCE = 0.03  # test accuracy; runs that differ only in rounding land well within this


def check_correctness(rows: dict[str, dict[str, Any]], opt_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Compare test accuracy and last-epoch loss of runs that should compute the same thing."""
    pairs = [("principlelab", "plain"), ("principlelab, train only", "plain, fused AdamW, train only")]
    pairs += [(name, "AdamW foreach=False") for name in opt_rows if name != "AdamW foreach=False"]
    lines, ok = [], True
    for a, b in pairs:
        ra, rb = (opt_rows if a in opt_rows else rows)[a], (opt_rows if b in opt_rows else rows)[b]
        acc = abs(ra["test_accuracy_mean"] - rb["test_accuracy_mean"])
        loss = max(abs(x - y) for x, y in zip(ra["last_train_loss_all"], rb["last_train_loss_all"]))
        good = acc <= ACCURACY_TOLERANCE
        ok &= good
        lines.append(f"{a} vs {b}: test accuracy {ra['test_accuracy_mean']:.3f} vs "
                     f"{rb['test_accuracy_mean']:.3f}, max |last-epoch loss difference| {loss:.1e} -> "
                     f"{'ok' if good else 'MISMATCH'}")
    return {"ok": ok, "lines": lines}


def table(rows: dict[str, dict[str, Any]], reference: str) -> str:
    """A text table; ``ratio`` is samples/s relative to row ``reference``."""
    ref = rows[reference]["samples_per_s"]
    width = max(len(k) for k in rows)
    lines = [f"{'variant':<{width}}  {'samples/s':>10}  {'us/step':>7}  {'ratio':>5}  {'test acc':>8}  "
             f"{'last loss':>9}  {'samples/s min..max':>19}"]
    for name, row in rows.items():
        rates = row["samples_per_s_all"]
        lines.append(f"{name:<{width}}  {row['samples_per_s']:>10,.0f}  {row['us_per_step']:>7.0f}  "
                     f"{row['samples_per_s'] / ref:>5.2f}  {row['test_accuracy_mean']:>8.3f}  "
                     f"{row['last_train_loss_mean']:>9.4f}  {min(rates):>9,.0f}..{max(rates):<8,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per timed run (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant; the median counts")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    parser.add_argument("--no-optimizers", action="store_true", help="skip the optimizer-variant section")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be >= 1")
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    task = load_task(TASK, fidelity=Fidelity(epochs=args.epochs, batch_size=BATCH), seed=0)
    train_only = tiny_eval(task)
    n = task.x_train.shape[0]
    log(f"{TASK}: {n} train / {task.x_val.shape[0]} val / {task.x_test.shape[0]} test, "
        f"{task.in_features}-{'-'.join(map(str, HIDDEN))}-{task.num_classes}, batch {BATCH}, "
        f"{math.ceil(n / BATCH)} steps/epoch, {args.epochs} epochs x {args.repeats} repeats")

    main_variants: dict[str, Callable[[int, int], Outcome]] = {
        "principlelab": lambda e, s: principlelab_run(task, e, s),
        "principlelab, train only": lambda e, s: principlelab_run(train_only, e, s, test_on=task),
        "plain": lambda e, s: plain_run(task, e, s),
        "plain, train only": lambda e, s: plain_run(task, e, s, validate=False),
        "plain, fused AdamW, train only": lambda e, s: plain_run(task, e, s, validate=False,
                                                                 optimizer="AdamW fused=True"),
        "plain + DataLoader, train only": lambda e, s: plain_run(task, e, s, loader="dataloader",
                                                                 validate=False),
    }
    log("main comparison")
    rows = measure(main_variants, args.epochs, args.repeats, log)
    ratios = {
        "principlelab / plain (whole run, with validation)":
            rows["principlelab"]["samples_per_s"] / rows["plain"]["samples_per_s"],
        "principlelab / plain (train only)":
            rows["principlelab, train only"]["samples_per_s"] / rows["plain, train only"]["samples_per_s"],
        "principlelab / plain with the same fused AdamW (train only)":
            rows["principlelab, train only"]["samples_per_s"]
            / rows["plain, fused AdamW, train only"]["samples_per_s"],
        "plain / plain + DataLoader (train only)":
            rows["plain, train only"]["samples_per_s"]
            / rows["plain + DataLoader, train only"]["samples_per_s"],
    }
    opt_rows: dict[str, dict[str, Any]] = {}
    if not args.no_optimizers:
        log("optimizer variants (principlelab, train only)")
        opt_variants: dict[str, Callable[[int, int], Outcome]] = {
            name: (lambda e, s, name=name: principlelab_run(train_only, e, s, optimizer=name, test_on=task))
            for name in OPTIMIZERS}
        opt_rows = measure(opt_variants, args.epochs, args.repeats, log)

    print(f"\nTraining-loop throughput: {TASK}, {task.in_features}-{'-'.join(map(str, HIDDEN))}-"
          f"{task.num_classes} ReLU MLP, batch {BATCH}, Adam lr {LR:g}, {args.epochs} epochs, "
          f"median of {args.repeats}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{os.cpu_count()} CPU(s)\n")
    print("ratio: samples/s relative to 'plain'; test acc and last loss: means over the repeats\n")
    print(table(rows, "plain"))
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    if opt_rows:
        print("\nOptimizer variants inside principlelab's Trainer, train only (backprop's own choice is "
              "the 'principlelab, train only' row above);\nratio: samples/s relative to "
              "'AdamW foreach=False'\n")
        print(table(opt_rows, "AdamW foreach=False"))
    correctness = check_correctness(rows, opt_rows)
    print("\ncorrectness (same seeds: principlelab's dense init draws exactly like nn.Linear and both "
          "shuffle with the same generator,\nso the runs differ only by float rounding of the optimizer "
          "kernels):")
    for line in correctness["lines"]:
        print(f"  {line}")

    if args.json:
        payload = {
            "config": {"task": TASK, "hidden": HIDDEN, "batch": BATCH, "lr": LR, "epochs": args.epochs,
                       "repeats": args.repeats, "train_samples": n, "threads": torch.get_num_threads(),
                       "cpus": os.cpu_count(), "torch": torch.__version__,
                       "python": platform.python_version(), "machine": platform.machine()},
            "variants": rows, "ratios": ratios, "optimizers": opt_rows, "correctness": correctness,
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
        log(f"wrote {args.json}")
    return 0 if correctness["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
