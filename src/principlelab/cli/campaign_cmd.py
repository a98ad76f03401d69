"""``plab campaign run|status`` and ``plab worker``: campaigns over the principle space."""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from principlelab.core.recipe import SLOTS
from principlelab.studies.campaign import CampaignRunner, LevelProgress, eta_seconds

STORAGE_HELP = ("SQLAlchemy URL of the database (default: the campaign file's storage, else $PRINCIPLELAB_STORAGE, "
                "else sqlite:///principlelab.db in the current directory).")


TASK_LABEL = 32
"""Characters of a task name shown beside its bar: a long file: path squeezed the bar, count and time out."""


class ProgressDisplay:
    """One bar per (task, level): trials done of target, running, best so far, time left."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.bars: dict[tuple[str, str], Any] = {}

    def __call__(self, state: LevelProgress) -> None:
        key = (state.task, state.level)
        if key not in self.bars:
            task = state.task if len(state.task) <= TASK_LABEL else "…" + state.task[1 - TASK_LABEL:]  # the file name
            self.bars[key] = self.progress.add_task(f"{task} {state.level}", total=state.target, info="")
        eta = eta_seconds(state)
        info = (f"best {state.best:.4f}" if state.best is not None else "best -") + f" | running {state.running}"
        if eta is not None:
            info += f" | ~{eta:.0f} s left"
        self.progress.update(self.bars[key], completed=state.done, total=state.target, info=info)


def _worker_entry(name: str, url: str, local_dir: str | None, local_workers: int, sample_ahead: bool | None) -> None:
    import torch

    torch.set_num_threads(1)
    from principlelab.registry import get_registry

    CampaignRunner.from_storage(name, url, registry=get_registry(local_dir=local_dir), workers=2,
                                local_workers=local_workers, sample_ahead=sample_ahead, freeze_gc=True).work()


def _poll(runner: CampaignRunner, display: ProgressDisplay, processes: list[Any]) -> None:
    """Show the workers' progress from the database until they all exit."""
    while any(p.is_alive() for p in processes):
        for state in runner.level_progress():
            display(state)
        time.sleep(1.0)


@click.group()
def campaign() -> None:
    """Run and inspect campaigns (coarse-to-fine Optuna studies over principles)."""


@campaign.command("run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--storage", help=STORAGE_HELP)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (more than one needs PostgreSQL).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Leaderboard rows to print.")
@click.option("--sample-ahead/--no-sample-ahead", default=None,
              help="Sample each first-level trial in a second process while earlier ones train (Hyperband, "
                   "successive halving or no pruner) [default: on Linux when the machine has 2 cores per "
                   "worker; see docs/campaigns.md].")
def campaign_run(file: Path, storage: str | None, workers: int, top: int, sample_ahead: bool | None) -> None:
    """Run (or resume) the campaign in FILE and print its leaderboard."""
    from principlelab.registry import get_registry
    from principlelab.studies.campaign_file import load_campaign
    from principlelab.studies.db import default_storage_url
    from principlelab.studies.optuna_setup import check_workers

    spec, text = load_campaign(file)
    url = default_storage_url(storage, spec.storage)
    check_workers(url, workers)
    console = Console(stderr=True)
    display = ProgressDisplay(console)
    registry = get_registry(local_dir=file.parent)
    runner = CampaignRunner(spec, text, url, registry=registry, workers=workers, progress=display,
                            sample_ahead=sample_ahead, freeze_gc=True)
    console.print(f"campaign {spec.name!r}: {len(spec.tasks)} task(s), levels "
                  f"{' -> '.join(level.name for level in spec.levels)}, storage {runner.db.masked_url}, "
                  f"{runner.space.size_hint()} principle combinations", soft_wrap=True)  # one line in a log
    with runner, display.progress:  # runner: a second plab campaign run of this campaign is refused until work ends
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            processes = [context.Process(target=_worker_entry,
                                         args=(spec.name, url, str(file.parent), workers, sample_ahead))
                         for _ in range(workers)]
            for process in processes:
                process.start()
            _poll(runner, display, processes)
        outcome = runner.work()  # single worker: all the work; with workers: finish leftovers, report
    for (task, lower, upper), corr in outcome.correlations.items():
        click.echo(f"{task} {lower} -> {upper}: {corr.summary(lower, upper)}")
    for warning in outcome.warnings:
        click.echo(warning, err=True)
    _warn_about_failures(runner)
    _print_leaderboard(runner, spec.levels[-1].name, top)


def _warn_about_failures(runner: CampaignRunner) -> None:
    """One stderr line if runs failed (a crashing principle never shows in the leaderboard). Trials the
    user interrupted, and retried, are not failures of their recipe and are left out."""
    from principlelab.studies import leaderboard
    from principlelab.studies.objective import INTERRUPTED, NOT_RUN

    state = leaderboard.status(runner.db, runner.spec.name)
    reasons = [f for f in state["failure_reasons"] if f["reason"] not in (INTERRUPTED, NOT_RUN)]
    failed = sum(f["count"] for f in reasons)
    if failed:
        click.echo(f"warning: {failed} run(s) of campaign {runner.spec.name!r} failed (most often: "
                   f"{reasons[0]['reason']!r}, {reasons[0]['count']}x); plab campaign status {runner.spec.name} "
                   "lists the reasons", err=True)


