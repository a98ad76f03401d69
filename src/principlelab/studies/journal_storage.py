"""The journal storage with heartbeats: :class:`SQLJournalStorage` and :func:`journal_storage`.

The journal itself (the append-only table, its locking and ordering) is in
:mod:`principlelab.studies.journal`; this module adds Optuna's heartbeat protocol on a
``plab_optuna_heartbeats`` table so a killed worker's trial is failed and retried.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    Table,
    bindparam,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from principlelab.studies.journal import (
    DEFAULT_HEARTBEAT_TABLE,
    DEFAULT_JOURNAL_TABLE,
    SQLJournalBackend,
    SQLJournalSnapshotBackend,
    StaleTrialCallback,
    _logger,
)
from principlelab.studies.journal_batch import BatchedTrialWrites
from principlelab.studies.journal_sql import _create_tables, _db_epoch_sql, _make_engine

__all__ = ["SQLJournalStorage", "journal_storage"]


class SQLJournalStorage(BatchedTrialWrites, JournalStorage, BaseHeartbeat):
    """:class:`optuna.storages.JournalStorage` on :class:`SQLJournalBackend`, with heartbeats.

    The heartbeat works like :class:`optuna.storages.RDBStorage`'s: ``study.optimize`` records one every
    ``heartbeat_interval`` seconds (table ``plab_optuna_heartbeats``: trial id, last beat in seconds
    since the epoch, read from the database clock) and, before each trial, fails the study's RUNNING
    trials whose last beat is older than ``grace_period`` (default ``2 * heartbeat_interval``), then
    calls ``heartbeat_stale_trial_callback`` (e.g. Optuna's retry callback) on each.
    :func:`optuna.storages.fail_stale_trials` does the same on demand. A RUNNING trial without any
    heartbeat counts from its start (its worker died before the first beat).

    Args:
        url: SQLAlchemy URL (SQLite file or PostgreSQL).
        table: journal table (see :class:`SQLJournalBackend`).
        heartbeat_table: heartbeat table; default ``plab_optuna_heartbeats`` for the default journal
            table, ``{table}_heartbeats`` otherwise (trial ids are per journal).
        heartbeat_interval: seconds between heartbeats, or None: no heartbeats.
        grace_period: seconds without a heartbeat after which a running trial is stale.
        heartbeat_stale_trial_callback: called with ``(study, failed_trial)`` for every stale trial
            failed; ``failed_trial_callback`` is its older name (Optuna < 4.9).
        snapshots: keep Optuna's pickled replay state every 100 trials (see
            :class:`SQLJournalSnapshotBackend`): faster start of new workers, slower trials.
        engine_kwargs: extra :func:`sqlalchemy.create_engine` arguments.
    """

    def __init__(self, url: str | URL, *, table: str = DEFAULT_JOURNAL_TABLE, heartbeat_table: str | None = None,
                 heartbeat_interval: int | None = None, grace_period: int | None = None,
                 heartbeat_stale_trial_callback: StaleTrialCallback | None = None,
                 failed_trial_callback: StaleTrialCallback | None = None, snapshots: bool = False,
                 engine_kwargs: dict[str, Any] | None = None) -> None:
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("The value of `heartbeat_interval` should be a positive integer.")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("The value of `grace_period` should be a positive integer.")
        if heartbeat_stale_trial_callback is not None and failed_trial_callback is not None:
            raise ValueError("Specify only one of `heartbeat_stale_trial_callback` and `failed_trial_callback`.")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        # False while a WorkerHeartbeat beats for this process's trials (studies/worker_heartbeat.py): Optuna
        # then sees no heartbeat interval, and its study.optimize starts no thread per trial
        self.optuna_heartbeat_threads = True
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback or failed_trial_callback
        self.failed_trial_callback = self.heartbeat_stale_trial_callback
        if heartbeat_table is None:
            heartbeat_table = DEFAULT_HEARTBEAT_TABLE if table == DEFAULT_JOURNAL_TABLE else f"{table}_heartbeats"
        self._heartbeat_table_name = heartbeat_table
        self._engine_kwargs = dict(engine_kwargs or {})
        self._hb_lock = threading.Lock()
        self._hb: _Heartbeats | None = None
        backend_cls = SQLJournalSnapshotBackend if snapshots else SQLJournalBackend
        backend = backend_cls(url, table=table, engine_kwargs=engine_kwargs)
        super().__init__(backend)
        if heartbeat_interval is not None:
            self._heartbeats()  # create the table now, not in the first trial

    @property
    def backend(self) -> SQLJournalBackend:
        assert isinstance(self._backend, SQLJournalBackend)
        return self._backend

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_hb", None)
        state.pop("_hb_lock", None)
        state.pop("_batches", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._hb = None
        self._hb_lock = threading.Lock()

    def forget_locks(self) -> None:
        """In a forked child: new locks (the fork copied the parent's, which one of its other threads might hold)."""
        self._thread_lock = threading.Lock()
        self._hb_lock = threading.Lock()
        self.backend.forget_locks()

    def restore_replay_result(self, snapshot: bytes) -> None:
        """Optuna's, but a snapshot this Optuna cannot unpickle (another version) is ignored, not fatal."""
        try:
            super().restore_replay_result(snapshot)
        except Exception as exc:
            _logger.warning(f"Ignoring the journal snapshot ({type(exc).__name__}: {exc}); replaying the journal.")

    def dispose(self) -> None:
        """Close pooled connections (journal and heartbeats)."""
        self.backend.dispose()
        with self._hb_lock:
            if self._hb is not None:
                self._hb.engine.dispose()

    def _heartbeats(self) -> _Heartbeats:
        # its own engine and pool: the heartbeat thread never waits for JournalStorage's lock or pool
        with self._hb_lock:
            if self._hb is None:
                self._hb = _Heartbeats(self.backend.url, self._heartbeat_table_name, self._engine_kwargs)
            return self._hb

    # ------------------------------------------------------------------------------- heartbeat
    def record_heartbeat(self, trial_id: int) -> None:
        self._heartbeats().beat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return []
        now, beats = self._heartbeats().last_beats([t._trial_id for t in running])
        stale = []
        for trial in running:
            last = beats.get(trial._trial_id)
            if last is None:  # died before its first beat: count from its start (naive local time)
                last = trial.datetime_start.timestamp() if trial.datetime_start is not None else None
            if last is not None and now - last > grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval if self.optuna_heartbeat_threads else None

    def get_heartbeat_stale_trial_callback(self) -> StaleTrialCallback | None:
        return self.heartbeat_stale_trial_callback

    def get_failed_trial_callback(self) -> StaleTrialCallback | None:  # Optuna < 4.9
        return self.heartbeat_stale_trial_callback


class _Heartbeats:
    """``(trial_id, beat_at)`` rows, ``beat_at`` in seconds since the epoch from the database clock."""

    def __init__(self, url: URL, table: str, engine_kwargs: dict[str, Any]) -> None:
        self.engine = _make_engine(url, engine_kwargs)
        self.table = Table(table, MetaData(),
                           Column("trial_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                  autoincrement=False),
                           Column("beat_at", Float, nullable=False))
        _create_tables(self.engine, [self.table])
        self._q = self.engine.dialect.identifier_preparer.format_table(self.table)
        self._now_sql = _db_epoch_sql(self.engine.dialect.name)
        self._beat_sql = None if self._now_sql is None else text(  # SQLite and PostgreSQL: one upsert
            f"INSERT INTO {self._q} (trial_id, beat_at) VALUES (:t, {self._now_sql}) "
            "ON CONFLICT (trial_id) DO UPDATE SET beat_at = excluded.beat_at")

    def _now(self, conn: Connection) -> float:
        if self._now_sql is None:
            return time.time()
        return float(conn.execute(text(f"SELECT {self._now_sql}")).scalar_one())

    def beat(self, trial_id: int) -> None:
        with self.engine.connect() as conn:
            if self._beat_sql is not None:
                conn.execute(self._beat_sql, {"t": trial_id})
                return
            now = self._now(conn)
            conn.exec_driver_sql("BEGIN")
            updated = conn.execute(self.table.update().where(self.table.c.trial_id == trial_id).values(beat_at=now))
            if updated.rowcount == 0:
                conn.execute(self.table.insert().values(trial_id=trial_id, beat_at=now))
            conn.exec_driver_sql("COMMIT")

    def last_beats(self, trial_ids: list[int]) -> tuple[float, dict[int, float]]:
        """The database clock now and the last beat of each of ``trial_ids`` that has one."""
        select = text(f"SELECT trial_id, beat_at FROM {self._q} WHERE trial_id IN :ids").bindparams(
            bindparam("ids", expanding=True))
        with self.engine.connect() as conn:
            now = self._now(conn)
            beats = {int(tid): float(at) for tid, at in conn.execute(select, {"ids": trial_ids})}
        return now, beats


# ------------------------------------------------------------------------------------------- helper


def journal_storage(url: str, *, heartbeat_interval: int | None, grace_period: int | None,
                    stale_trial_callback: StaleTrialCallback | None,
                    table: str = DEFAULT_JOURNAL_TABLE) -> SQLJournalStorage:
    """principlelab's Optuna storage on ``url``: journal plus heartbeats (see :class:`SQLJournalStorage`).

    Raises:
        principlelab.errors.StorageError: the database cannot be opened or its tables created.
    """
    from principlelab.errors import StorageError

    try:
        return SQLJournalStorage(url, table=table, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                 heartbeat_stale_trial_callback=stale_trial_callback)
    except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:  # bad URL, driver, path, server
        try:
            shown = make_url(url).render_as_string(hide_password=True)
        except Exception:
            shown = "the given URL"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"cannot open the Optuna journal storage at {shown}: {detail}") from None
