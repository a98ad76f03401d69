"""SQLite connection settings shared by the leaderboard database, the journal and Optuna's RDB storage."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from principlelab.studies.db import LeaderboardDB
from principlelab.studies.sql_setup import is_memory_sqlite, sqlite_path, sqlite_pragmas


def _settings(url: str, listener) -> dict[str, object]:
    engine = create_engine(url)
    event.listen(engine, "connect", listener)
    with engine.connect() as conn:
        read = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
    engine.dispose()
    return read


def test_every_connection_gets_wal_normal_sync_and_the_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert _settings(url, sqlite_pragmas(1234)) == {
        "journal_mode": "wal", "synchronous": 1, "busy_timeout": 1234, "foreign_keys": 0}
    assert _settings(url, sqlite_pragmas(50, foreign_keys=True))["foreign_keys"] == 1


def _writing(path: Path) -> sqlite3.Connection:
    """A connection to a new rollback-journal file in the middle of a write transaction (RESERVED lock):
    another process creating the file's tables, say."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    return holder


def test_the_switch_to_wal_waits_for_a_connection_that_holds_the_file(tmp_path: Path) -> None:
    """Switching to WAL fails at once while another connection writes to the file, whatever the busy
    timeout (SQLite does not wait where waiting could deadlock): without retrying, a process opening a
    new database while another creates its tables fails with "database is locked"."""
    path = tmp_path / "race.db"
    holder = _writing(path)
    with pytest.raises(OperationalError, match="database is locked"):  # busy timeout 0: no retry
        _settings(f"sqlite:///{path}", sqlite_pragmas(0))
    threading.Timer(0.3, holder.commit).start()  # the other process commits
    assert _settings(f"sqlite:///{path}", sqlite_pragmas(10_000))["journal_mode"] == "wal"
    holder.close()


def test_the_leaderboard_database_opens_a_file_another_connection_is_writing(tmp_path: Path) -> None:
    path = tmp_path / "board.db"
    holder = _writing(path)
    threading.Timer(0.3, holder.commit).start()
    with LeaderboardDB(f"sqlite:///{path}") as db:
        assert db.schema_version >= 1
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    holder.close()


@pytest.mark.parametrize(("url", "memory", "file"), [
    ("sqlite://", True, None),
    ("sqlite:///:memory:", True, None),
    ("sqlite:///file:x?mode=memory&uri=true", True, None),
    ("sqlite:///runs.db", False, "runs.db"),
    ("postgresql+psycopg://u:p@h/db", False, None),
])
def test_memory_and_file_urls(url: str, memory: bool, file: str | None) -> None:
    parsed = make_url(url)
    assert (parsed.get_backend_name() == "sqlite" and is_memory_sqlite(parsed)) == memory
    path = sqlite_path(url)
    assert (path.name if path else None) == file and (path is None or path.is_absolute())
