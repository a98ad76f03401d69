"""How much of a coarse campaign is machinery (Optuna, leaderboard writes, signals, progress)?

For each storage (SQLite file; PostgreSQL when --postgres URL or $PRINCIPLELAB_TEST_POSTGRES_URL is
given) this runs the first (coarse) level of a campaign (by default shaped like examples/quickstart.toml's),
with and without sampling ahead (studies/sample_ahead.py: a second process samples the next trial
and writes the last one's results while this one trains), and reports coarse trials per minute, the
machinery share (1 - training time / trial time, where training time is the Trainer's own wall time
of each run), and Optuna's per-trial cost with an empty objective on the same storage.

    .venv/bin/python benchmarks/bench_campaign.py --trials 40
    .venv/bin/python benchmarks/bench_campaign.py --trials 40 --postgres postgresql+psycopg://postgres@127.0.0.1:54329/plab_test

With --shared the level runs as one worker of a campaign that several workers share on PostgreSQL
(``plab worker`` alone on its machine): TPE's constant liar, a pruner that reads other workers' reports.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
import torch

CAMPAIGN = """
name = "{name}"
tasks = ["{task}"]
optuna_storage = "{kind}"
[network]
hidden = {hidden}
[[levels]]
name = "coarse"
data_fraction = {data_fraction}
epochs = {epochs}
width_cap = {width_cap}
trials = {trials}
sampler = "{sampler}"
pruner = "{pruner}"
[[levels]]
name = "fine"
epochs = 30
seeds = 3
"""


def empty_objective_ms(url: str, n: int, kind: str = "journal") -> float:
    """Optuna's own cost per trial on ``url``: random sampler, one float parameter, no training."""
    from principlelab.studies.optuna_setup import make_storage, quiet_optuna

    quiet_optuna()
    storage = make_storage(url, kind=kind) if url != "memory" else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=f"empty-{uuid.uuid4().hex[:8]}",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)  # warm-up
    started = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
    return (time.perf_counter() - started) / n * 1000


def warm_up() -> None:
    """Import and first-call costs (torch's optimizer machinery, sklearn) belong to a worker's start, not to
    its trials: a worker is long-lived, so train one tiny recipe before measuring."""
    import principlelab

    principlelab.run(task="digits", fidelity={"epochs": 1, "data_fraction": 0.1}, network={"hidden": [8]},
                     learning={"name": "backprop", "config": {"optimizer": "sgd"}})
    principlelab.run(task="digits", fidelity={"epochs": 1, "data_fraction": 0.1}, network={"hidden": [8]})


