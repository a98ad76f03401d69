"""principlelab's own leaderboard database: typed SQLAlchemy tables beside Optuna's.

The tables live in the same database as Optuna's (``--storage``) but never inside Optuna's schema:
every table name starts with ``plab_``. :class:`LeaderboardDB` opens (and creates or upgrades) them;
writers are idempotent and transactional so that several workers can share one database:

* ``plab_meta``: key/value pairs; ``schema_version`` says which :data:`MIGRATIONS` have run.
* ``plab_campaigns``: one row per campaign name, with the hash and text of its campaign file.
* ``plab_study_versions``: one row per (campaign, task, level, search-space fingerprint), i.e. per
  Optuna study; ``parent_id`` links a new space version to the previous one (lineage).
* ``plab_runs``: one row per Optuna trial (``optuna_study_name``, ``trial_number``): the recipe as one
  ``<slot>``/``<slot>_config`` column pair per slot, metrics, size, compute and provenance.
* ``plab_growth_events``: the growth events of a run (deleted with it).
* ``plab_promotions``: which recipe was promoted to which study version, once (the unique constraint
  on ``(to_study_version_id, recipe_key)`` is the lock between workers).

SQLite connections use WAL, a 30 s busy timeout, foreign keys and ``synchronous=NORMAL``; write
transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from principlelab.core.recipe import SLOTS
from principlelab.errors import ConfigError, StorageError, UnknownNameError
from principlelab.studies.forking import forget_at_fork

SCHEMA_VERSION = 2
"""The schema this code writes. Bump it and add ``MIGRATIONS[new_version]`` to change the tables."""


def _add_run_curve_and_structure(conn: Connection) -> None:
    """Version 2: per-epoch curves and the final network structure of every run (for reports)."""
    for column in ("curve", "structure"):
        conn.execute(text(f"ALTER TABLE plab_runs ADD COLUMN {column} JSON"))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: lambda conn: None,  # version 0 (tables without a schema_version row) has the version-1 tables
    2: _add_run_curve_and_structure,
}
"""``MIGRATIONS[v](connection)`` upgrades a version ``v - 1`` schema to version ``v`` (in one transaction,
before tables new in this code are created). Version 0 is a database with principlelab tables but no
``schema_version`` row."""

DEFAULT_STORAGE = "sqlite:///principlelab.db"
STORAGE_ENV = "PRINCIPLELAB_STORAGE"
RUN_STATUSES = ("complete", "pruned", "failed", "rejected")
TABLE_PREFIX = "plab_"


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of every ``plab_`` table (its own metadata, separate from Optuna's)."""


