"""The SQL under the journal storage: engines, tables, the PostgreSQL append function, the database clock.

Helpers of :mod:`principlelab.studies.journal` (the journal backend) and
:mod:`principlelab.studies.journal_storage` (its heartbeats):

* :func:`ping_if_idle` and :func:`mark_used`: pool listeners that ping a server connection before it
  is reused only if it was idle (the leaderboard's engine uses them too);
* :func:`_make_engine`: an AUTOCOMMIT engine; SQLite connections get the shared pragmas
  (:func:`~principlelab.studies.sql_setup.sqlite_pragmas`) and a busy timeout, server connections
  idle for more than :data:`PING_IDLE_S` a ping before they are reused;
* :func:`_create_tables`: ``CREATE TABLE IF NOT EXISTS``, safe against a concurrent creator;
* :func:`_create_pg_append_function` and :func:`_pg_lock_key`: PostgreSQL's append in one round trip,
  under the journal's transaction-level advisory lock;
* :func:`_db_epoch_sql`: the database clock that heartbeats are stamped with.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.schema import CreateTable

from principlelab.studies.forking import forget_at_fork
from principlelab.studies.sql_setup import is_memory_sqlite, sqlite_pragmas

SQLITE_BUSY_TIMEOUT_MS = 60_000
PING_IDLE_S = 5.0
_PREFETCH_LIMIT = 10_000  # logs an append reads back for the next read_logs (a contiguous prefix)
_APPEND_FN_VERSION = 1


def mark_used(_dbapi_connection: Any, record: Any) -> None:
    """Pool ``checkin`` listener: when the connection was last used (for :func:`ping_if_idle`)."""
    if record is not None:
        record.info["plab_used_at"] = time.monotonic()


def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
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
        event.listen(engine, "checkout", ping_if_idle)
        event.listen(engine, "checkin", mark_used)
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
