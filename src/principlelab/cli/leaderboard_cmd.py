"""``plab leaderboard`` and ``plab compare``: read the leaderboard database (never create it)."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError
from principlelab.studies.db import STORAGE_ENV, LeaderboardDB, default_storage_url

STORAGE_HELP = (f"Database URL. Default: ${STORAGE_ENV}, else sqlite:///principlelab.db in the current "
                "directory.")


def open_db(storage: str | None) -> LeaderboardDB:
    """The leaderboard database for a read command: an absent SQLite file is an error, not created."""
    return LeaderboardDB(default_storage_url(storage), create=False)


def parse_where(items: tuple[str, ...]) -> dict[str, str]:
    """``("growth=random", ...)`` -> ``{"growth": "random"}``; one-line ConfigError otherwise."""
    where: dict[str, str] = {}
    for item in items:
        slot, sep, name = (part.strip() for part in item.partition("="))
        if not sep or not slot or not name:
            raise ConfigError(f"--where {item!r} must look like slot=name, e.g. --where growth=random")
        if slot not in SLOTS:
            raise ConfigError(f"--where {item!r}: unknown slot {slot!r}; slots are {', '.join(SLOTS)}")
        if slot in where and where[slot] != name:
            raise ConfigError(f"--where gives {slot} twice ({where[slot]!r} and {name!r}); give it once")
        where[slot] = name
    return where


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value:.3e}"
        if value.is_integer() and abs(value) >= 100:
            return f"{int(value)}"
        return f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 1e7:
        return f"{value:.3e}"
    return str(value)


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def write_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """Rows as CSV on stdout (nested values as JSON), header first."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(col)) for col in columns])


def leaderboard_table(rows: list[dict[str, Any]], group_by: str, metric: str) -> Table:
    """A rich table of :func:`~principlelab.studies.leaderboard.query` rows."""
    grouped = group_by != "run"
    title = f"leaderboard by {group_by}: {metric}" + (" (mean ± std over runs)" if grouped else "")
    table = Table(title=title)
    table.add_column("#", justify="right")
    if group_by == "run":
        heads = ["campaign", "task", "fidelity", "seed", *SLOTS, metric, "params", "MACs", "wall s", "growth",
                 "run"]
    elif group_by == "recipe":
        heads = ["task", "fidelity", *SLOTS, metric, "n", "params", "MACs", "recipe"]
    else:
        heads = [group_by, "task", "fidelity", metric, "n", "recipes", "best", "params"]
    for head in heads:
        table.add_column(head, justify="right" if head in (metric, "n", "seed", "params", "MACs", "wall s",
                                                            "growth", "run", "recipes", "best") else "left",
                         style="bold" if head == metric else None)
    for rank, row in enumerate(rows, 1):
        if group_by == "run":
            cells = [row["campaign"], row["task"], row["level"], row["seed"], *(row[s] for s in SLOTS),
                     _fmt(row.get(metric)), _fmt(row["params"]), _fmt(row["macs"]), _fmt(row["wall_s"], 2),
                     row["growth_event_count"], row["id"]]
        else:
            stat = f"{_fmt(row['mean'])} ± {_fmt(row['std'])}"
            if group_by == "recipe":
                cells = [row["task"], row["level"], *(row[s] for s in SLOTS), stat, row["count"],
                         _fmt(row["params"], 0), _fmt(row["macs"], 0), row["recipe_key"][:12]]
            else:
                cells = [row["principle"], row["task"], row["level"], stat, row["count"], row["recipes"],
                         _fmt(row["best"]), _fmt(row["params"], 0)]
        table.add_row(str(rank), *("-" if c is None else str(c) for c in cells))
    return table


@click.command()
@click.option("--storage", metavar="URL", help=STORAGE_HELP)
@click.option("--campaign", metavar="C", help="Only this campaign.")
@click.option("--task", metavar="T", help="Only this task.")
@click.option("--fidelity", metavar="F", help="Only this fidelity level.")
@click.option("--where", "where_items", multiple=True, metavar="SLOT=NAME",
              help="Only runs with this principle in this slot, e.g. --where growth=random (repeatable).")
@click.option("--group-by", type=click.Choice(["run", "recipe", *SLOTS]), default="run", show_default=True,
              help="Aggregate over seeds per recipe, or per principle of one slot (mean ± std, n).")
@click.option("--metric", default="test_accuracy", show_default=True,
              help="Rank by: test_accuracy, val_accuracy, test_loss, val_loss, params, macs, wall_s, ... "
                   "(losses, size and time rank ascending).")
@click.option("--top", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show the best K rows (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (header first).")
def leaderboard(storage: str | None, campaign: str | None, task: str | None, fidelity: str | None,
                where_items: tuple[str, ...], group_by: str, metric: str, top: int, as_json: bool,
                as_csv: bool) -> None:
    """Rank runs, recipes or principles of a campaign by a metric."""
    from principlelab.studies.leaderboard import query, result_columns

    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other; give one")
    where = parse_where(where_items)
    with open_db(storage) as db:
        rows = query(db, campaign=campaign, task=task, level=fidelity, where=where, group_by=group_by,
                     metric=metric, top=top)
    if as_json:
        click.echo(json.dumps(rows, default=str))
    elif as_csv:
        write_csv(rows, result_columns(group_by))
    elif not rows:
        filters = ", ".join(f"{k}={v}" for k, v in (("campaign", campaign), ("task", task),
                                                     ("fidelity", fidelity), *where.items()) if v)
        Console(stderr=True).print(f"no complete runs with {metric}" + (f" for {filters}" if filters else "")
                                   + f" in {db.masked_url}")
    else:
        Console().print(leaderboard_table(rows, group_by, metric))


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--campaign", required=True, metavar="C", help="The campaign whose runs are compared.")
@click.option("--metric", default="test_accuracy", show_default=True, help="The metric compared.")
@click.option("--task", metavar="T", help="Only this task.")
@click.option("--fidelity", metavar="F", help="Only this fidelity level.")
@click.option("--storage", metavar="URL", help=STORAGE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare(a: str, b: str, campaign: str, metric: str, task: str | None, fidelity: str | None,
            storage: str | None, as_json: bool) -> None:
    """Paired test of A against B over matched seeds.

    A and B are each SLOT=NAME (a principle, e.g. growth=random) or a recipe key (or a unique prefix of
    at least 6 characters; plab leaderboard --group-by recipe lists them).
    """
    from principlelab.studies.leaderboard import compare as compare_runs

    with open_db(storage) as db:
        result = compare_runs(db, campaign=campaign, a=a, b=b, metric=metric, task=task, level=fidelity)
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"compare on {metric} ({campaign})", show_header=True)
    for head in ("", "A", "B"):
        table.add_column(head)
    table.add_row("what", result["a"], result["b"])
    table.add_row("mean", _fmt(result["mean_a"]), _fmt(result["mean_b"]))
    table.add_row("runs", str(result["runs_a"]), str(result["runs_b"]))
    console = Console()
    console.print(table)
    stats = (f"paired seeds {result['n_pairs']}, B-A {result['mean_diff']:+.4g}; paired t-test "
             f"t={_g(result['t'])}, p={_g(result['p_t'])}; "
             f"Wilcoxon W={_g(result['w'])}, p={_g(result['p_w'])}")
    console.print(stats)
    console.print(result["verdict"], style="bold" if result["significant"] else None)
