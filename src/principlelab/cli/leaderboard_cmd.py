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


COUNT_METRICS = frozenset({"params", "macs", "samples_seen", "growth_event_count"})


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
    """A rich table of :func:`~principlelab.studies.leaderboard.query` rows.

    Descriptive columns (campaign, task, fidelity, slots) with one value in every row move to the
    caption, so the table stays readable in a narrow terminal.
    """
    grouped = group_by != "run"
    title = f"leaderboard by {group_by}: {metric}" + (" (mean ± std over runs)" if grouped else "")
    # (header, cell texts, justify, descriptive): descriptive columns may collapse into the caption
    columns: list[tuple[str, list[str], str, bool]] = []

    def add(head: str, values: list[Any], justify: str = "right", descriptive: bool = False) -> None:
        columns.append((head, ["-" if v is None else str(v) for v in values], justify, descriptive))

    def col(key: str) -> list[Any]:
        return [row.get(key) for row in rows]

    add("campaign", col("campaign"), "left", True)  # groups never span campaigns: say which
    if group_by not in ("run", "recipe"):
        add(group_by, col("principle"), "left")
    add("task", col("task"), "left", True)
    add("fidelity", col("level"), "left", True)
    if group_by == "run" and len(set(col("version"))) > 1:
        add("version", col("version"))  # study version: only when the rows span several
    if group_by == "run":
        add("seed", col("seed"))
    if group_by in ("run", "recipe"):
        for slot in SLOTS:
            add(slot, col(slot), "left", True)
    counts = metric in COUNT_METRICS  # whole numbers: no decimals on the std either
    if grouped:
        digits = 0 if counts else 4  # one run has no spread to show (std None)
        add(metric, [_fmt(r["mean"], digits) + ("" if r["std"] is None else f" ± {_fmt(r['std'], digits)}")
                     for r in rows])
        add("n", col("count"))
        if any((row.get("versions") or 0) > 1 for row in rows):
            add("versions", col("versions"))
    else:
        add(metric, [_fmt(v) for v in col(metric)])
    if group_by not in ("run", "recipe"):
        add("recipes", col("recipes"))
        add("best", [_fmt(v) for v in col("best")])
    if metric != "params":
        add("params", [_fmt(v, 0) for v in col("params")])
    if group_by in ("run", "recipe") and metric != "macs":
        add("MACs", ["-" if v is None else f"{v:.3e}" for v in col("macs")])  # one notation for the column
    if group_by == "run":
        add("wall s", [_fmt(v, 2) for v in col("wall_s")])
        add("events", col("growth_event_count"))
        add("run", col("id"))
    elif group_by == "recipe":
        add("recipe", [str(k)[:12] for k in col("recipe_key")])

    fixed = [(head, values[0]) for head, values, _, descriptive in columns
             if descriptive and len(rows) > 1 and len(set(values)) == 1]
    caption = ("all rows: " + ", ".join(f"{head}={value}" for head, value in fixed)) if fixed else None
    shown = [c for c in columns if not (c[3] and any(c[0] == head for head, _ in fixed))]
    table = Table(title=title, caption=caption)
    table.add_column("#", justify="right")
    for head, _, justify, _ in shown:
        table.add_column(head, justify=justify,  # type: ignore[arg-type]
                         style="bold" if head == metric else None, no_wrap=head == metric)
    for i in range(len(rows)):
        table.add_row(str(i + 1), *(values[i] for _, values, _, _ in shown))
    return table


STUDY_VERSION_HELP = ("Only this study version of each level ('latest': each level's newest; a number: that "
                      "version). Default: every version.")


def pooled_versions_note(rows: list[dict[str, Any]]) -> str | None:
    """A warning when grouped ``rows`` pool runs of several study versions of their level."""
    pooled = sum((row.get("versions") or 0) > 1 for row in rows)
    if not pooled:
        return None
    return (f"note: {pooled} of these rows pool runs of several study versions of their level (the search space "
            "or METRICS_VERSION changed between them, see docs/campaigns.md); --study-version latest keeps "
            "each level's newest only")


LOSS_METRICS = frozenset({"test_loss", "val_loss"})
LOSS_NOTE = "note: {metric} is each run's own loss, set by its composition and learning rule"


