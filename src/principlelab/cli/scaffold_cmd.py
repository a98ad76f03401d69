"""``plab new-principle SLOT NAME``: scaffold a pip-installable plugin package for a new principle."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["new_principle"]


@click.command("new-principle")
@click.argument("slot", metavar="SLOT")
@click.argument("name", metavar="NAME")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="Where to write the package (default: ./principlelab-NAME); must be new or empty.")
@click.option("--package", metavar="PKG", help="Import name of the package (default: principlelab_NAME).")
def new_principle(slot: str, name: str, directory: Path | None, package: str | None) -> None:
    """Create a plugin package for a new principle NAME of SLOT.

    SLOT is connectivity, learning, trigger, growth or composition. The package holds a working
    minimal principle, its conformance tests, a campaign comparing it with a built-in, and the entry
    point that makes principlelab find it once installed (pip install -e DIR).
    """
    from principlelab.scaffold import SLOT_TEMPLATES, next_steps, scaffold

    result = scaffold(slot, name, directory, package=package)
    kind = SLOT_TEMPLATES[result.slot].kind
    click.echo(f"Created the {kind} {name!r} (class {result.package}.{name}.{result.class_name}) in the package "
               f"{result.distribution}:")
    for relative in result.files:
        click.echo(f"  {result.root / relative}")
    click.echo("\nNext steps:")
    for command in next_steps(result):
        click.echo(f"  {command}")