def _print_leaderboard(runner: CampaignRunner, level: str, top: int) -> None:
    from principlelab.cli.leaderboard_cmd import leaderboard_table
    from principlelab.studies import leaderboard

    for task in runner.spec.tasks:
        rows = leaderboard.query(runner.db, campaign=runner.spec.name, task=task, level=level, group_by="recipe",
                                 metric="test_accuracy", top=top)
        if not rows:  # e.g. every first-level trial failed, so nothing was promoted
            click.echo(f"no complete runs on {task} at level {level!r}: no leaderboard", err=True)
            continue
        Console(width=None if sys.stdout.isatty() else 160).print(
            leaderboard_table(rows, group_by="recipe", metric="test_accuracy"))


@campaign.command("status")
@click.argument("name")
@click.option("--storage", help="SQLAlchemy URL of the campaign's database (default: $PRINCIPLELAB_STORAGE, else "
                                "sqlite:///principlelab.db in the current directory; the campaign's own file is "
                                "not read here, so pass its storage if it names one).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def campaign_status(name: str, storage: str | None, as_json: bool) -> None:
    """Progress, failures and the current best of campaign NAME."""
    from principlelab.studies import leaderboard
    from principlelab.studies.db import LeaderboardDB, default_storage_url

    db = LeaderboardDB(default_storage_url(storage), create=False)
    state = leaderboard.status(db, name)
    if as_json:
        click.echo(json.dumps(state, indent=2, default=str))
        return
    render_status(state)


def render_status(state: dict[str, Any]) -> None:
    """Human view of :func:`principlelab.studies.leaderboard.status`."""
    from rich.table import Table

    totals = state["totals"]
    click.echo(f"campaign {state['campaign']!r} in {state['storage']}: {totals['total']} runs "
               f"({', '.join(f'{k} {v}' for k, v in totals.items() if k != 'total' and v)}), "
               f"{state['promotions']} promotions")
    steps, unfinished = [], False
    for level in state.get("progress", []):
        where, target = f"{level['task']} {level['level']}", level["target"]
        if not level["started"]:
            steps.append(f"{where} not started")
        else:
            steps.append(f"{where} {level['trials']}" + (f" of {target}" if target is not None else "") + " trials")
        unfinished |= not level["started"] or (target is not None and level["trials"] < target)
    if steps:
        click.echo("progress: " + "; ".join(steps) + ("  (unfinished: rerun the campaign to resume)"
                                                      if unfinished else ""))
    table = Table(title="study versions")
    for column in ("task", "level", "version", "runs", "complete", "pruned", "failed", "rejected", "best",
                   "top failure"):
        table.add_column(column)
    for sv in state["study_versions"]:
        best = sv["best"]
        failure = sv["failures"][0] if sv["failures"] else None
        table.add_row(sv["task"], sv["level"], str(sv["version"]), str(sv["total"]),
                      str(sv["counts"].get("complete", 0)), str(sv["counts"].get("pruned", 0)),
                      str(sv["counts"].get("failed", 0)), str(sv["counts"].get("rejected", 0)),
                      "-" if best is None else f"{best['value']:.4f} ({'/'.join(best[s] for s in SLOTS)})",
                      "-" if failure is None else f"{failure['count']}x {failure['reason'][:60]}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@click.command()
@click.option("--campaign", "name", required=True, help="Name of a campaign already in the database.")
@click.option("--storage", required=True, help="SQLAlchemy URL of the shared database (PostgreSQL).")
@click.option("--principles-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory with the campaign's local principles.py (the campaign file's directory), if it has one.")
@click.option("--sample-ahead/--no-sample-ahead", default=None,
              help="Sample each first-level trial in a second process while earlier ones train [default: on "
                   "Linux with 2+ cores; with several plab worker processes on one machine, turn it off unless "
                   "it has 2 cores per worker].")
def worker(name: str, storage: str, principles_dir: Path | None, sample_ahead: bool | None) -> None:
    """Join a running campaign from this machine (Optuna's distributed mode)."""
    from principlelab.registry import get_registry
    from principlelab.studies.optuna_setup import check_workers

    check_workers(storage, 2, what="plab worker (joining a campaign other processes run)")
    registry = get_registry(local_dir=principles_dir)
    runner = CampaignRunner.from_storage(name, storage, registry=registry, workers=2, local_workers=1,
                                         sample_ahead=sample_ahead, freeze_gc=True)
    outcome = runner.work()
    click.echo(f"worker done: campaign {name!r}; {len(outcome.correlations)} promotion(s) reported here")
