"""principlelab's own leaderboard database: :class:`LeaderboardDB` over the ``plab_`` tables.

The tables (:mod:`principlelab.studies.tables`) live in the same database as Optuna's (``--storage``)
but never inside Optuna's schema. :class:`LeaderboardDB` opens (and creates or upgrades) them;
writers are idempotent and transactional so that several workers can share one database.

Its base class :class:`~principlelab.studies.db_connection.LeaderboardConnection` opens the database
and hands out sessions: SQLite connections use WAL, a 30 s busy timeout, foreign keys and
``synchronous=NORMAL``; write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue
instead of failing.

The table classes and the URL helpers are importable from here too, where they were first defined.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from principlelab.core.events import count_growth
from principlelab.errors import ConfigError, StorageError, UnknownNameError
from principlelab.studies.db_connection import LeaderboardConnection
from principlelab.studies.sql_setup import (
    DEFAULT_STORAGE,
    STORAGE_ENV,
    default_storage_url,
    mask_url,
    sqlite_path,
)
from principlelab.studies.tables import (
    EVENT_FIELDS,
    MIGRATIONS,
    PLAB_TABLES,
    RUN_FIELDS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    TABLE_PREFIX,
    Base,
    CampaignRow,
    GrowthEventRow,
    MetaRow,
    PromotionRow,
    RunRow,
    StudyVersionRow,
    event_values,
    finite_or_none,
    run_fields,
    slot_fields,
    utc_now,
)

__all__ = [
    "DEFAULT_STORAGE", "EVENT_FIELDS", "MIGRATIONS", "PLAB_TABLES", "RUN_FIELDS", "RUN_STATUSES", "SCHEMA_VERSION",
    "STORAGE_ENV", "TABLE_PREFIX", "Base", "CampaignRow", "GrowthEventRow", "LeaderboardDB", "MetaRow",
    "PromotionRow", "RunRow", "StudyVersionRow", "campaign_row", "default_storage_url", "mask_url", "run_fields",
    "slot_fields", "sqlite_path",
]

_RUN_REQUIRED = ("campaign_id", "study_version_id", "optuna_study_name", "trial_number", "task", "level",
                 "seed", "status", "recipe_key")


# ------------------------------------------------------------------------------------------ database


def campaign_row(session: Session, name: str) -> CampaignRow:
    """The campaign called ``name`` in ``session``; :class:`UnknownNameError` listing the known ones if absent."""
    row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
    if row is None:
        raise UnknownNameError("campaign", name, session.scalars(select(CampaignRow.name)))
    return row


_RUN_COLUMNS = (*sorted(RUN_FIELDS), "created_at")
"""The columns :func:`_run_upsert` writes, each bound by name as ``v_`` + the column's (see :func:`_bound`)."""


