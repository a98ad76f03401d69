"""The results table of docs/principles/connectivity_set.md: dense, sparse_random and SET (both regrowth
inits) at density 0.25, test accuracy of seeds 0-2.

    .venv/bin/python benchmarks/set_table.py          # about a minute on 2 cores

Every run is ``principlelab.run`` with backprop (its defaults), never, none, sequential, the whole
training split, one torch thread.
"""

from __future__ import annotations

import os

import torch

SHAPES = [("digits", [64, 64], 12), ("mnist1d", [128, 128], 30)]
COLUMNS = [("dense", {"name": "dense"}),
           ("sparse_random", {"name": "sparse_random", "config": {"density": 0.25}}),
           ("set (normal)", {"name": "set", "config": {"density": 0.25, "regrow_init": "normal"}}),
           ("set (zero)", {"name": "set", "config": {"density": 0.25, "regrow_init": "zero"}})]
SEEDS = (0, 1, 2)


def main() -> None:
    os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    torch.set_num_threads(1)
    import principlelab

    print("| task | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for task, hidden, epochs in SHAPES:
        cells = []
        for _, connectivity in COLUMNS:
            accuracies = [principlelab.run(task=task, seed=seed, fidelity={"epochs": epochs},
                                           network={"hidden": hidden}, connectivity=connectivity).test_accuracy
                          for seed in SEEDS]
            cells.append(" ".join(f"{a:.3f}".removeprefix("0") for a in accuracies))
        print(f"| {task} {'-'.join(map(str, hidden))}, {epochs} epochs | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