def loss_note(metric: str, rows: list[dict[str, Any]], group_by: str) -> str | None:
    """A warning when ``rows`` rank a loss across runs whose losses may be different functions."""
    if metric not in LOSS_METRICS or len(rows) < 2:
        return None
    if group_by in ("run", "recipe") and len({(r.get("learning"), r.get("composition")) for r in rows}) == 1:
        return None
    return (LOSS_NOTE.format(metric=metric) + " (capsule_routing's margin loss is not a cross-entropy); these "
            "rows span several, so compare losses only within one")


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
@click.option("--study-version", metavar="N|latest", help=STUDY_VERSION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (header first).")
def leaderboard(storage: str | None, campaign: str | None, task: str | None, fidelity: str | None,
                where_items: tuple[str, ...], group_by: str, metric: str, top: int, study_version: str | None,
                as_json: bool, as_csv: bool) -> None:
    """Rank runs, recipes or principles of a campaign by a metric."""
    from principlelab.studies.leaderboard import query, result_columns

    if as_json and as_csv:
        raise ConfigError("--json and --csv exclude each other; give one")
    where = parse_where(where_items)
    with open_db(storage) as db:
        rows = query(db, campaign=campaign, task=task, level=fidelity, where=where, group_by=group_by,
                     metric=metric, top=top, study_version=study_version)
    for note in (loss_note(metric, rows, group_by), pooled_versions_note(rows)):
        if note:
            Console(stderr=True).print(note, soft_wrap=True)
    if as_json:
        click.echo(json.dumps(rows, default=str))
    elif as_csv:
        write_csv(rows, result_columns(group_by))
    elif not rows:
        filters = ", ".join(f"{k}={v}" for k, v in (("campaign", campaign), ("task", task),
                                                     ("fidelity", fidelity), ("study version", study_version),
                                                     *where.items()) if v)
        Console(stderr=True).print(f"no complete runs with {metric}" + (f" for {filters}" if filters else "")
                                   + f" in {db.masked_url}", soft_wrap=True)  # one line, also in a log file
    else:
        Console(width=None if sys.stdout.isatty() else 160).print(leaderboard_table(rows, group_by, metric))


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--campaign", required=True, metavar="C", help="The campaign whose runs are compared.")
@click.option("--metric", default="test_accuracy", show_default=True, help="The metric compared.")
@click.option("--task", metavar="T", help="Only this task.")
@click.option("--fidelity", metavar="F", help="Only this fidelity level.")
@click.option("--study-version", metavar="N|latest", help=STUDY_VERSION_HELP)
@click.option("--storage", metavar="URL", help=STORAGE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare(a: str, b: str, campaign: str, metric: str, task: str | None, fidelity: str | None,
            study_version: str | None, storage: str | None, as_json: bool) -> None:
    """Paired test of A against B over matched seeds.

    A and B are each SLOT=NAME (a principle, e.g. growth=random) or a recipe key (or a unique prefix of
    at least 6 characters; plab leaderboard --group-by recipe lists them).
    """
    from principlelab.studies.compare import compare as compare_runs

    with open_db(storage) as db:
        result = compare_runs(db, campaign=campaign, a=a, b=b, metric=metric, task=task, level=fidelity,
                              study_version=study_version)
    if metric in LOSS_METRICS:
        Console(stderr=True).print(LOSS_NOTE.format(metric=metric) + "; compare losses only between runs that "
                                   "share both", soft_wrap=True)
    if result["shared_runs"]:
        Console(stderr=True).print(
            f"note: {result['shared_runs']} runs are on both sides (A {result['runs_a']} runs, B {result['runs_b']}), "
            "so A and B are not independent; compare disjoint sets, e.g. two recipes or two principles of one slot",
            soft_wrap=True)
    if len(result["study_versions"]) > 1:
        Console(stderr=True).print(
            f"note: the paired runs come from study versions {', '.join(map(str, result['study_versions']))} of "
            f"level {result['level']!r} (the search space or METRICS_VERSION changed between them); "
            "--study-version latest keeps the newest only", soft_wrap=True)
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"compare on {metric} ({campaign})", show_header=True)
    for head in ("", "A", "B"):
        table.add_column(head)
    table.add_row("what", result["a"], result["b"])
    table.add_row("mean", _fmt(result["mean_a"]), _fmt(result["mean_b"]))
    table.add_row("runs", str(result["runs_a"]), str(result["runs_b"]))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    stats = (f"paired seeds {result['n_pairs']}, B-A {result['mean_diff']:+.4g}; paired t-test "
             f"t={_g(result['t'])}, p={_g(result['p_t'])}; "
             + (f"sign test p={_g(result['p_sign'])}; " if result["p_sign"] is not None else "")
             + f"Wilcoxon W={_g(result['w'])}, p={_g(result['p_w'])}")
    console.print(stats)
    console.print(result["verdict"], style="bold" if result["significant"] else None)
