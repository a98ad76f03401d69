"""``plab report``: write a self-contained HTML report of a campaign (or of one run) with its figures."""

from __future__ import annotations

import os
from pathlib import Path

import click

from principlelab.cli.leaderboard_cmd import STORAGE_HELP, open_db
from principlelab.errors import ConfigError
from principlelab.studies.db import default_storage_url


@click.command()
@click.argument("campaign", required=False)
@click.option("--run", "run_id", type=click.IntRange(min=1), metavar="ID",
              help="Report one run (its curves, growth events and final network) instead of a campaign.")
@click.option("--storage", metavar="URL", help=STORAGE_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write index.html and the PNG files to. Default: ./report-CAMPAIGN (or ./report-run-ID).")
def report(campaign: str | None, run_id: int | None, storage: str | None, out_dir: Path | None) -> None:
    """Write an offline HTML report of CAMPAIGN (or of --run ID): index.html plus one PNG per figure.

    Sections: the leaderboard at the last level, slot and parameter importance on the coarse study, coarse vs
    fine rank agreement, accuracy vs parameters and compute with Pareto fronts, learning curves of the top
    recipes, and growth curves of the top growing recipes. Reads the database only.
    """
    if (campaign is None) == (run_id is None):
        raise ConfigError("plab report needs a CAMPAIGN name or --run ID (one of them, not both); "
                          "plab campaign status NAME shows a campaign's runs")
    from principlelab.report import campaign_report, run_report

    target = out_dir or Path(f"report-run-{run_id}" if run_id is not None else f"report-{campaign}")
    _check_writable(target)  # before a second of drawing, and before anything is written
    url = default_storage_url(storage)
    with open_db(storage) as db:
        if run_id is not None:
            result = run_report(db, run_id, target)
        else:
            assert campaign is not None
            result = campaign_report(db, campaign, target, url)
    click.echo(f"report written to {result.index} ({len(result.figures)} figures, {result.seconds:.1f} s)")


def _check_writable(folder: Path) -> None:
    """A one-line error unless ``folder`` is, or can be made as, a writable directory."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == folder.absolute() and not existing.is_dir():
        raise ConfigError(f"--out {str(folder)!r} is a file, not a folder; pick another --out")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the report into {str(folder)!r} ({str(existing)!r} is not a writable "
                          "folder); pick another --out")


__all__ = ["report"]
