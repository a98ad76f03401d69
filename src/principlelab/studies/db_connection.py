"""Opening the leaderboard database: :class:`LeaderboardConnection`, the base of ``LeaderboardDB``.

It makes the engine (checking the URL and the driver), creates or upgrades the ``plab_`` tables
(:mod:`principlelab.studies.tables`) on open, and hands out transactional sessions (a write is
retried once when concurrent writers race on a unique constraint);
:class:`~principlelab.studies.db.LeaderboardDB` adds the reads and writes of campaigns, study
versions, runs and promotions.

SQLite connections use WAL, a 30 s busy timeout, foreign keys and ``synchronous=NORMAL``; write
transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Self

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from principlelab.errors import StorageError
from principlelab.studies import tables
from principlelab.studies.forking import forget_at_fork
from principlelab.studies.journal_sql import mark_used, ping_if_idle
from principlelab.studies.sql_setup import (
    describe_db_error,
    mask_url,
    one_line,
    read_only_sqlite_url,
    sqlite_path,
    sqlite_pragmas,
)
from principlelab.studies.tables import PLAB_TABLES, MetaRow, create_or_upgrade, read_schema_version

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "LeaderboardConnection"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


class LeaderboardConnection:
    """The engine, sessions and schema of one leaderboard database (SQLite file, PostgreSQL, ...).

    ``create=False`` is for read commands (see :class:`~principlelab.studies.db.LeaderboardDB`).
    """

    def __init__(self, url: str, *, create: bool = True, echo: bool = False) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StorageError(
                f"invalid storage URL {self.masked_url!r}; expected e.g. sqlite:///principlelab.db or "
                "postgresql+psycopg://user:password@host/dbname") from None
        self.backend = parsed.get_backend_name()
        self.sqlite_file = sqlite_path(parsed)
        if self.sqlite_file is not None and not create and not self.sqlite_file.exists():
            raise StorageError(f"no principlelab database at {self.sqlite_file}; run a campaign first "
                               "or pass --storage")
        if self.sqlite_file is not None and not create:  # a read: also where the folder is read-only
            parsed = read_only_sqlite_url(self.sqlite_file) or parsed
        self.engine = forget_at_fork(self._make_engine(parsed, echo, wal=create))
        self._sessions = sessionmaker(expire_on_commit=False)
        self._write_engine = self.engine.execution_options(plab_write=True)
        try:
            self._ensure_schema(create)
        except BaseException:
            self.engine.dispose()
            raise

    # -- engine / connections

    def _make_engine(self, parsed: URL, echo: bool, *, wal: bool) -> Engine:
        kwargs: dict[str, Any] = {"echo": echo}
        if self.backend == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        elif self.backend == "postgresql" and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            raise StorageError(
                f"cannot use storage {self.masked_url}: no database driver for "
                f"{parsed.drivername!r} ({one_line(str(exc))}); install it (for PostgreSQL: "
                "pip install 'principlelab[postgres]' and use postgresql+psycopg://) or use a sqlite:/// URL"
            ) from None
        except (ArgumentError, TypeError, ValueError) as exc:
            raise StorageError(f"invalid storage URL {self.masked_url}: {one_line(str(exc))}") from None
        if self.backend == "sqlite":
            event.listen(engine, "connect", sqlite_pragmas(SQLITE_BUSY_TIMEOUT_MS, foreign_keys=True,
                                                           own_transactions=True, wal=wal))
            event.listen(engine, "begin", _sqlite_on_begin)
        elif self.backend == "postgresql":  # not pool_pre_ping: a round trip before every transaction
            event.listen(engine, "checkout", ping_if_idle)
            event.listen(engine, "checkin", mark_used)
        return engine

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error.

        Database errors become :class:`StorageError` (one line). ``write=True`` starts SQLite
        transactions with ``BEGIN IMMEDIATE`` (writers queue on the busy timeout instead of failing
        on a lock upgrade); use ``write=False`` for reads.
        """
        session = self._sessions(bind=self._write_engine if write else self.engine)
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            _safe_rollback(session)
            raise StorageError(describe_db_error(exc, self.url, self.sqlite_file)) from exc
        except BaseException:
            _safe_rollback(session)
            raise
        finally:
            session.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction on a Core connection: :meth:`session` without the ORM's session, which
        costs more than the statements of a write on every trial's path (its run row)."""
        with self._storage_errors(), self._write_engine.begin() as conn:  # committed, or rolled back on error
            yield conn

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """A connection without a transaction of its own (autocommit): for one statement, which the
        database makes atomic by itself, without the round trips of ``BEGIN`` and ``COMMIT``."""
        with self._storage_errors(), self._write_engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Database errors in the block become a one-line :class:`StorageError`."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise StorageError(describe_db_error(exc, self.url, self.sqlite_file)) from exc

    def _retry_on_conflict(self, fn: Callable[[Any], Any], *, core: bool = False) -> Any:
        """``fn`` in a write session (a :meth:`transaction`'s connection with ``core``); once more if a
        concurrent writer won a unique-constraint race."""
        opened = self.transaction if core else self.session
        try:
            with opened() as handle:
                return fn(handle)
        except StorageError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        with opened() as handle:
            return fn(handle)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema

    def _ensure_schema(self, create: bool) -> None:
        try:
            with self.engine.connect() as conn:  # fast path: everything there, version current
                names = set(inspect(conn).get_table_names())
                version = read_schema_version(conn) if "plab_meta" in names else None
            if names >= PLAB_TABLES and version == tables.SCHEMA_VERSION:  # read late: tests patch it
                return
            if not names & PLAB_TABLES and not create:
                raise StorageError(f"no principlelab tables in {self.masked_url}; run a campaign with "
                                   "this --storage first")
            with self._write_engine.begin() as conn:
                if self.backend == "postgresql":  # serialize concurrent creators/upgraders
                    conn.execute(text("SELECT pg_advisory_xact_lock(706162)"))
                create_or_upgrade(conn, self.masked_url)
        except SQLAlchemyError as exc:
            raise StorageError(describe_db_error(exc, self.url, self.sqlite_file)) from exc

    @property
    def schema_version(self) -> int:
        """The ``schema_version`` stored in ``plab_meta``."""
        with self.session(write=False) as session:
            return read_schema_version(session.connection()) or 0

    def get_meta(self, key: str) -> str | None:
        with self.session(write=False) as session:
            row = session.get(MetaRow, key)
            return None if row is None else row.value

    def set_meta(self, key: str, value: str) -> None:
        with self.session() as session:
            session.merge(MetaRow(key=key, value=value))


def _safe_rollback(session: Session) -> None:
    with suppress(SQLAlchemyError):  # the connection is gone; nothing to undo
        session.rollback()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("plab_write") else "BEGIN")
