"""Optuna's journal storage on an SQL database: one appended row per Optuna operation.

Optuna's :class:`~optuna.storages.RDBStorage` spends about three committed SQL round trips on every
storage operation, and a trial is ``3 + number of params`` operations or more: 10-40 ms of storage per
trial on SQLite or PostgreSQL (3 params, 3 reports), a large share of principlelab's ~50 ms trials;
this journal storage needs 2-4 ms. Optuna's
:class:`~optuna.storages.JournalStorage` instead keeps every study in memory and appends one log
record per operation; this module gives it a backend on the same SQLAlchemy URL as everything else:

* :class:`SQLJournalBackend`: the journal, a table ``plab_optuna_journal (id, body)`` whose ``id`` is
  the log number (0, 1, 2, ...) and ``body`` the JSON record. Appends are serialised (SQLite:
  ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level advisory lock, taken with the insert in one
  PL/pgSQL call) and number their rows ``max(id) + 1, ...`` under that lock, so commit order is id
  order and every reader sees the same total order without gaps. Reads are never blocked.
* :class:`SQLJournalSnapshotBackend`: the same, plus Optuna's pickled replay state every 100 trials
  (``plab_optuna_journal_snapshot``), for faster starts of new workers on very long journals.
* :class:`~principlelab.studies.journal_storage.SQLJournalStorage` (module ``journal_storage``): the
  journal storage plus heartbeats (table ``plab_optuna_heartbeats``,
  times from the database clock), so that a killed worker's trial is failed and retried exactly as
  with ``RDBStorage(heartbeat_interval=..., grace_period=..., heartbeat_stale_trial_callback=...)``:
  ``study.optimize`` runs the heartbeat thread and ``optuna.storages.fail_stale_trials`` works.
* :func:`~principlelab.studies.journal_storage.journal_storage`: the storage principlelab uses, with
  the stale-trial callback under the argument name of the installed Optuna.

Works on Optuna 4.x and 5.x.

Limits: appends are serialised across all workers, each holding the lock through its commit (on
PostgreSQL including the WAL flush), so the journal takes at most ~1 / (commit latency) appends a
second in total (a campaign trial is about 18 appends: create, one per sampled parameter, attributes,
rung reports, state); every worker replays every worker's logs and keeps all studies of the journal
in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.storages.journal._base import BaseJournalBackend, BaseJournalSnapshot  # public since 4.0
from optuna.trial import FrozenTrial
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.schema import CreateTable

from principlelab.studies.forking import forget_at_fork
from principlelab.studies.sql_setup import is_memory_sqlite, sqlite_pragmas

__all__ = [
    "DEFAULT_HEARTBEAT_TABLE",
    "DEFAULT_JOURNAL_TABLE",
    "SQLJournalBackend",
    "SQLJournalSnapshotBackend",
]

DEFAULT_JOURNAL_TABLE = "plab_optuna_journal"
DEFAULT_HEARTBEAT_TABLE = "plab_optuna_heartbeats"
SQLITE_BUSY_TIMEOUT_MS = 60_000
PING_IDLE_S = 5.0
_INSERT_CHUNK = 200  # logs per INSERT statement (SQLite allows 32766 bound parameters)
_PREFETCH_LIMIT = 10_000  # logs an append reads back for the next read_logs (a contiguous prefix)
_SNAPSHOT_KEY = "replay"
_APPEND_FN_VERSION = 1

StaleTrialCallback = Callable[["optuna.Study", FrozenTrial], None]

# ------------------------------------------------------------------------------------------ engines

_logger = logging.getLogger(__name__)


def _mark_used(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["plab_used_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a pooled connection idle for more than PING_IDLE_S before reuse (a dead one is replaced).

    Unlike ``pool_pre_ping`` this costs no round trip per operation, and it makes the statement sent
    next (an append, not safely retried) fail only if the server went away within the last seconds.
    """
    used_at = record.info.get("plab_used_at")
    if used_at is None or time.monotonic() - used_at < PING_IDLE_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    except Exception as exc:
        raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def _make_engine(url: str | URL, engine_kwargs: dict[str, Any] | None = None) -> Engine:
    """An AUTOCOMMIT engine: every statement commits by itself unless we send BEGIN/COMMIT ourselves.

    Reads are single statements (one consistent snapshot each) and cost no BEGIN/COMMIT round trips;
    appends open their transaction explicitly (``BEGIN IMMEDIATE`` on SQLite).
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", **(engine_kwargs or {})}
    if parsed.get_backend_name() == "sqlite":
        if is_memory_sqlite(parsed):
            raise ValueError(
                f"an in-memory SQLite database ({parsed}) cannot hold a journal shared by connections; "
                "use a file (sqlite:///path.db) or optuna.storages.InMemoryStorage()")
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, **kwargs.pop("connect_args", {})}
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", sqlite_pragmas(SQLITE_BUSY_TIMEOUT_MS))
    else:
        kwargs.setdefault("pool_recycle", 3600)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "checkout", _ping_if_idle)
        event.listen(engine, "checkin", _mark_used)
    return forget_at_fork(engine)


def _create_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """``CREATE TABLE IF NOT EXISTS``; a concurrent creator winning the race is fine."""
    for table in tables:
        if inspect(engine).has_table(table.name):
            continue
        try:
            with engine.connect() as conn:
                conn.execute(CreateTable(table, if_not_exists=True))
        except SQLAlchemyError:
            if not inspect(engine).has_table(table.name):
                raise


def _pg_lock_key(table: str) -> int:
    """The journal's transaction-level advisory lock: a signed 64-bit key (PostgreSQL keeps the
    single-bigint key space apart from the two-int4 one that campaign.py's study locks use)."""
    digest = hashlib.blake2b(f"principlelab optuna journal {table}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _create_pg_append_function(engine: Engine, q_table: str, table: str) -> str | None:
    """``{table}_append_v1(bodies, read_from)``: lock, number, insert and read back in one round trip.

    The lock is ``pg_advisory_xact_lock`` rather than ``LOCK TABLE ... IN EXCLUSIVE MODE``: the same
    serialisation, but autovacuum of this insert-only table cannot block an append (for up to
    ``deadlock_timeout``). Inside a VOLATILE PL/pgSQL function every statement takes a fresh
    snapshot, so ``MAX(id)``, evaluated once the lock is granted, sees every earlier append (a
    transaction's locks are released after its commit became visible). Returns the logs from
    ``read_from`` (a contiguous prefix; none if negative).
    None if the function cannot be created (no CREATE right) or the server's default isolation is not
    READ COMMITTED: appends then use explicit transactions (four round trips instead of one).
    """
    preparer = engine.dialect.identifier_preparer
    name = preparer.quote(f"{table}_append_v{_APPEND_FN_VERSION}")
    signature = f"{name}(text[], bigint)"
    ddl = f"""
CREATE OR REPLACE FUNCTION {name}(bodies text[], read_from bigint)
RETURNS TABLE (log_id bigint, log_body text) LANGUAGE plpgsql VOLATILE AS $plab$
DECLARE base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({_pg_lock_key(table)});
    SELECT COALESCE(MAX(j.id), -1) + 1 INTO base FROM {q_table} AS j;
    INSERT INTO {q_table} (id, body) SELECT base + u.o - 1, u.b FROM unnest(bodies) WITH ORDINALITY AS u(b, o);
    IF read_from >= 0 THEN
        RETURN QUERY SELECT j.id, j.body FROM {q_table} AS j WHERE j.id >= read_from ORDER BY j.id
            LIMIT {_PREFETCH_LIMIT};
    END IF;
END
$plab$"""
    exists = text("SELECT to_regprocedure(:sig) IS NOT NULL")
    try:
        with engine.connect() as conn:
            # under REPEATABLE READ or SERIALIZABLE the function's MAX(id) would use the statement's snapshot
            if conn.exec_driver_sql("SHOW default_transaction_isolation").scalar_one() != "read committed":
                return None
            if conn.execute(exists, {"sig": signature}).scalar_one():
                return name
            conn.exec_driver_sql(ddl)
    except SQLAlchemyError:
        try:  # another worker may have created it at the same moment
            with engine.connect() as conn:
                if not conn.execute(exists, {"sig": signature}).scalar_one():
                    return None
        except SQLAlchemyError:
            return None
    return name


def _db_epoch_sql(dialect: str) -> str | None:
    """SQL for the database clock in seconds since the epoch (UTC), or None: use this host's clock."""
    if dialect == "postgresql":
        return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    if dialect == "sqlite":
        return "((julianday('now') - 2440587.5) * 86400.0)"
    return None


# ------------------------------------------------------------------------------------------ backend


class SQLJournalBackend(BaseJournalBackend):
    """Optuna journal in an SQL table: ``id`` (log number from 0) and ``body`` (one JSON record).

    Appends are atomic and totally ordered: a batch takes the journal's write lock (SQLite
    ``BEGIN IMMEDIATE``, PostgreSQL ``pg_advisory_xact_lock``; reads are never blocked), numbers
    its logs ``max(id) + 1, ...`` and commits, so commit order is id order and no reader can see
    log ``n + 1`` without log ``n``. :meth:`read_logs` returns the contiguous run of logs from
    ``log_number_from`` (it stops at a gap, which the locking never leaves).

    Args:
        url: SQLAlchemy URL: a SQLite file or PostgreSQL. (Other servers get a plain transaction
            without a lock: concurrent appends may then collide on the primary key and fail.)
        table: the journal table.
        engine_kwargs: extra :func:`sqlalchemy.create_engine` arguments.
    """

    def __init__(self, url: str | URL, *, table: str = DEFAULT_JOURNAL_TABLE,
                 engine_kwargs: dict[str, Any] | None = None) -> None:
        self._url = make_url(url)
        self._table_name = table
        self._engine_kwargs = dict(engine_kwargs or {})
        self._setup()

    def _setup(self) -> None:
        self._engine = _make_engine(self._url, self._engine_kwargs)
        self.dialect = self._engine.dialect.name
        metadata = MetaData()
        self.table = Table(
            self._table_name, metadata,
            # INTEGER PRIMARY KEY is SQLite's rowid: max(id) and range scans need no second index
            Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
            Column("body", Text, nullable=False))
        _create_tables(self._engine, [self.table])
        self._q_table = self._engine.dialect.identifier_preparer.format_table(self.table)
        self._prefetch_lock = threading.Lock()
        self._prefetched: tuple[int, list[Any]] | None = None
        self._read_end: int | None = None
        self._append_fn = _create_pg_append_function(self._engine, self._q_table, self._table_name) \
            if self.dialect == "postgresql" else None

    @property
    def url(self) -> URL:
        return self._url

    @property
    def engine(self) -> Engine:
        return self._engine

    def dispose(self) -> None:
        """Close the pooled connections (the backend reconnects when used again)."""
        self._engine.dispose()

    def forget_locks(self) -> None:
        """In a forked child: a new lock (the fork copied the parent's, which one of its other threads might hold)."""
        self._prefetch_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_engine", "table", "snapshot_table", "_q_snapshot", "_prefetch_lock", "_prefetched", "_read_end"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # -------------------------------------------------------------------------------------- logs
    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        with self._prefetch_lock:
            prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] == log_number_from:
            rows = prefetched[1]  # read by the append just before, in its transaction
        else:
            sql = text(f"SELECT id, body FROM {self._q_table} WHERE id >= :n ORDER BY id")
            rows = self._retrying(lambda conn: conn.execute(sql, {"n": log_number_from}).all())
        logs: list[dict[str, Any]] = []
        expected = log_number_from
        for log_id, body in rows:
            if log_id != expected:  # never happens with serialised appends; never skip a log
                break
            logs.append(json.loads(body))
            expected += 1
        self._read_end = expected
        return logs

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` atomically, numbered after every log committed before.

        Optuna's journal storage reads the new logs right after each append: the append reads them
        too, in its transaction (from where the last :meth:`read_logs` ended), and the next
        :meth:`read_logs` from there returns them without another query.
        """
        if not logs:
            return
        bodies = [json.dumps(log, separators=(",", ":")) for log in logs]
        read_from = self._read_end
        with self._prefetch_lock:
            self._prefetched = None
        if self._append_fn is not None:
            with self._engine.connect() as conn:  # one statement, one round trip, its own transaction
                rows = conn.execute(
                    text(f"SELECT log_id, log_body FROM {self._append_fn}(CAST(:bodies AS TEXT[]), :read_from)"),
                    {"bodies": bodies, "read_from": -1 if read_from is None else read_from}).all()
        else:
            rows = self._append_in_transaction(bodies, read_from)
        if read_from is not None:
            with self._prefetch_lock:
                self._prefetched = (read_from, [tuple(row) for row in rows])

    def _append_in_transaction(self, bodies: list[str], read_from: int | None) -> list[Any]:
        """SQLite (and other servers): BEGIN IMMEDIATE (or BEGIN), INSERT ... SELECT max + 1, read, COMMIT."""
        begin = {"sqlite": "BEGIN IMMEDIATE", "postgresql": "BEGIN ISOLATION LEVEL READ COMMITTED"}.get(
            self.dialect, "BEGIN")
        with self._engine.connect() as conn:
            try:
                conn.exec_driver_sql(begin)
                if self.dialect == "postgresql":  # without the append function (see _create_pg_append_function)
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_pg_lock_key(self._table_name)})")
                for start in range(0, len(bodies), _INSERT_CHUNK):
                    chunk = bodies[start:start + _INSERT_CHUNK]
                    # the ids are computed by the INSERT itself, under the lock: one statement per chunk
                    rows = " UNION ALL ".join(f"SELECT {k} AS k, :b{k} AS body" for k in range(len(chunk)))
                    conn.execute(
                        text(f"INSERT INTO {self._q_table} (id, body) SELECT base.n + v.k, v.body FROM "
                             f"(SELECT COALESCE(MAX(id), -1) + 1 AS n FROM {self._q_table}) AS base, ({rows}) AS v"),
                        {f"b{k}": body for k, body in enumerate(chunk)})
                result: list[Any] = []
                if read_from is not None:
                    result = list(conn.execute(
                        text(f"SELECT id, body FROM {self._q_table} WHERE id >= :n ORDER BY id "
                             f"LIMIT {_PREFETCH_LIMIT}"), {"n": read_from}))
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
        return result

    def _retrying(self, read: Callable[[Connection], Any]) -> Any:
        """Run a read, once more on a fresh connection if the pooled one turned out to be dead."""
        for attempt in range(2):
            try:
                with self._engine.connect() as conn:
                    return read(conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def count(self) -> int:
        """The number of logs in the journal."""
        sql = text(f"SELECT COALESCE(MAX(id), -1) + 1 FROM {self._q_table}")
        return int(self._retrying(lambda conn: conn.execute(sql).scalar_one()))


class SQLJournalSnapshotBackend(SQLJournalBackend, BaseJournalSnapshot):
    """:class:`SQLJournalBackend` that also keeps Optuna's pickled replay state (``{table}_snapshot``).

    Optuna saves one every 100 trials (a pickle of every study: ~70 ms at 10,000 trials, so ~0.7 ms
    a trial, growing with the journal) so that a new storage object replays only the logs after it
    (80,000 logs: 0.6 s instead of 1.7 s). Worth it only where workers start often.
    A snapshot is trusted code: anyone who can write the table can run code in the workers.
    """

    def _setup(self) -> None:
        super()._setup()
        self.snapshot_table = Table(
            f"{self._table_name}_snapshot", MetaData(),
            Column("key", String(32), primary_key=True),
            Column("snapshot", LargeBinary, nullable=False))
        _create_tables(self._engine, [self.snapshot_table])
        self._q_snapshot = self._engine.dialect.identifier_preparer.format_table(self.snapshot_table)

    def save_snapshot(self, snapshot: bytes) -> None:
        """Keep the latest snapshot only (an older one, from a slower worker, is merely less useful)."""
        params = {"key": _SNAPSHOT_KEY, "snapshot": snapshot}
        with self._engine.connect() as conn:
            if self.dialect in ("sqlite", "postgresql"):
                conn.execute(
                    text(f"INSERT INTO {self._q_snapshot} (key, snapshot) VALUES (:key, :snapshot) "
                         "ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot")
                    .bindparams(bindparam("snapshot", type_=LargeBinary)), params)
                return
            conn.exec_driver_sql("BEGIN")
            conn.execute(self.snapshot_table.delete().where(self.snapshot_table.c.key == _SNAPSHOT_KEY))
            conn.execute(self.snapshot_table.insert(), params)
            conn.exec_driver_sql("COMMIT")

    def load_snapshot(self) -> bytes | None:
        sql = text(f"SELECT snapshot FROM {self._q_snapshot} WHERE key = :key")
        raw = self._retrying(lambda conn: conn.execute(sql, {"key": _SNAPSHOT_KEY}).scalar_one_or_none())
        return None if raw is None else bytes(raw)


def _rollback_quietly(conn: Connection) -> None:
    try:
        conn.exec_driver_sql("ROLLBACK")
    except Exception:
        conn.invalidate()