@contextmanager
def timed_phases() -> Iterator[dict[str, float]]:
    """Seconds spent in training (``Trainer.run`` without the pruning callback), sampling
    (``SearchSpace.suggest``), the pruner (the pruning callback: reports and decisions), the
    leaderboard write, the trial's setup (its task, loaded once per level and copied for each trial,
    and building its network: ``Trainer``'s constructor), waiting for the sampling process
    (``SampleAhead.receive``) and the journal (reads with their replay, and appends, outside the
    phases before), summed while the block runs; the SQL statements this process sends, all of them
    and the journal's reads outside its appends; and the time of the garbage collector's runs, which
    happen inside the other phases (``gc`` is not a phase of its own)."""
    from principlelab.core.trainer import Trainer
    from principlelab.studies.journal import SQLJournalBackend
    from principlelab.studies.journal_batch import BatchedTrialWrites
    from principlelab.studies.objective import Objective, PruningCallback
    from principlelab.studies.sample_ahead import SampleAhead
    from principlelab.studies.space import SearchSpace

    spent = dict.fromkeys(["run", "sampling", "pruner", "leaderboard", "setup", "wait", "journal", "statements",
                           "journal_reads", "gc"], 0.0)
    targets = [(Trainer, "run", "run"), (SearchSpace, "suggest", "sampling"),
               (PruningCallback, "on_epoch_end", "pruner"), (Objective, "_record", "leaderboard"),
               (Objective, "_task", "setup"), (Trainer, "__init__", "setup"), (SampleAhead, "receive", "wait"),
               (BatchedTrialWrites, "_sync_with_backend", "journal"), (SQLJournalBackend, "append_logs", "journal")]
    originals = [(cls, attr, getattr(cls, attr)) for cls, attr, _ in targets]
    inside = [0]  # phases open: the journal counts only outside them

    def timer(fn: Any, phase: str) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if phase == "journal" and inside[0]:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            inside[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                inside[0] -= 1
                spent[phase] += time.perf_counter() - started
        return timed

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        spent["statements"] += 1  # every SQL statement this process sends (BEGIN and COMMIT included)
        # a read of the journal outside an append (an append's read back, on SQLite, has a LIMIT)
        spent["journal_reads"] += statement.startswith("SELECT id, body FROM") and "LIMIT" not in statement

    for (cls, attr, phase), (_, _, fn) in zip(targets, originals):
        setattr(cls, attr, timer(fn, phase))
    collecting = [0.0]

    def garbage_collection(phase: str, info: dict[str, int]) -> None:  # inside whichever phase it interrupts
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            spent["gc"] += time.perf_counter() - collecting[0]

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    gc.callbacks.append(garbage_collection)
    try:
        yield spent
    finally:
        gc.callbacks.remove(garbage_collection)
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
        for cls, attr, fn in originals:
            setattr(cls, attr, fn)
        spent["training"] = spent.pop("run") - spent["pruner"]


def coarse_level(url: str, trials: int, sampler: str, pruner: str, kind: str, shape: argparse.Namespace,
                 name: str, sample_ahead: bool = False, shared: bool = False,
                 freeze_gc: bool = True) -> dict[str, Any]:
    """Run the coarse level of campaign ``name`` once; return trials/min, machinery share and per-trial times (ms).

    Training is the time inside ``Trainer.run`` less the pruning callback; the machinery is everything
    else in the level's wall time (sampling, storage, pruner, leaderboard writes, building the
    trainer). The name is fixed so reruns sample and prune alike (Hyperband assigns brackets by study name).
    With ``sample_ahead`` the times are the worker's: what the sampling process does while it trains
    is off its path (and on the machine's other core). With ``shared`` the runner is one of several
    workers of the campaign (``plab worker`` alone on its machine): TPE's constant liar, and a pruner that
    reads other workers' reports during training. With ``freeze_gc`` (the default, as ``plab``'s workers
    do) the first level keeps the garbage collector off every object alive then (studies/gc_freeze.py).
    """
    from principlelab.registry import get_registry
    from principlelab.studies.campaign import CampaignRunner
    from principlelab.studies.campaign_file import parse_campaign

    text = CAMPAIGN.format(name=name, trials=trials, sampler=sampler, pruner=pruner,
                           kind=kind, task=shape.task, hidden=json.dumps(shape.hidden), epochs=shape.epochs,
                           data_fraction=shape.data_fraction, width_cap=shape.width_cap)
    runner = CampaignRunner(parse_campaign(text), text, url, registry=get_registry(), sample_ahead=sample_ahead,
                            workers=2 if shared else 1, local_workers=1, freeze_gc=freeze_gc)
    ctx = runner.context(shape.task, 0)
    study = runner.study(ctx)
    cpu_before = cpu_seconds()
    with timed_phases() as spent:
        started = time.perf_counter()
        runner.run_level(ctx, study)
        total = time.perf_counter() - started
    worker_cpu, helper_cpu = (after - before for after, before in zip(cpu_seconds(), cpu_before))
    runs = runner.db.runs_for_study_version(ctx.study_version_id)
    n, train = len(runs), spent["training"]
    other = total - train - sum(spent[k] for k in ("sampling", "pruner", "leaderboard", "setup", "wait", "journal"))
    return {"trials": n, "total_s": total, "trials_per_min": 60 * n / total,
            "train_ms_per_trial": 1000 * train / n,
            "machinery_ms_per_trial": 1000 * (total - train) / n,
            "machinery_share": 1 - train / total,
            "sampling_ms": 1000 * spent["sampling"] / n, "pruner_ms": 1000 * spent["pruner"] / n,
            "leaderboard_ms": 1000 * spent["leaderboard"] / n, "setup_ms": 1000 * spent["setup"] / n,
            "wait_ms": 1000 * spent["wait"] / n, "journal_ms": 1000 * spent["journal"] / n,
            "other_ms": 1000 * other / n, "gc_ms": 1000 * spent["gc"] / n,
            "sql_statements_per_trial": spent["statements"] / n,
            "journal_reads_per_trial": spent["journal_reads"] / n,
            "worker_cpu_ms": 1000 * worker_cpu / n, "sampling_process_cpu_ms": 1000 * helper_cpu / n,
            "statuses": {s: sum(1 for r in runs if r.status == s) for s in {r.status for r in runs}}}


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process and by its finished child processes
    (the sampling process of :mod:`principlelab.studies.sample_ahead` is joined when its level ends)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measure(url: str, database: str, ahead: str, args: argparse.Namespace,
            results: dict[str, dict[str, Any]]) -> None:
    """Measure every Optuna storage kind on ``url`` (a database of its own per sampling mode: the
    study names, and with them Hyperband's brackets, are the same in both modes)."""
    for kind in args.optuna_storage:
        # a worker is long-lived: its first trials on a storage pay one-off costs (SQLAlchemy
        # compiles and caches each statement once); warm up on another study of the same storage
        coarse_level(url, 5, args.sampler, args.pruner, kind, args, name=f"warm-up-{kind}", sample_ahead=ahead == "on",
                     shared=args.shared, freeze_gc=args.gc_freeze)
        levels = [coarse_level(url, args.trials, args.sampler, args.pruner, kind, args,
                               name=f"bench-{kind}-{repeat}", sample_ahead=ahead == "on", shared=args.shared,
                               freeze_gc=args.gc_freeze)
                  for repeat in range(args.repeats)]
        median = sorted(levels, key=lambda r: r["machinery_share"])[len(levels) // 2]
        label = f"{database}/{kind}" + ("/shared" if args.shared else "") + ("/ahead" if ahead == "on" else "")
        results[label] = {"empty_objective_ms": empty_objective_ms(url, 50, kind), **median,
                          "levels": levels}  # in repeat order: compare two runs level by level


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server of ``server_url``, dropped afterwards."""
    name = f"plab_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield str(sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--task", default="digits", help="the coarse level's task (default digits)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 32], help="initial hidden widths")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--data-fraction", type=float, default=0.5)
    parser.add_argument("--width-cap", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1, help="coarse levels per storage (median reported)")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--pruner", default="hyperband")
    parser.add_argument("--postgres", default=os.environ.get("PRINCIPLELAB_TEST_POSTGRES_URL"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--optuna-storage", nargs="+", default=["journal", "rdb"], choices=["journal", "rdb"],
                        help="Optuna storage kinds to measure (default both)")
    parser.add_argument("--sample-ahead", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="measure without and/or with sampling ahead (default both)")
    parser.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                        help="leave the garbage collector on the worker's long-lived objects, as before the ninth "
                             "round (plab's workers freeze them: studies/gc_freeze.py)")
    parser.add_argument("--shared", action="store_true",
                        help="run the level as one worker of a campaign several workers share (plab worker alone "
                             "on its machine); PostgreSQL only, the SQLite runs are skipped")
    args = parser.parse_args()
    if args.shared and not args.postgres:
        parser.error("--shared measures a worker of a PostgreSQL campaign: give --postgres URL")
    torch.set_num_threads(1)
    os.environ.setdefault("PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    warm_up()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["memory"] = {"empty_objective_ms": empty_objective_ms("memory", 100)}
        for ahead in args.sample_ahead if not args.shared else ():
            measure(f"sqlite:///{tmp}/bench-{ahead}.db", "sqlite", ahead, args, results)
    if args.postgres:  # created after the SQLite runs: CREATE DATABASE's checkpoint I/O would slow them
        for ahead in args.sample_ahead:
            with postgres_database(args.postgres) as url:
                measure(url, "postgresql", ahead, args, results)
    print(f"coarse level: {args.task}, hidden {args.hidden}, {args.data_fraction:.0%} data, {args.epochs} epochs, "
          f"width cap {args.width_cap}, {args.trials} trials, "
          f"{args.sampler} sampler, {args.pruner} pruner, torch {torch.__version__}, 1 thread")
    print(f"{'storage':<32} {'optuna empty':>12} {'trials/min':>10} {'train ms':>9} {'machinery ms':>12} "
          f"{'share':>6} | {'sampling':>8} {'pruner':>7} {'leaderb.':>8} {'setup':>6} {'wait':>5} {'journal':>7} "
          f"{'other':>6} {'(GC)':>5} | "
          f"{'CPU: worker':>11} {'sampling proc.':>14} | {'SQL':>5} {'reads':>5}  (ms or statements per trial)")
    for kind, r in results.items():
        if "trials" not in r:
            print(f"{kind:<32} {r['empty_objective_ms']:>12.1f}")
            continue
        print(f"{kind:<32} {r['empty_objective_ms']:>12.1f} {r['trials_per_min']:>10.0f} "
              f"{r['train_ms_per_trial']:>9.1f} {r['machinery_ms_per_trial']:>12.1f} {r['machinery_share']:>6.1%} | "
              f"{r['sampling_ms']:>8.1f} {r['pruner_ms']:>7.1f} {r['leaderboard_ms']:>8.1f} {r['setup_ms']:>6.1f} "
              f"{r['wait_ms']:>5.1f} {r['journal_ms']:>7.1f} {r['other_ms']:>6.1f} {r['gc_ms']:>5.1f} | "
              f"{r['worker_cpu_ms']:>11.1f} {r['sampling_process_cpu_ms']:>14.1f} | "
              f"{r['sql_statements_per_trial']:>5.1f} {r['journal_reads_per_trial']:>5.1f}  {r['statuses']}")
    if args.repeats > 1:  # the median can fall on another level in another run: every level, in repeat order
        print("every level (bench-<storage>-0, -1, ...; the same names train the same recipes in every run): "
              "machinery ms (share), training ms per trial")
        for kind, r in results.items():
            if "levels" in r:
                cells = [f"{level['machinery_ms_per_trial']:.1f} ({level['machinery_share']:.1%}) "
                         f"{level['train_ms_per_trial']:.1f}" for level in r["levels"]]
                print(f"{kind:<32} " + ", ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
