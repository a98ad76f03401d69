"""Storage URLs and SQLite connection settings, shared by every engine principlelab opens.

Three engines can point at one database: the leaderboard tables (:mod:`principlelab.studies.db`),
Optuna's journal (:mod:`principlelab.studies.journal`) and, with ``optuna_storage = "rdb"``, Optuna's
own ``RDBStorage``. Each SQLite connection of each of them gets the same settings from
:func:`sqlite_pragmas`: WAL (readers never block the writer), ``synchronous=NORMAL`` (no fsync per
commit; a power cut may lose the last commits, never corrupt the file) and a busy timeout (writers
queue instead of failing).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError

DEFAULT_STORAGE = "sqlite:///principlelab.db"
STORAGE_ENV = "PRINCIPLELAB_STORAGE"


def default_storage_url(explicit: str | None, campaign_storage: str | None = None) -> str:
    """The storage URL to use: ``explicit`` (``--storage``) > the campaign file's ``storage`` >
    ``$PRINCIPLELAB_STORAGE`` > ``sqlite:///principlelab.db`` (in the current directory)."""
    for candidate in (explicit, campaign_storage, os.environ.get(STORAGE_ENV)):
        if candidate:
            return candidate
    return DEFAULT_STORAGE


def advisory_keys(namespace: int, name: str) -> dict[str, int]:
    """The two int4 keys of a PostgreSQL advisory lock on ``name`` in ``namespace``, as query parameters
    ``ns`` and ``key`` (the name's CRC-32, as a signed int4)."""
    crc = zlib.crc32(name.encode())
    return {"ns": namespace, "key": crc - 2**32 if crc >= 2**31 else crc}


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (also for strings SQLAlchemy cannot parse)."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` is an SQLite URL."""
    return (url if isinstance(url, URL) else make_url(url)).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The absolute file path of a file-based SQLite URL, else None (memory DBs, URI mode, others)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database).expanduser().resolve()


def read_only_sqlite_url(path: Path) -> URL | None:
    """For a read where ``path``'s folder (or the file) cannot be written, an URL that opens it read-only
    and immutable; None where it can. A normal read of an SQLite file creates lock files (``-shm``,
    ``-journal``) beside it, so in a read-only folder it failed with 'unable to open database file'.
    Immutable: nothing can be writing a database whose folder nobody can write to."""
    if os.access(path.parent, os.W_OK) and os.access(path, os.W_OK):
        return None
    return make_url(f"sqlite:///file:{quote(str(path))}?mode=ro&immutable=1&uri=true")


def is_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (private to each connection)."""
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database or url.query.get("mode") == "memory"


def one_line(message: str, limit: int = 300) -> str:
    """``message`` on one line, cut to ``limit`` characters."""
    line = " ".join(str(message).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_db_error(exc: BaseException, url: str | URL, sqlite_file: Path | None = None) -> str:
    """One line for a database error on ``url``: what failed, where (password masked), and what to do.

    ``sqlite_file`` is the SQLite file of ``url``, if it is one (to name its folder when it cannot be opened).
    """
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    detail = one_line(str(orig if orig is not None else exc).split("[SQL:")[0])
    password = (url if isinstance(url, URL) else make_url(url)).password
    if password:
        detail = detail.replace(str(password), "***")
    lowered = detail.lower()
    where = mask_url(url)
    if "database is locked" in lowered or "database is busy" in lowered:
        return (f"database {where} stayed locked by another writer for more than 30 s ({detail}); "
                "retry, or use PostgreSQL for many parallel workers")
    if sqlite_file is not None and "unable to open database file" in lowered:
        return (f"cannot open database {where}: {detail}; check that {sqlite_file.parent} exists "
                "and is writable, or pass another --storage")
    if isinstance(exc, IntegrityError):
        return f"database {where} rejected a write: {detail}"
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return (f"cannot use database {where}: {detail}; check the URL and that the server is running "
                "and reachable, or pass another --storage")
    return f"database error on {where}: {type(exc).__name__}: {detail}"


def sqlite_pragmas(busy_timeout_ms: int, *, foreign_keys: bool = False, own_transactions: bool = False,
                   wal: bool = True) -> Callable[[Any, Any], None]:
    """A ``connect`` event listener that sets up each new SQLite connection of an engine.

    ``foreign_keys`` turns on SQLite's foreign-key enforcement (off by default in SQLite);
    ``own_transactions`` stops the sqlite3 driver from opening transactions itself, for engines that
    send their own ``BEGIN`` (transactional DDL, ``BEGIN IMMEDIATE``); ``wal=False`` leaves the
    file's journal mode alone (switching to WAL writes to the file: not for read-only commands).
    """

    def set_up(dbapi_connection: Any, _record: Any) -> None:
        if own_transactions:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if foreign_keys:
                cursor.execute("PRAGMA foreign_keys=ON")
            if wal:
                _switch_to_wal(cursor, busy_timeout_ms / 1000)
        finally:
            cursor.close()

    return set_up


def _switch_to_wal(cursor: Any, timeout_s: float) -> None:
    """Switch the file to WAL (persistent) unless it is already. The switch fails at once with
    "database is locked", busy timeout or not, while another connection uses the file: the first
    connections of several processes to a new file race for it, so retry for up to ``timeout_s``."""
    deadline, delay = time.monotonic() + timeout_s, 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL").fetchall()
            return  # WAL now, or a file that cannot be (then it keeps its rollback journal)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.25)
