"""One ``plab campaign run`` per campaign at a time: :func:`campaign_runner_lock`.

``plab campaign run`` is a campaign's coordinator: it stores the campaign, runs as the only worker
(SQLite) or beside its ``--workers`` processes and the ``plab worker`` processes that join it
(PostgreSQL), and prints the results. A second ``plab campaign run`` of the same campaign, started
while the first runs (another terminal, or every machine of a cluster), would take itself for the
campaign's only worker: TPE without constant liar, a sampled-ahead pruner that reads only the rungs
it wrote itself, progress bars that do not count the other's trials. So the coordinator holds a lock
for the campaign while it runs, and a second one is refused before anything is written; the
message points to ``plab worker`` (PostgreSQL) or PostgreSQL itself (SQLite). Workers take no lock.

- **SQLite**: an exclusive POSIX record lock (``lockf``) on one byte of a lock file beside the
  database (``<database>-campaigns.lock``; the byte's offset is a hash of the campaign's name, so
  other campaigns in the file do not exclude each other). The kernel releases it when the process
  ends, however it ends. It is not taken on the database file itself: closing any descriptor of a
  file drops every record lock the process holds on it, SQLite's own included. For the same reason
  the lock file stays open for the process's life.
- **PostgreSQL**: a session advisory lock (two int4 keys: a namespace and the CRC-32 of the name),
  on a connection of its own named ``plab campaign run HOST:PID``. The server releases it when that
  connection ends; a refusal waits :data:`GRACE_S` first, so that a coordinator killed a moment ago
  (whose session the server has not yet ended) does not block its rerun.

Locks belong to a process, so a process that takes one twice (tests running several runners) is
counted, not refused. Where the lock cannot be taken at all (no such folder, unreachable server,
no ``fcntl``), none is held and opening the database reports the problem.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from principlelab.errors import ConfigError
from principlelab.studies.forking import forget_at_fork
from principlelab.studies.objective import worker_id
from principlelab.studies.sql_setup import advisory_keys, mask_url, sqlite_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

__all__ = ["GRACE_S", "campaign_runner_lock", "lock_file_of"]

GRACE_S = 5.0
"""How long a PostgreSQL coordinator waits for a held lock before it is refused."""
_NAMESPACE = 0x706C6172  # 'plar': the first advisory key (trial starts use 'plab')
_OPEN: dict[Path, int] = {}  # SQLite lock file -> descriptor, open for the process's life
_HELD: dict[tuple[str, str], list[Any]] = {}  # (where, campaign) -> [holds in this process, the lock]


def lock_file_of(database: Path) -> Path:
    """The lock file beside an SQLite ``database`` file."""
    return database.with_name(database.name + "-campaigns.lock")


@contextmanager
def campaign_runner_lock(url: str, campaign: str) -> Iterator[None]:
    """Hold campaign ``campaign``'s coordinator lock on database ``url`` while the block runs (SQLite
    files and PostgreSQL; nothing elsewhere). Raises :class:`ConfigError`, having written nothing,
    when another process holds it."""
    database, parsed = sqlite_path(url), make_url(url)
    if database is not None:
        where = str(database)
    elif parsed.get_backend_name() == "postgresql":
        where = parsed.render_as_string(hide_password=False)
    else:
        yield
        return
    key = (where, campaign)
    if key not in _HELD:
        lock = ExitStack()
        held = lock.enter_context(_sqlite_lock(url, database, campaign) if database is not None
                                  else _postgres_lock(url, campaign))
        if not held:
            lock.close()
            yield
            return
        _HELD[key] = [0, lock]
    _HELD[key][0] += 1
    try:
        yield
    finally:  # whichever hold ends last releases the lock (runners may be closed, or collected, in any order)
        _HELD[key][0] -= 1
        if not _HELD[key][0]:
            _HELD.pop(key)[1].close()


@contextmanager
def _sqlite_lock(url: str, database: Path, campaign: str) -> Iterator[bool]:
    """Yields whether the lock is held (False: none could be taken)."""
    path = lock_file_of(database)
    offset = int.from_bytes(hashlib.sha256(campaign.encode()).digest()[:7], "big")  # 56 bits: one byte each
    if fcntl is None:
        yield False
        return
    if path not in _OPEN:
        try:
            _OPEN[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:  # no such folder, or not writable: opening the database says so, in its words
            yield False
            return
    try:
        fcntl.lockf(_OPEN[path], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        holder = _sqlite_holder(_OPEN[path], offset)
        raise ConfigError(
            f"campaign {campaign!r} is already running on {mask_url(url)}"
            f"{f' in process {holder}' if holder else ' in another process'}: SQLite is for one process. "
            "Wait for it to finish (rerunning then resumes where it stopped), or run several workers on "
            "PostgreSQL (--storage postgresql+psycopg://USER:PASSWORD@HOST/DB, see docs/campaigns.md)") from None
    try:
        yield True
    finally:
        fcntl.lockf(_OPEN[path], fcntl.LOCK_UN, 1, offset)


def _sqlite_holder(descriptor: int, offset: int) -> int | None:
    """The process holding byte ``offset`` of the open file ``descriptor``, from Linux's ``/proc/locks``
    (``N: POSIX ADVISORY WRITE PID MAJOR:MINOR:INODE START END``); None where it cannot be told."""
    inode = os.fstat(descriptor).st_ino
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 8 and fields[1] == "POSIX" and fields[5].rsplit(":", 1)[-1] == str(inode) \
                        and fields[6] == str(offset):
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None


@contextmanager
def _postgres_lock(url: str, campaign: str) -> Iterator[bool]:
    """Yields whether the lock is held (False: the server could not be reached)."""
    keys = advisory_keys(_NAMESPACE, campaign)
    name = f"plab campaign run {worker_id()}"
    engine = forget_at_fork(create_engine(url, poolclass=NullPool, connect_args={"application_name": name[:63]}))
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError:  # unreachable: opening the database says so, in its words
        engine.dispose()
        yield False
        return
    try:
        deadline = time.monotonic() + GRACE_S
        while not conn.scalar(text("SELECT pg_try_advisory_lock(:ns, :key)"), keys):
            if time.monotonic() > deadline:
                holder = _postgres_holder(conn, keys)
                raise ConfigError(
                    f"campaign {campaign!r} is already running on {mask_url(url)}"
                    f"{f' ({holder})' if holder else ''}; to add workers to it, run plab worker --campaign "
                    f"{campaign} --storage URL (see docs/campaigns.md), or wait for it to finish and rerun")
            time.sleep(0.2)
        yield True
    finally:
        conn.close()  # ends the session, and the lock with it
        engine.dispose()


def _postgres_holder(conn: Connection, keys: dict[str, int]) -> str | None:
    """The ``application_name`` of the session holding the advisory lock ``keys``, if the server tells."""
    rows = conn.execute(text(
        "SELECT a.application_name, l.objid::bigint FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = :ns"), keys)
    wanted = keys["key"] % 2**32  # pg_locks shows the int4 key as an unsigned oid
    return next((str(app) for app, objid in rows if objid == wanted and app), None)