def _bound(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a run row's :data:`_RUN_COLUMNS`) as :func:`_run_upsert`'s parameters."""
    return {f"v_{key}": value for key, value in values.items()}


@functools.cache
def _run_upsert(backend: str) -> Executable | None:
    """``INSERT INTO plab_runs ... ON CONFLICT (trial) DO UPDATE ... RETURNING id`` for ``backend``, built
    once (building it anew for each run cost more than executing it); None where the dialect has none.

    Its values are bound by name (:func:`_bound`), not by column as a plain ``INSERT``'s are, so that it
    also works inside a CTE (:func:`_run_upsert_clearing_events`)."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(backend)
    if dialect is None:
        return None
    runs: Table = RunRow.__table__  # type: ignore[assignment]
    stmt = dialect.insert(runs).values({key: bindparam(f"v_{key}", type_=runs.c[key].type) for key in _RUN_COLUMNS})
    return stmt.on_conflict_do_update(index_elements=[runs.c.optuna_study_name, runs.c.trial_number],
                                      set_={key: stmt.excluded[key] for key in _RUN_COLUMNS}
                                      ).returning(runs.c.id)


@functools.cache
def _run_upsert_clearing_events() -> Executable:
    """PostgreSQL: :func:`_run_upsert` and the deletion of the growth events of an earlier record of the
    same trial as one statement (``WITH run AS (INSERT ...), gone AS (DELETE ...) SELECT id FROM run``),
    sent on its own, which is atomic: one round trip instead of four (begin, insert, delete, commit)."""
    upserted = _run_upsert("postgresql").cte("run")  # type: ignore[union-attr]
    events: Table = GrowthEventRow.__table__  # type: ignore[assignment]
    gone = delete(events).where(events.c.run_id.in_(select(upserted.c.id))).cte("gone")
    return select(upserted.c.id).add_cte(gone)


class LeaderboardDB(LeaderboardConnection):
    """The ``plab_`` tables in one database (SQLite file, PostgreSQL, ...), created and upgraded on open.

    ``create=False`` is for read commands: a SQLite file that does not exist is an error (no empty file
    is created), as is a database without principlelab tables.
    """

    def __repr__(self) -> str:
        return f"LeaderboardDB({self.masked_url!r})"

    # -- campaigns and study versions

    def get_or_create_campaign(self, name: str, file_hash: str, spec_json: str,
                               data_hashes: dict[str, str] | None = None) -> CampaignRow:
        """The campaign named ``name``; created if new. A different ``file_hash`` is a ConfigError, and so
        is a ``file:`` task whose data hash differs from the one stored (a task without one, in a campaign
        an older principlelab started, gets it stored)."""

        def work(session: Session) -> CampaignRow:
            row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
            if row is None:
                row = CampaignRow(name=name, file_hash=file_hash, spec_json=spec_json, data_hashes=data_hashes or None)
                session.add(row)
                session.flush()
                return row
            if row.file_hash != file_hash:
                raise ConfigError(f"campaign {name!r} already exists in {self.masked_url} with a different "
                                  "campaign file; rename the campaign or use another --storage")
            stored = dict(row.data_hashes or {})
            for task, digest in (data_hashes or {}).items():
                if stored.setdefault(task, digest) != digest:
                    raise ConfigError(
                        f"campaign {name!r}: the data of task {task!r} changed since the campaign started (sha256 "
                        f"{stored[task][:12]}... then, {digest[:12]}... now; a relative path is read from the "
                        "current directory); restore the file, or give a campaign on the new data its own name")
            if stored != (row.data_hashes or {}):
                row.data_hashes = stored
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
        ``events`` are :meth:`GrowthEvent.to_dict` dicts; ``growth_event_count`` defaults to how many of
        them are growth (:func:`~principlelab.core.events.count_growth`). Idempotent on ``(optuna_study_name,
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
        values.update(wall_s=0.0, growth_event_count=count_growth(events))
        values.update({key: finite_or_none(value) for key, value in run.items()}, created_at=utc_now())
        event_rows = [event_values(ev, i) for i, ev in enumerate(events)]

        if self.backend == "postgresql" and not event_rows:  # the usual run: no growth events to insert
            with self.single_statement() as conn:
                return int(conn.execute(_run_upsert_clearing_events(), _bound(values)).scalar_one())

        def work(conn: Connection) -> int:
            run_id = self._upsert_run(conn, values)
            events_table: Table = GrowthEventRow.__table__  # type: ignore[assignment]
            conn.execute(delete(events_table).where(events_table.c.run_id == run_id))  # of an earlier record
            if event_rows:
                conn.execute(insert(events_table), [{**ev, "run_id": run_id} for ev in event_rows])
            return run_id

        return self._retry_on_conflict(work, core=True)  # type: ignore[no-any-return]

    def _upsert_run(self, conn: Connection, values: dict[str, Any]) -> int:
        """Insert the run row of ``values``, or overwrite the one of the same trial (keeping its id); its id.

        One ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on SQLite and PostgreSQL (no ORM unit of
        work: this is on every trial's path); a select, then an update or insert, elsewhere."""
        runs: Table = RunRow.__table__  # type: ignore[assignment]
        upsert = _run_upsert(self.backend)
        if upsert is not None:
            return int(conn.execute(upsert, _bound(values)).scalar_one())
        run_id = conn.scalar(select(runs.c.id).where(runs.c.optuna_study_name == values["optuna_study_name"],
                                                     runs.c.trial_number == values["trial_number"]))
        if run_id is None:
            key = conn.execute(insert(runs).values(values)).inserted_primary_key
            assert key is not None, "an INSERT of one row has its primary key"
            return int(key[0])
        conn.execute(update(runs).where(runs.c.id == run_id).values(values))
        return int(run_id)

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
                                         source_value=finite_or_none(source_value)))
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
