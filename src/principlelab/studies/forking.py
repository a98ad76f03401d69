"""Database connections across ``fork``: a child never uses, nor closes, its parent's connections.

A forked child inherits the parent's pooled connections: their sockets and SQLite handles are the
parent's. Using one from the child interleaves two processes' traffic on it; closing one (also by
garbage collection) ends the parent's session. After a fork, every engine registered here gets a new,
empty pool in the child (``dispose(close=False)``), and the inherited pools stay referenced so they
are never finalized there (a child ends with ``os._exit``, which closes nothing). The sampling
process of :mod:`principlelab.studies.sample_ahead` is such a child.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from sqlalchemy.engine import Engine

__all__ = ["forget_at_fork"]

_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
_INHERITED_POOLS: list[Any] = []  # in a forked child: the parent's pools, kept so nothing closes them


def forget_at_fork(engine: Engine) -> Engine:
    """Give ``engine`` a new pool in any child forked from now on (see the module docstring); returns it."""
    _ENGINES.add(engine)
    return engine


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        _INHERITED_POOLS.append(engine.pool)
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
