"""``plab plugins`` and ``plab tasks``: what is installed."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
@click.option("--slot", type=click.Choice(["connectivity", "learning", "trigger", "growth", "composition"]),
              help="Only principles of this slot.")
def plugins(as_json: bool, slot: str | None) -> None:
    """List every principle: slot, name, package, version and parameters."""
    from principlelab.registry import plugin_infos

    rows = [r for r in plugin_infos() if slot is None or r["slot"] == slot]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="principles", show_lines=False)
    for column in ("slot", "name", "package", "version", "parameters"):
        table.add_column(column)
    for row in rows:
        params = ", ".join(_describe_param(p) for p in row["parameters"]) or "-"
        table.add_row(row["slot"], row["name"], row["package"], row["version"], params)
    Console().print(table)


def _describe_param(param: dict) -> str:  # type: ignore[type-arg]
    bounds = []
    for key, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if param.get("bounds", {}).get(key) is not None:
            bounds.append(f"{symbol}{param['bounds'][key]}")
    suffix = f" [{' '.join(bounds)}]" if bounds else ""
    return f"{param['name']}={param['default']!r}{suffix}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def tasks(as_json: bool) -> None:
    """List the built-in and plugin tasks (user files load as file:PATH)."""
    from principlelab.core.tasks import known_tasks
    from principlelab.registry import get_registry

    get_registry()  # plugin tasks register with the registry
    known = known_tasks()
    if as_json:
        click.echo(json.dumps(known, indent=2))
        return
    table = Table(title="tasks")
    table.add_column("name")
    table.add_column("description")
    for name, description in sorted(known.items()):
        table.add_row(name, description)
    table.add_row("file:PATH", "your data: .npz (X, y), .csv (label column), IDX as IMAGES+LABELS")
    Console().print(table)
