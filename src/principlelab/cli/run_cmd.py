"""``plab run``: train one recipe with a progress bar and print the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from principlelab.core.events import count_growth
from principlelab.core.recipe import FIDELITIES, SLOTS, load_recipe, make_recipe, recipe_warnings
from principlelab.core.trainer import Callback, EpochReport, RunResult
from principlelab.errors import ConfigError


def parse_assignment(text: str) -> tuple[str, str, str, Any]:
    """``slot.name.param=value`` -> ``(slot, name, param, value)``; the value read as JSON if it can be."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 3 or not all(parts):
        raise ConfigError(f"--set {text!r} must look like slot.name.param=value, e.g. growth.random.units=16")
    if parts[0] not in SLOTS:
        raise ConfigError(f"--set {text!r}: unknown slot {parts[0]!r}; slots are {', '.join(SLOTS)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return parts[0], parts[1], parts[2], value


def build_recipe_data(base: dict[str, Any], chosen: dict[str, str | None], assignments: tuple[str, ...]) -> dict:  # type: ignore[type-arg]
    """Merge a recipe file's dict, the slot options, and ``--set`` assignments into recipe fields."""
    data = dict(base)
    for slot, name in chosen.items():
        if name is not None:
            data[slot] = {"name": name, "config": {}}
    for text in assignments:
        slot, name, param, value = parse_assignment(text)
        current = data.get(slot)
        current_name = current if isinstance(current, str) else (current or {}).get("name")
        if current_name is None:
            data[slot] = current = {"name": name, "config": {}}
        elif current_name != name:
            raise ConfigError(f"--set {text!r}: the {slot} principle is {current_name!r}, not {name!r}")
        if isinstance(current, str):
            data[slot] = current = {"name": current, "config": {}}
        data[slot] = {**current, "config": {**current.get("config", {}), param: value}}
    return data


class ProgressCallback(Callback):
    """A rich progress bar over epochs, with validation accuracy, size and growth events."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.task_id: Any = None

    def on_train_start(self, recipe: Any, task: Any, total_steps: int) -> None:
        self.progress.start()
        self.task_id = self.progress.add_task(f"{recipe.task} epochs", total=recipe.fidelity.epochs, status="")

    def on_epoch_end(self, report: EpochReport) -> None:
        status = f"val acc {report.val_accuracy:.3f} | {report.params} params"
        self.progress.update(self.task_id, advance=1, status=status)
        for event in report.events:  # epochs count from 1, as in the progress bar and the report
            made = f"{event.slot} '{event.principle}'" + (f", trigger: {event.reason}" if event.reason else "")
            self.progress.console.print(
                f"  epoch {event.epoch + 1}, step {event.step}: {event.operation} layer {event.layer} "
                f"+{event.units} units ({made})")

    def on_train_end(self, result: RunResult) -> None:
        self.progress.stop()


def print_result(result: RunResult, console: Console) -> None:
    """A short human summary of a run."""
    table = Table(title="result", show_header=False)
    grown = count_growth(result.growth_events)
    for key, value in (("test accuracy", f"{result.test_accuracy:.4f}"),
                       ("val accuracy", f"{result.val_accuracy:.4f}"),
                       ("params", str(result.params)), ("widths", str(result.widths)),
                       ("MACs (train+eval)", f"{result.macs:.3e}"), ("samples seen", str(result.samples_seen)),
                       ("wall time", f"{result.wall_s:.2f} s"), ("growth events", str(grown))):
        table.add_row(key, value)
    if len(result.growth_events) > grown:  # set's prune-and-regrow: connectivity upkeep, not growth
        table.add_row("rewiring events", str(len(result.growth_events) - grown))
    console.print(table)
    names = result.recipe.principle_names()
    console.print("recipe: " + ", ".join(f"{slot}={names[slot]}" for slot in SLOTS)
                  + f", task={result.recipe.task}, fidelity={result.recipe.fidelity.name}, seed={result.recipe.seed}")


@click.command()
@click.option("--task", help="Task name (plab tasks lists them) or file:PATH. Default: digits.")
@click.option("--fidelity", help=f"Named fidelity: {', '.join(FIDELITIES)}. Default: default.")
@click.option("--seed", type=int, help="Random seed (weights, data order, growth). Default: 0.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the fidelity's epochs.")
@click.option("--hidden", help="Initial hidden widths, comma-separated, e.g. 256,256.")
@click.option("--activation", type=click.Choice(["relu", "tanh", "sigmoid"]), help="Hidden activation.")
@click.option("--connectivity", help="Connectivity principle (default dense).")
@click.option("--learning", help="Learning rule (default backprop).")
@click.option("--trigger", help="Growth trigger (default never).")
@click.option("--growth", help="Growth rule (default none).")
@click.option("--composition", help="Composition (default sequential).")
@click.option("--set", "assignments", multiple=True, metavar="SLOT.NAME.PARAM=VALUE",
              help="Set a principle parameter, e.g. --set growth.random.units=16 (repeatable); it also chooses "
                   "that principle for its slot, so --growth random can be left out.")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A recipe TOML file; options given here override it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress bar).")
def run(task: str | None, fidelity: str | None, seed: int | None, epochs: int | None, hidden: str | None,
        activation: str | None, connectivity: str | None, learning: str | None, trigger: str | None,
        growth: str | None, composition: str | None, assignments: tuple[str, ...], recipe_file: Path | None,
        as_json: bool) -> None:
    """Train one recipe and print its result."""
    from principlelab.core.tasks import load_task
    from principlelab.core.trainer import Trainer
    from principlelab.registry import get_registry
    from principlelab.registry.versions import versions_for

    base: dict[str, Any] = {}
    if recipe_file is not None:
        base = load_recipe(recipe_file).model_dump(mode="json")
    chosen = {"connectivity": connectivity, "learning": learning, "trigger": trigger, "growth": growth,
              "composition": composition}
    data = build_recipe_data(base, chosen, assignments)
    for key, value in (("task", task), ("fidelity", fidelity), ("seed", seed)):
        if value is not None:
            data[key] = value
    recipe = make_recipe(data, source=str(recipe_file) if recipe_file else "recipe")
    network = recipe.network.model_dump()
    if hidden is not None:
        try:
            network["hidden"] = tuple(int(w) for w in hidden.split(","))
        except ValueError:
            raise ConfigError(f"--hidden {hidden!r} must be comma-separated integers, e.g. 256,256") from None
    if activation is not None:
        network["activation"] = activation
    fid = recipe.fidelity.model_dump()
    if epochs is not None:
        fid["epochs"] = epochs
    recipe = make_recipe({**recipe.model_dump(), "network": network, "fidelity": fid})

    registry = get_registry(local_dir=recipe_file.parent if recipe_file else None)
    principles = registry.instantiate(recipe)  # unknown names / bad parameters fail before any data loads
    task_data = load_task(recipe.task, fidelity=recipe.fidelity, seed=recipe.seed)
    for warning in recipe_warnings(recipe):
        click.echo(f"plab: warning: {warning}", err=True)
    console = Console(stderr=True)
    callbacks = [] if as_json else [ProgressCallback(console)]
    result = Trainer(recipe, principles, task_data, callbacks).run()
    result.versions = versions_for(registry, recipe)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        print_result(result, Console())
