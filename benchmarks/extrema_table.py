"""The "Measured" table of docs/principles/growth_extrema.md: extrema growth on digits, seeds 0-2.

    .venv/bin/python benchmarks/extrema_table.py          # a few seconds

Every run is ``principlelab.run``: hidden (32, 32), 8 epochs, dense / backprop (defaults) / every_k k=2 /
sequential, the whole training split, one torch thread.
"""

from __future__ import annotations

import os

import torch

ROWS = [("none", {"name": "none"}, "relu"),
        ("extrema defaults (auto → dead/always_max, vertical clone up)", {"name": "extrema"}, "relu"),
        ("extrema `operator=split`", {"name": "extrema", "config": {"operator": "split"}}, "relu"),
        ("extrema defaults, tanh", {"name": "extrema"}, "tanh")]


def main() -> None:
    os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    torch.set_num_threads(1)
    import principlelab

    print("| growth | test accuracy (seeds 0, 1, 2) | hidden units | events |")
    print("|---|---|---|---|")
    for label, growth, activation in ROWS:
        results = [principlelab.run(task="digits", seed=seed, fidelity={"epochs": 8},
                                    network={"hidden": [32, 32], "activation": activation}, growth=growth,
                                    trigger={"name": "every_k", "config": {"k": 2}}) for seed in (0, 1, 2)]
        units = {sum(r.widths[1:-1]) for r in results}
        events = {len(r.growth_events) for r in results}
        print(f"| {label} | {', '.join(f'{r.test_accuracy:.3f}' for r in results)} | "
              f"{'/'.join(map(str, sorted(units)))} | {'/'.join(map(str, sorted(events)))} |")


if __name__ == "__main__":
    main()