class MetaRow(Base):
    __tablename__ = "plab_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CampaignRow(Base):
    __tablename__ = "plab_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    file_hash: Mapped[str] = mapped_column(String(64))
    spec_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class StudyVersionRow(Base):
    __tablename__ = "plab_study_versions"
    __table_args__ = (
        UniqueConstraint("campaign_id", "task", "level", "version", name="uq_plab_sv_version"),
        UniqueConstraint("campaign_id", "task", "level", "fingerprint", name="uq_plab_sv_fingerprint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("plab_campaigns.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(255))
    level_index: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    space_json: Mapped[str] = mapped_column(Text)
    optuna_study_name: Mapped[str] = mapped_column(String(255), unique=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("plab_study_versions.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class RunRow(Base):
    """One Optuna trial. Slot columns are spelled out (typed); the check below keeps them = SLOTS."""

    __tablename__ = "plab_runs"
    __table_args__ = (
        UniqueConstraint("optuna_study_name", "trial_number", name="uq_plab_runs_trial"),
        # the leaderboard: filter by campaign/status, group by recipe (task, level)
        Index("ix_plab_runs_board", "campaign_id", "status", "recipe_key", "task", "level"),
        Index("ix_plab_runs_status_recipe", "status", "recipe_key", "task", "level"),
        Index("ix_plab_runs_task_level", "task", "level"),
        Index("ix_plab_runs_study_version", "study_version_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("plab_campaigns.id", ondelete="CASCADE"))
    study_version_id: Mapped[int] = mapped_column(ForeignKey("plab_study_versions.id", ondelete="CASCADE"))
    optuna_study_name: Mapped[str] = mapped_column(String(255))
    trial_number: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(255))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    connectivity: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    connectivity_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    learning: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    learning_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    trigger: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    trigger_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    growth: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    growth_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    composition: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    composition_config: Mapped[Any] = mapped_column(JSON, nullable=True)
    recipe_key: Mapped[str] = mapped_column(String(64), index=True)
    recipe_json: Mapped[Any] = mapped_column(JSON, nullable=True)
    test_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    macs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    samples_seen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    growth_event_count: Mapped[int] = mapped_column(Integer, default=0)
    versions: Mapped[Any] = mapped_column(JSON, nullable=True)
    curve: Mapped[Any] = mapped_column(JSON, nullable=True)  # per epoch: losses, accuracy, params, widths, MACs
    structure: Mapped[Any] = mapped_column(JSON, nullable=True)  # final widths, skip edges, activation
    space_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    promoted_from_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("plab_runs.id", ondelete="SET NULL"), nullable=True)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class GrowthEventRow(Base):
    __tablename__ = "plab_growth_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("plab_runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    slot: Mapped[str] = mapped_column(String(64))
    principle: Mapped[str] = mapped_column(String(255))
    layer: Mapped[int] = mapped_column(Integer)
    units: Mapped[int] = mapped_column(Integer)
    source_units: Mapped[Any] = mapped_column(JSON, nullable=True)
    operation: Mapped[str] = mapped_column(String(64))
    params_delta: Mapped[int] = mapped_column(BigInteger)
    macs_delta: Mapped[int] = mapped_column(BigInteger)
    function_preserving: Mapped[bool] = mapped_column(Boolean)
    loss_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[Any] = mapped_column(JSON, nullable=True)


class PromotionRow(Base):
    __tablename__ = "plab_promotions"
    __table_args__ = (
        UniqueConstraint("to_study_version_id", "recipe_key", name="uq_plab_promotions_once"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    from_study_version_id: Mapped[int] = mapped_column(
        ForeignKey("plab_study_versions.id", ondelete="CASCADE"), index=True)
    to_study_version_id: Mapped[int] = mapped_column(ForeignKey("plab_study_versions.id", ondelete="CASCADE"))
    recipe_key: Mapped[str] = mapped_column(String(64))
    source_run_id: Mapped[int | None] = mapped_column(ForeignKey("plab_runs.id", ondelete="SET NULL"),
                                                      nullable=True)
    source_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


PLAB_TABLES: frozenset[str] = frozenset(Base.metadata.tables)
RUN_FIELDS: frozenset[str] = frozenset(c.key for c in RunRow.__table__.columns) - {"id", "created_at"}
EVENT_FIELDS: frozenset[str] = frozenset(c.key for c in GrowthEventRow.__table__.columns) - {"id", "run_id"}
_RUN_REQUIRED = ("campaign_id", "study_version_id", "optuna_study_name", "trial_number", "task", "level",
                 "seed", "status", "recipe_key")
_EVENT_DEFAULTS: dict[str, Any] = {"step": -1, "epoch": -1, "slot": "", "principle": "", "units": 0,
                                   "params_delta": 0, "macs_delta": 0, "function_preserving": True,
                                   "reason": "", "source_units": [], "details": {}}

_missing_slots = [c for slot in SLOTS for c in (slot, f"{slot}_config") if c not in RUN_FIELDS]
if _missing_slots or not all(name.startswith(TABLE_PREFIX) for name in PLAB_TABLES):  # pragma: no cover
    raise ImportError(f"plab_runs lacks the slot columns {_missing_slots}; add them to RunRow")


# ---------------------------------------------------------------------------------------------- URLs


def default_storage_url(explicit: str | None, campaign_storage: str | None = None) -> str:
    """The storage URL to use: ``explicit`` (``--storage``) > the campaign file's ``storage`` >
    ``$PRINCIPLELAB_STORAGE`` > ``sqlite:///principlelab.db`` (in the current directory)."""
    for candidate in (explicit, campaign_storage, os.environ.get(STORAGE_ENV)):
        if candidate:
            return candidate
    return DEFAULT_STORAGE


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (also for strings SQLAlchemy cannot parse)."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def sqlite_path(url: str | URL) -> Path | None:
    """The absolute file path of a file-based SQLite URL, else None (memory DBs, URI mode, others)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database).expanduser().resolve()


def _one_line(message: str, limit: int = 300) -> str:
    line = " ".join(str(message).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ database


def campaign_row(session: Session, name: str) -> CampaignRow:
    """The campaign called ``name`` in ``session``; :class:`UnknownNameError` listing the known ones if absent."""
    row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
    if row is None:
        raise UnknownNameError("campaign", name, session.scalars(select(CampaignRow.name)))
    return row


class LeaderboardDB:
    """The ``plab_`` tables in one database (SQLite file, PostgreSQL, ...), created and upgraded on open.

    ``create=False`` is for read commands: a SQLite file that does not exist is an error (no empty file
    is created), as is a database without principlelab tables.
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
        self.engine = forget_at_fork(self._make_engine(parsed, echo))
        self._sessions = sessionmaker(expire_on_commit=False)
        self._write_engine = self.engine.execution_options(plab_write=True)
        try:
            self._ensure_schema(create)
        except BaseException:
            self.engine.dispose()
            raise

    # -- engine / connections

    def _make_engine(self, parsed: URL, echo: bool) -> Engine:
        kwargs: dict[str, Any] = {"echo": echo}
        if self.backend == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
        elif self.backend == "postgresql":
            kwargs["pool_pre_ping"] = True
            if "connect_timeout" not in parsed.query:
                kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            raise StorageError(
                f"cannot use storage {self.masked_url}: no database driver for "
                f"{parsed.drivername!r} ({_one_line(str(exc))}); install it (for PostgreSQL: "
                "pip install 'principlelab[postgres]' and use postgresql+psycopg://) or use a sqlite:/// URL"
            ) from None
        except (ArgumentError, TypeError, ValueError) as exc:
            raise StorageError(f"invalid storage URL {self.masked_url}: {_one_line(str(exc))}") from None
        if self.backend == "sqlite":
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def _describe(self, exc: BaseException) -> str:
        """One line for a database error: what failed, where, and what to do."""
        orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
        detail = _one_line(str(orig if orig is not None else exc).split("[SQL:")[0])
        password = make_url(self.url).password
        if password:
            detail = detail.replace(str(password), "***")
        lowered = detail.lower()
        where = self.masked_url
        if "database is locked" in lowered or "database is busy" in lowered:
            return (f"database {where} stayed locked by another writer for more than 30 s ({detail}); "
                    "retry, or use PostgreSQL for many parallel workers")
        if self.sqlite_file is not None and "unable to open database file" in lowered:
            return (f"cannot open database {where}: {detail}; check that {self.sqlite_file.parent} exists "
                    "and is writable, or pass another --storage")
        if isinstance(exc, IntegrityError):
            return f"database {where} rejected a write: {detail}"
        if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            return (f"cannot use database {where}: {detail}; check the URL and that the server is running "
                    "and reachable, or pass another --storage")
        return f"database error on {where}: {type(exc).__name__}: {detail}"

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
            raise StorageError(self._describe(exc)) from exc
        except BaseException:
            _safe_rollback(session)
            raise
        finally:
            session.close()

    def _retry_on_conflict(self, fn: Callable[[Session], Any]) -> Any:
        """``fn`` in a write session; once more if a concurrent writer won a unique-constraint race."""
        try:
            with self.session() as session:
                return fn(session)
        except StorageError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        with self.session() as session:
            return fn(session)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> LeaderboardDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LeaderboardDB({self.masked_url!r})"

    # -- schema

    def _ensure_schema(self, create: bool) -> None:
        try:
            with self.engine.connect() as conn:  # fast path: everything there, version current
                names = set(inspect(conn).get_table_names())
                version = _read_version(conn) if "plab_meta" in names else None
            if names >= PLAB_TABLES and version == SCHEMA_VERSION:
                return
            if not names & PLAB_TABLES and not create:
                raise StorageError(f"no principlelab tables in {self.masked_url}; run a campaign with "
                                   "this --storage first")
            with self._write_engine.begin() as conn:
                if self.backend == "postgresql":  # serialize concurrent creators/upgraders
                    conn.execute(text("SELECT pg_advisory_xact_lock(706162)"))
                self._create_or_upgrade(conn)
        except SQLAlchemyError as exc:
            raise StorageError(self._describe(exc)) from exc

    def _create_or_upgrade(self, conn: Connection) -> None:
        names = set(inspect(conn).get_table_names())
        target = SCHEMA_VERSION
        if not names & PLAB_TABLES:
            Base.metadata.create_all(conn)
        else:
            current = (_read_version(conn) if "plab_meta" in names else None) or 0
            if current > target:
                raise StorageError(
                    f"database {self.masked_url} has principlelab schema version {current}, newer than this "
                    f"principlelab supports ({target}); upgrade principlelab")
            for version in range(current + 1, target + 1):
                migration = MIGRATIONS.get(version)
                if migration is None:
                    raise StorageError(f"no migration to principlelab schema version {version} (database "
                                       f"{self.masked_url} is at {current}); this is a principlelab bug")
                migration(conn)
            Base.metadata.create_all(conn)  # tables new since the stored version
        _write_version(conn, target)

    @property
    def schema_version(self) -> int:
        """The ``schema_version`` stored in ``plab_meta``."""
        with self.session(write=False) as session:
            return _read_version(session.connection()) or 0

    def get_meta(self, key: str) -> str | None:
        with self.session(write=False) as session:
            row = session.get(MetaRow, key)
            return None if row is None else row.value

    def set_meta(self, key: str, value: str) -> None:
        with self.session() as session:
            session.merge(MetaRow(key=key, value=value))

    # -- campaigns and study versions

    def get_or_create_campaign(self, name: str, file_hash: str, spec_json: str) -> CampaignRow:
        """The campaign named ``name``; created if new. A different ``file_hash`` is a ConfigError."""

        def work(session: Session) -> CampaignRow:
            row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
            if row is None:
                row = CampaignRow(name=name, file_hash=file_hash, spec_json=spec_json)
                session.add(row)
                session.flush()
            elif row.file_hash != file_hash:
                raise ConfigError(f"campaign {name!r} already exists in {self.masked_url} with a different "
                                  "campaign file; rename the campaign or use another --storage")
            return row

        return self._retry_on_conflict(work)  # type: ignore[no-any-return]

    def get_campaign(self, name: str) -> CampaignRow | None:
        with self.session(write=False) as session:
            return session.scalar(select(CampaignRow).where(CampaignRow.name == name))

    def require_campaign(self, name: str) -> CampaignRow:
        """The campaign called ``name``; :class:`UnknownNameError` listing the known ones if absent."""
        with self.session(write=False) as session:
            return campaign_row(session, name)

    def campaign_names(self) -> list[str]:
        with self.session(write=False) as session:
            return list(session.scalars(select(CampaignRow.name).order_by(CampaignRow.name)))

    def get_or_create_study_version(self, campaign_id: int, task: str, level: str, level_index: int,
                                    fingerprint: str, space_json: str,
                                    make_study_name: Callable[[int], str]) -> StudyVersionRow:
        """The study version of this campaign/task/level with this search-space ``fingerprint``.

        A fingerprint seen before returns its row (its Optuna study continues); a new one becomes
        version ``latest + 1`` with ``parent_id`` = the latest version, and Optuna study name
        ``make_study_name(version)``.
        """

        def work(session: Session) -> StudyVersionRow:
            same = (StudyVersionRow.campaign_id == campaign_id, StudyVersionRow.task == task,
                    StudyVersionRow.level == level)
            row = session.scalar(select(StudyVersionRow).where(*same,
                                                                StudyVersionRow.fingerprint == fingerprint))
            if row is not None:
                return row
            latest = session.scalar(select(StudyVersionRow).where(*same)
                                    .order_by(StudyVersionRow.version.desc()).limit(1))
            version = 1 if latest is None else latest.version + 1
            row = StudyVersionRow(campaign_id=campaign_id, task=task, level=level, level_index=level_index,
                                  version=version, fingerprint=fingerprint, space_json=space_json,
                                  optuna_study_name=make_study_name(version),
                                  parent_id=None if latest is None else latest.id)
            session.add(row)
            session.flush()
            return row

        return self._retry_on_conflict(work)  # type: ignore[no-any-return]

    def study_versions(self, campaign_id: int, *, task: str | None = None,
                       level: str | None = None) -> list[StudyVersionRow]:
        """Study versions of a campaign ordered by level index, task, level, version."""
        stmt = select(StudyVersionRow).where(StudyVersionRow.campaign_id == campaign_id)
        if task is not None:
            stmt = stmt.where(StudyVersionRow.task == task)
        if level is not None:
            stmt = stmt.where(StudyVersionRow.level == level)
        stmt = stmt.order_by(StudyVersionRow.level_index, StudyVersionRow.task, StudyVersionRow.level,
                             StudyVersionRow.version)
        with self.session(write=False) as session:
            return list(session.scalars(stmt))

    def get_study_version(self, study_version_id: int) -> StudyVersionRow | None:
        with self.session(write=False) as session:
            return session.get(StudyVersionRow, study_version_id)

    # -- runs

    def record_run(self, run: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> int:
        """Write one run and its growth events in one transaction; returns the run id.

        ``run`` holds :data:`RUN_FIELDS` (``campaign_id``, ``study_version_id``, ``optuna_study_name``,
        ``trial_number``, ``task``, ``level``, ``seed``, ``status`` and ``recipe_key`` are required);
        ``events`` are :meth:`GrowthEvent.to_dict` dicts. Idempotent on ``(optuna_study_name,
        trial_number)``: recording a trial again replaces the row's fields (keeping its id) and its
        events. If anything fails, nothing of this call is written.
        """
        unknown = sorted(set(run) - RUN_FIELDS)
        if unknown:
            raise ConfigError(f"record_run: unknown run fields {unknown}; "
                              f"known: {', '.join(sorted(RUN_FIELDS))}")
        missing = [key for key in _RUN_REQUIRED if run.get(key) is None]
        if missing:
            raise ConfigError(f"record_run: missing required run fields {missing}")
        if run["status"] not in RUN_STATUSES:
            raise ConfigError(f"record_run: status {run['status']!r} must be one of "
                              f"{', '.join(RUN_STATUSES)}")
        values: dict[str, Any] = dict.fromkeys(RUN_FIELDS)
        values.update(wall_s=0.0, growth_event_count=len(events))
        values.update({key: _finite_or_none(value) for key, value in run.items()})

        def work(session: Session) -> int:
            row = session.scalar(select(RunRow).where(RunRow.optuna_study_name == values["optuna_study_name"],
                                                      RunRow.trial_number == values["trial_number"]))
            if row is None:
                row = RunRow(**values)
                session.add(row)
            else:
                for key, value in values.items():
                    setattr(row, key, value)
                row.created_at = _now()
                session.execute(delete(GrowthEventRow).where(GrowthEventRow.run_id == row.id))
            session.flush()
            session.add_all([GrowthEventRow(run_id=row.id, **_event_values(ev, i))
                             for i, ev in enumerate(events)])
            session.flush()
            return row.id

        return self._retry_on_conflict(work)  # type: ignore[no-any-return]

    def get_run(self, run_id: int) -> RunRow | None:
        with self.session(write=False) as session:
            return session.get(RunRow, run_id)

    def run_for_trial(self, optuna_study_name: str, trial_number: int) -> RunRow | None:
        with self.session(write=False) as session:
            return session.scalar(select(RunRow).where(RunRow.optuna_study_name == optuna_study_name,
                                                       RunRow.trial_number == trial_number))

    def runs_for_study(self, optuna_study_name: str, *, status: str | None = None) -> list[RunRow]:
        """The runs of one Optuna study (optionally of one status), by trial number."""
        stmt = select(RunRow).where(RunRow.optuna_study_name == optuna_study_name)
        if status is not None:
            stmt = stmt.where(RunRow.status == status)
        with self.session(write=False) as session:
            return list(session.scalars(stmt.order_by(RunRow.trial_number)))

    def runs_for_study_version(self, study_version_id: int, *, status: str | None = None) -> list[RunRow]:
        stmt = select(RunRow).where(RunRow.study_version_id == study_version_id)
        if status is not None:
            stmt = stmt.where(RunRow.status == status)
        with self.session(write=False) as session:
            return list(session.scalars(stmt.order_by(RunRow.trial_number)))

    def growth_events(self, run_id: int) -> list[GrowthEventRow]:
        with self.session(write=False) as session:
            return list(session.scalars(select(GrowthEventRow).where(GrowthEventRow.run_id == run_id)
                                        .order_by(GrowthEventRow.id)))

    # -- promotions

    def record_promotion(self, from_study_version_id: int, to_study_version_id: int, recipe_key: str,
                         source_run_id: int | None, source_value: float | None) -> bool:
        """Mark ``recipe_key`` promoted into ``to_study_version_id``; False if it already was.

        The unique constraint on ``(to_study_version_id, recipe_key)`` makes this a once-only lock:
        of several workers promoting the same recipe, exactly one gets True.
        """
        def exists() -> bool:
            with self.session(write=False) as session:
                return session.scalar(select(PromotionRow.id).where(
                    PromotionRow.to_study_version_id == to_study_version_id,
                    PromotionRow.recipe_key == recipe_key)) is not None

        try:
            with self.session() as session:
                if session.scalar(select(PromotionRow.id).where(
                        PromotionRow.to_study_version_id == to_study_version_id,
                        PromotionRow.recipe_key == recipe_key)) is not None:
                    return False
                session.add(PromotionRow(from_study_version_id=from_study_version_id,
                                         to_study_version_id=to_study_version_id, recipe_key=recipe_key,
                                         source_run_id=source_run_id,
                                         source_value=_finite_or_none(source_value)))
                session.flush()
                return True
        except StorageError as exc:
            if isinstance(exc.__cause__, IntegrityError) and exists():
                return False  # another worker won the race
            raise

    def promotions(self, *, to_study_version_id: int | None = None,
                   from_study_version_id: int | None = None) -> list[PromotionRow]:
        stmt = select(PromotionRow)
        if to_study_version_id is not None:
            stmt = stmt.where(PromotionRow.to_study_version_id == to_study_version_id)
        if from_study_version_id is not None:
            stmt = stmt.where(PromotionRow.from_study_version_id == from_study_version_id)
        with self.session(write=False) as session:
            return list(session.scalars(stmt.order_by(PromotionRow.id)))


# ------------------------------------------------------------------------------------------- helpers


def run_fields(result: dict[str, Any]) -> dict[str, Any]:
    """Run-row fields from :meth:`RunResult.to_dict`: metrics, size, the slot columns and the recipe.

    The caller adds the keys (campaign/study version ids, trial number, status, recipe_key, ...).
    """
    recipe = result.get("recipe") or {}
    fields: dict[str, Any] = {key: result.get(key) for key in (
        "test_accuracy", "val_accuracy", "test_loss", "val_loss", "params", "macs", "samples_seen",
        "wall_s", "versions")}
    fields["growth_event_count"] = len(result.get("growth_events") or ())
    fields["recipe_json"] = recipe or None
    fields.update(slot_fields(recipe))
    return {key: value for key, value in fields.items() if value is not None}


def slot_fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """``{slot: name, slot_config: config}`` for every slot present in a recipe dict."""
    fields: dict[str, Any] = {}
    for slot in SLOTS:
        choice = recipe.get(slot)
        if isinstance(choice, str):
            choice = {"name": choice, "config": {}}
        if isinstance(choice, dict):
            fields[slot] = choice.get("name")
            fields[f"{slot}_config"] = choice.get("config") or {}
    return fields


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _event_values(event_dict: dict[str, Any], index: int) -> dict[str, Any]:
    unknown = sorted(set(event_dict) - EVENT_FIELDS)
    if unknown:
        raise ConfigError(f"record_run: growth event {index} has unknown fields {unknown}; "
                          f"known: {', '.join(sorted(EVENT_FIELDS))}")
    values = {**_EVENT_DEFAULTS, **event_dict}
    values["source_units"] = list(values.get("source_units") or ())
    for key in ("loss_before", "loss_after"):
        values[key] = _finite_or_none(values.get(key))
    return values


def _read_version(conn: Connection) -> int | None:
    raw = conn.execute(select(MetaRow.value).where(MetaRow.key == "schema_version")).scalar()
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return 0


def _write_version(conn: Connection, version: int) -> None:
    updated = conn.execute(update(MetaRow).where(MetaRow.key == "schema_version").values(value=str(version)))
    if not updated.rowcount:
        conn.execute(insert(MetaRow).values(key="schema_version", value=str(version)))


def _safe_rollback(session: Session) -> None:
    with suppress(SQLAlchemyError):  # the connection is gone; nothing to undo
        session.rollback()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (transactional DDL, IMMEDIATE)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("plab_write") else "BEGIN")
