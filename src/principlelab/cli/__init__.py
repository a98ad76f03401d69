"""The ``plab`` command line: parse and dispatch only; the work lives in the library.

Every :class:`~principlelab.errors.PrincipleLabError` becomes one line on stderr
(``plab: error: ...``) and exit code 2, with no traceback, as does a bad option of a command; a skipped plugin's
:class:`~principlelab.registry.manager.PluginWarning` is one line too (``plab: warning: ...``).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from principlelab import __version__
from principlelab.errors import PrincipleLabError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PrincipleLabError as exc:
            click.echo(f"plab: error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:  # a bad option or argument of a command: one line too, not three
            where = " ".join(["plab", *(exc.ctx.command_path.split()[1:] if exc.ctx is not None else [])])
            click.echo(f"plab: error: {exc.format_message()} (see {where} --help)", err=True)
            ctx.exit(2)
        except SQLAlchemyError as exc:  # the database failed mid-command (disk full, server gone): one line
            cause = getattr(exc, "orig", None) or exc
            detail = (str(cause).strip().splitlines() or [""])[0]
            click.echo(f"plab: error: the database failed: {type(cause).__name__}: {detail} (what was committed is "
                       "kept; fix the cause and rerun: a campaign resumes where it stopped)", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:  # click would print only 'Aborted!'
            click.echo("plab: interrupted (what finished is kept; rerun a campaign to resume it)", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plab")
def main() -> None:
    """principlelab: search the space of neural-network principles and keep every result."""
    import torch

    warnings.formatwarning = _one_line_plugin_warnings

    torch.set_num_threads(int(os.environ.get("PRINCIPLELAB_THREADS", "1")))


_python_formatwarning = warnings.formatwarning


def _one_line_plugin_warnings(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                              line: str | None = None) -> str:
    """A skipped plugin is one line (``plab: warning: ...``), not Python's file, line and source."""
    from principlelab.registry.manager import PluginWarning

    if issubclass(category, PluginWarning):
        return f"plab: warning: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


def _register_commands() -> None:
    from principlelab.cli import campaign_cmd, leaderboard_cmd, plugins_cmd, report_cmd, run_cmd, scaffold_cmd

    main.add_command(plugins_cmd.plugins)
    main.add_command(plugins_cmd.tasks)
    main.add_command(run_cmd.run)
    main.add_command(campaign_cmd.campaign)
    main.add_command(campaign_cmd.worker)
    main.add_command(leaderboard_cmd.leaderboard)
    main.add_command(leaderboard_cmd.compare)
    main.add_command(scaffold_cmd.new_principle)
    main.add_command(report_cmd.report)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
