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

The SQL beneath them (engines, table creation, PostgreSQL's append function, the database clock) is
in :mod:`principlelab.studies.journal_sql`. Works on Optuna 4.x and 5.x.

Limits: appends are serialised across all workers, each holding the lock through its commit (on
PostgreSQL including the WAL flush), so the journal takes at most ~1 / (commit latency) appends a
second in total (a campaign trial is about 18 appends: create, one per sampled parameter, attributes,
rung reports, state); every worker replays every worker's logs and keeps all studies of the journal
in memory.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
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
    TextClause,
    bindparam,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from principlelab.studies.journal_sql import (
    _PREFETCH_LIMIT,
    _create_pg_append_function,
    _create_tables,
    _make_engine,
    _pg_lock_key,
)

__all__ = [
    "DEFAULT_HEARTBEAT_TABLE",
    "DEFAULT_JOURNAL_TABLE",
    "SQLJournalBackend",
    "SQLJournalSnapshotBackend",
]

DEFAULT_JOURNAL_TABLE = "plab_optuna_journal"
DEFAULT_HEARTBEAT_TABLE = "plab_optuna_heartbeats"
_INSERT_CHUNK = 200  # logs per INSERT statement (SQLite allows 32766 bound parameters)
_SNAPSHOT_KEY = "replay"

StaleTrialCallback = Callable[["optuna.Study", FrozenTrial], None]

_logger = logging.getLogger(__name__)  # journal_storage logs under this module's name


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
        self._unread_append = False  # an append since the last read_logs
        self._append_fn = _create_pg_append_function(self._engine, self._q_table, self._table_name) \
            if self.dialect == "postgresql" else None
        # the statements, built once: building a text() parses it and makes its bind parameters, which
        # for an append of a trial's twenty parameters cost more than executing it
        self._read_sql = text(f"SELECT id, body FROM {self._q_table} WHERE id >= :n ORDER BY id")
        self._read_back_sql = text(f"SELECT id, body FROM {self._q_table} WHERE id >= :n ORDER BY id "
                                   f"LIMIT {_PREFETCH_LIMIT}")
        self._append_fn_sql = None if self._append_fn is None else text(
            f"SELECT log_id, log_body FROM {self._append_fn}(CAST(:bodies AS TEXT[]), :read_from)")
        self._insert_sql: dict[int, TextClause] = {}  # by the number of logs inserted

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
        for key in ("_engine", "table", "snapshot_table", "_q_snapshot", "_prefetch_lock", "_prefetched", "_read_end",
                    "_unread_append", "_read_sql", "_read_back_sql", "_append_fn_sql", "_insert_sql"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    # -------------------------------------------------------------------------------------- logs
    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        with self._prefetch_lock:
            prefetched, self._prefetched = self._prefetched, None
        from_append = prefetched is not None and prefetched[0] == log_number_from
        if prefetched is not None and from_append:
            rows = prefetched[1]  # read by the append just before, in its transaction
        else:
            rows = self._retrying(lambda conn: conn.execute(self._read_sql, {"n": log_number_from}).all())
        logs: list[dict[str, Any]] = []
        expected = log_number_from
        for log_id, body in rows:
            if log_id != expected:  # never happens with serialised appends; never skip a log
                break
            logs.append(json.loads(body))
            expected += 1
        self._read_end = expected
        if not from_append or len(rows) < _PREFETCH_LIMIT:  # a capped read back may stop before our logs
            self._unread_append = False
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
        if self._append_fn_sql is not None:
            with self._engine.connect() as conn:  # one statement, one round trip, its own transaction
                rows = conn.execute(self._append_fn_sql,
                                    {"bodies": bodies, "read_from": -1 if read_from is None else read_from}).all()
        else:
            rows = self._append_in_transaction(bodies, read_from)
        with self._prefetch_lock:
            self._unread_append = True
            if read_from is not None:
                self._prefetched = (read_from, [tuple(row) for row in rows])

    def has_unread_appends(self) -> bool:
        """Whether this backend appended logs that no :meth:`read_logs` has read back since."""
        return self._unread_append

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
                    conn.execute(self._insert_statement(len(chunk)), {f"b{k}": body for k, body in enumerate(chunk)})
                result: list[Any] = []
                if read_from is not None:
                    result = list(conn.execute(self._read_back_sql, {"n": read_from}))
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                _rollback_quietly(conn)
                raise
        return result

    def _insert_statement(self, count: int) -> TextClause:
        """``INSERT`` of ``count`` logs (parameters ``b0``, ``b1``, ...) numbered after the journal's last
        one: the ids are computed by the statement itself, under the append's lock."""
        statement = self._insert_sql.get(count)
        if statement is None:
            rows = " UNION ALL ".join(f"SELECT {k} AS k, :b{k} AS body" for k in range(count))
            statement = self._insert_sql[count] = text(
                f"INSERT INTO {self._q_table} (id, body) SELECT base.n + v.k, v.body FROM "
                f"(SELECT COALESCE(MAX(id), -1) + 1 AS n FROM {self._q_table}) AS base, ({rows}) AS v")
        return statement

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
