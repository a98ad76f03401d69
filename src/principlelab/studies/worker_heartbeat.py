"""One heartbeat thread per worker, instead of Optuna's one per trial: :class:`WorkerHeartbeat`.

``study.optimize`` starts a thread for every trial, which records a heartbeat as it starts and then
every ``heartbeat_interval`` seconds, and joins it when the trial ends. For a coarse trial that
trains for 50 ms, starting and joining the thread and its first beat (a database write, competing
with the trial for the interpreter) are about a millisecond of machinery. :class:`WorkerHeartbeat`
runs one thread for as long as the worker runs trials: a trial registers while it trains
(:meth:`WorkerHeartbeat.beating`), gets its first beat :data:`FIRST_BEAT_S` seconds after it
started (or after ``heartbeat_interval`` if that is shorter), then one every ``heartbeat_interval``.
A trial that ends sooner is never beaten: :class:`~principlelab.studies.journal_storage.SQLJournalStorage`
counts a running trial without a beat from its start, so whether a trial is stale is decided as
before. (Only before the first beat does that use the worker's own clock rather than the
database's: the trial's start time. A worker whose clock is off by nearly the grace period could
be taken for dead in that first half second.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import Any

__all__ = ["FIRST_BEAT_S", "WorkerHeartbeat", "heartbeat_for"]

FIRST_BEAT_S = 0.5
"""Seconds after a trial starts before its first heartbeat; a trial that ends sooner gets none."""

_logger = logging.getLogger(__name__)


class WorkerHeartbeat:
    """The heartbeat of every trial this process trains, from one thread (a context manager).

    ``storage`` is a storage with heartbeats (``record_heartbeat``, ``get_heartbeat_interval``) that
    can tell Optuna to start no thread of its own (``optuna_heartbeat_threads``): principlelab's
    journal storage. Use :meth:`optimizing` around ``study.optimize`` and :meth:`beating` around a
    trial's training.
    """

    def __init__(self, storage: Any) -> None:
        interval = storage.get_heartbeat_interval()
        if interval is None:
            raise ValueError("the storage has no heartbeat interval: nothing to beat")
        self.storage, self.interval = storage, float(interval)
        self.first_beat_s = min(FIRST_BEAT_S, self.interval)
        self._due: dict[int, float] = {}  # trial id -> time.monotonic() of its next beat
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WorkerHeartbeat:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="principlelab-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @contextmanager
    def optimizing(self) -> Iterator[None]:
        """In this block ``study.optimize`` starts no heartbeat thread and fails no stale trials (the
        caller does that before); the trials it runs must register with :meth:`beating`."""
        self.storage.optuna_heartbeat_threads = False
        try:
            yield
        finally:
            self.storage.optuna_heartbeat_threads = True

    @contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beat for ``trial_id`` while the block runs (first after :attr:`first_beat_s` seconds)."""
        with self._lock:
            self._due[trial_id] = time.monotonic() + self.first_beat_s
        try:
            yield
        finally:
            with self._lock:
                self._due.pop(trial_id, None)

    def _run(self) -> None:
        tick = self.first_beat_s / 2  # a beat is at most this late
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                due = [trial_id for trial_id, at in self._due.items() if at <= now]
                for trial_id in due:
                    self._due[trial_id] = now + self.interval
            for trial_id in due:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a lost connection: the next beat tries again
                    _logger.warning(f"heartbeat of trial {trial_id} failed ({type(exc).__name__}: {exc}); "
                                    "retrying at the next beat")


class _OptunasOwn:
    """The heartbeat of a storage that :class:`WorkerHeartbeat` cannot serve: Optuna's thread per trial."""

    def __enter__(self) -> _OptunasOwn:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def optimizing(self) -> AbstractContextManager[None]:
        return nullcontext()

    def beating(self, trial_id: int) -> AbstractContextManager[None]:
        return nullcontext()


def heartbeat_for(storage: Any) -> WorkerHeartbeat | _OptunasOwn:
    """A :class:`WorkerHeartbeat` for principlelab's journal storage with heartbeats; for any other
    storage (Optuna's ``rdb``, or no heartbeats) an object with the same methods that changes nothing."""
    if hasattr(storage, "optuna_heartbeat_threads") and storage.get_heartbeat_interval() is not None:
        return WorkerHeartbeat(storage)
    return _OptunasOwn()
