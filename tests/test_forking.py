"""studies/forking.py: a forked child gets new connection pools for principlelab's engines and never
closes the parent's (the sampling process of studies/sample_ahead.py is such a child)."""

from __future__ import annotations

import gc
import os

import pytest
from sqlalchemy import text

from principlelab.studies.db import LeaderboardDB
from principlelab.studies.optuna_setup import close_storage, make_storage

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")


def test_a_forked_child_uses_new_pools_and_leaves_the_parents_connections_open(db_url: str) -> None:
    db = LeaderboardDB(db_url, create=True)
    journal, rdb = make_storage(db_url), make_storage(db_url, kind="rdb")
    engines = [db.engine, journal.backend.engine, rdb.engine]
    for engine in engines:  # a pooled connection each, checked in
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    pools = [engine.pool for engine in engines]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, use the engines, collect garbage, leave without cleanup
        code = 1
        try:
            from principlelab.studies import forking

            fresh = all(e.pool is not p for e, p in zip(engines, pools))
            kept = all(any(p is q for q in forking._INHERITED_POOLS) for p in pools)
            for engine in engines:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            gc.collect()
            code = 0 if fresh and kept else 2
        finally:
            os.write(write_end, bytes([code]))
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 1) == b"\x00", "the child reused or dropped the parent's pools"
    os.waitpid(pid, 0)
    assert [engine.pool for engine in engines] == pools  # the parent's own pools, still in use
    for engine in engines:  # its pooled connections still work (a child closing them would break PostgreSQL's)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    db.engine.dispose()
    close_storage(journal)
    close_storage(rdb)
