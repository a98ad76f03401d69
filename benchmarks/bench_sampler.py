"""What sampling one campaign trial costs: ``SearchSpace.suggest`` over every built-in principle,
in memory (no storage), after N finished trials, for Optuna's TPE, principlelab's
``SplitOnceTPESampler`` (both with the campaign's arguments: independent TPE) and random sampling
(mean over the last 20 trials).

    .venv/bin/python benchmarks/bench_sampler.py --trials 60 300
    .venv/bin/python benchmarks/bench_sampler.py --trials 1000 2000 --samplers principlelab --pruner hyperband
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import time

import optuna


def ms_per_trial(space: object, sampler: optuna.samplers.BaseSampler, trials: int,
                 pruner: optuna.pruners.BasePruner | None = None) -> tuple[float, float]:
    """Mean ms of ``space.suggest`` and mean parameters sampled, over the last 20 of ``trials`` trials."""
    from principlelab.errors import ConfigError

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name="bench-sampler")
    rng = random.Random(0)
    times, counts = [], []
    for _ in range(trials):
        trial = study.ask()
        started = time.perf_counter()
        with contextlib.suppress(ConfigError):  # a rejected combination
            space.suggest(trial)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        counts.append(len(trial.params))
        study.tell(trial, rng.random())
    return 1000 * sum(times[-20:]) / 20, sum(counts[-20:]) / 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[60, 300], help="study sizes to measure")
    parser.add_argument("--samplers", nargs="+", choices=["optuna", "principlelab", "random"],
                        default=["optuna", "principlelab", "random"],
                        help="which to measure: Optuna's TPESampler, SplitOnceTPESampler, RandomSampler")
    parser.add_argument("--pruner", choices=["none", "hyperband", "optuna-hyperband"], default="none",
                        help="the study's pruner: with Hyperband (the campaign default) Optuna hands TPE a bracket "
                             "study for each parameter, which reads the storage anew (no trial reports, so none "
                             "is pruned); hyperband is the campaign's (BracketReusingHyperbandPruner, which "
                             "builds each bracket's study once), optuna-hyperband Optuna's HyperbandPruner")
    args = parser.parse_args()
    os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    from principlelab.registry import get_registry
    from principlelab.studies.hyperband import BracketReusingHyperbandPruner
    from principlelab.studies.optuna_setup import quiet_optuna, tpe_arguments
    from principlelab.studies.space import SearchSpace
    from principlelab.studies.tpe import SplitOnceTPESampler

    quiet_optuna()
    space = SearchSpace(get_registry())
    tpe_args = tpe_arguments(0, workers=1)  # the campaign's (independent TPE), for both TPE samplers
    samplers = {"optuna": ("optuna TPESampler", lambda: optuna.samplers.TPESampler(**tpe_args)),
                "principlelab": ("SplitOnceTPESampler", lambda: SplitOnceTPESampler(**tpe_args)),
                "random": ("RandomSampler", lambda: optuna.samplers.RandomSampler(seed=0))}
    hyperband = {"hyperband": BracketReusingHyperbandPruner, "optuna-hyperband": optuna.pruners.HyperbandPruner,
                 "none": None}[args.pruner]
    print(f"{'sampler':<22} {'trials':>7} {'ms per trial':>13} {'params per trial':>17}")
    for n in args.trials:
        for name, make in (samplers[key] for key in args.samplers):
            pruner = hyperband(min_resource=1, max_resource=8) if hyperband else None
            ms, params = ms_per_trial(space, make(), n, pruner)
            print(f"{name:<22} {n:>7} {ms:>13.1f} {params:>17.1f}")

if __name__ == "__main__":
    main()
