"""``plab plugins`` and ``plab tasks``: what is installed."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
@click.option("--slot", type=click.Choice(["connectivity", "learning", "trigger", "growth", "composition"]),
              help="Only principles of this slot.")
def plugins(as_json: bool, slot: str | None) -> None:
    """List every principle: slot, name, package, version and parameters."""
    from principlelab.registry import get_registry, plugin_infos

    registry = get_registry()
    rows = [r for r in plugin_infos(registry) if slot is None or r["slot"] == slot]
    for row in rows:
        _campaign_search(row, registry.get(row["slot"], row["name"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="principles", show_lines=False)
    for column in ("slot", "name", "package", "version", "parameters"):
        table.add_column(column)
    for row in rows:
        params = ", ".join(_describe_param(p) for p in row["parameters"]) or "-"
        table.add_row(row["slot"], row["name"], row["package"], row["version"], escape(params))  # '[..]' is text
    Console().print(table)


def _campaign_search(row: dict, cls: type) -> None:  # type: ignore[type-arg]
    """Set each parameter's ``search`` to what a campaign searches (its hint, or the choices of a
    ``Literal``/``bool`` field, which campaigns search without a hint); ``None`` if not searched."""
    from principlelab.studies.search_hints import distribution_json, field_distribution

    for param in row["parameters"]:
        found = field_distribution(cls, param["name"], cls.Config.model_fields[param["name"]])  # type: ignore[attr-defined]
        param["search"] = None if found is None else distribution_json(found[0])["attributes"]


def _describe_param(param: dict) -> str:  # type: ignore[type-arg]
    bounds = []
    for key, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if param.get("bounds", {}).get(key) is not None:
            bounds.append(f"{symbol}{param['bounds'][key]}")
    search = param.get("search") or {}
    searched = ""
    if search.get("choices") is not None:
        searched = "search {" + ", ".join(map(str, search["choices"])) + "}"
    elif search:  # a range: what campaigns sample, inside the bounds
        step = search.get("step")
        searched = (f"search {search['low']}..{search['high']}" + (" log" if search.get("log") else "")
                    + (f" step {step}" if step not in (None, 1) else ""))
    parts = [" ".join(bounds), searched]
    suffix = f" [{'; '.join(p for p in parts if p)}]" if any(parts) else ""
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
