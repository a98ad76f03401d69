"""One journal append for a trial's sampled parameters: :class:`BatchedTrialWrites`.

Optuna's :class:`~optuna.storages.JournalStorage` appends one log, and reads back every log
appended since, for each ``suggest_*`` and each ``set_user_attr``: a campaign trial samples about
twenty parameters, so about twenty database transactions and twenty reads before it trains. Inside
:meth:`BatchedTrialWrites.batched_writes` the trial's parameter and attribute writes are queued in
this process and appended together, in one transaction, when the block ends (or before any other
write); reads in the block see the queued writes and do not go back to the database.

What the batch changes, and why it is safe here:

* other workers see the trial's parameters when the block ends, not one by one: nothing reads a
  half-sampled trial of another worker (TPE's constant liar skips trials without the parameter);
* reads in the block come from this process's replay of the journal as of the block's start: the
  sampler's view of finished trials is a few milliseconds old, as if the trial had started earlier;
* a worker killed inside the block loses the queued writes of a trial that has not started
  training; its heartbeat stops, the trial is failed and retried (with no parameters: sampled anew);
* a write the replay would refuse (a distribution incompatible with an earlier trial's) raises
  when the block ends instead of at the ``suggest`` call; principlelab's study versions make that
  impossible (a changed space is a new study).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Container, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import json_to_distribution
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

__all__ = ["FRESH_READS_S", "READ_THROUGH_WINDOW_S", "BatchedTrialWrites", "fresh_reads", "trial_writes"]

READ_THROUGH_WINDOW_S = 0.05
"""In a ``read_through`` block, reads within this many seconds of the block's last sync reuse it."""

FRESH_AT_START_S = 0.002
"""A block starts from the replay as it is when that was synced less than this many seconds ago (a
trial's ``get_trial`` just before, say), instead of syncing again."""

FRESH_READS_S = 0.002
"""Inside :func:`fresh_reads`, a read outside a batch reuses the last sync when it is younger than this."""

_BATCHABLE = {JournalOperation.SET_TRIAL_PARAM, JournalOperation.SET_TRIAL_USER_ATTR,
              JournalOperation.SET_TRIAL_SYSTEM_ATTR, JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE}


@dataclass
class _Batch:
    trial_id: int
    read_through: bool = False  # reads still sync (see other workers' writes); only the writes wait
    synced_at: float = -1e9  # time.monotonic() of the block's last sync
    logs: list[dict[str, Any]] = field(default_factory=list)
    stale: bool = False  # another write went to the database: the next read must sync
    lingering: bool = False  # its block has ended; the queue goes out with the next write that cannot wait
    _changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # the queued logs, decoded once
    _overlaid: tuple[FrozenTrial, int, FrozenTrial] | None = None  # (the replayed trial, len(changes), result)

    def queue(self, log: dict[str, Any]) -> None:
        op = log["op_code"]
        self.logs.append(log)
        if op == JournalOperation.SET_TRIAL_PARAM:
            distribution = json_to_distribution(log["distribution"])
            value = distribution.to_external_repr(log["param_value_internal"])
            self._changes.append(("param", log["param_name"], (distribution, value)))
        elif op == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE:
            self._changes.append(("intermediate_values", log["step"], log["intermediate_value"]))
        else:
            attrs = "user_attrs" if op == JournalOperation.SET_TRIAL_USER_ATTR else "system_attrs"
            (key, value), = log["user_attr" if attrs == "user_attrs" else "system_attr"].items()
            self._changes.append((attrs, key, value))

    def take(self) -> list[dict[str, Any]]:
        """The queued logs, removed from the queue (they are about to be appended)."""
        logs, self.logs, self._changes, self._overlaid = self.logs, [], [], None
        return logs

    def overlay(self, trial: FrozenTrial) -> FrozenTrial:
        """``trial`` (the replayed one) with the queued writes applied; a copy, ``trial`` is not changed.

        Samplers read the trial once per parameter while the queue grows by one each time: a new copy
        starts from the last one made of the same ``trial`` and applies only the writes queued since."""
        if not self._changes:
            return trial
        base, applied = trial, 0
        if self._overlaid is not None and self._overlaid[0] is trial:
            base, applied = self._overlaid[2], self._overlaid[1]
            if applied == len(self._changes):
                return base
        out = copy.copy(base)
        out.params, out.distributions = dict(base.params), dict(base.distributions)
        out.user_attrs, out.system_attrs = dict(base.user_attrs), dict(base.system_attrs)
        out.intermediate_values = dict(base.intermediate_values)
        for what, key, value in self._changes[applied:]:
            if what == "param":
                out.distributions[key], out.params[key] = value
            else:
                getattr(out, what)[key] = value
        self._overlaid = (trial, len(self._changes), out)
        return out


class BatchedTrialWrites:
    """Mixin for a :class:`~optuna.storages.JournalStorage` subclass (listed before it): batched trial writes.

    Only the thread that opened the batch is affected; every other thread reads and writes as usual.
    """

    _thread_lock: threading.Lock
    _batches: dict[int, _Batch]  # by thread ident; created on first use (JournalStorage has no hook)
    _synced_at: float  # time.monotonic() of the last sync with the database; set by the first
    fresh_reads_s: float = 0.0  # see fresh_reads(); 0: every read outside a batch syncs, as Optuna's

    @contextmanager
    def batched_writes(self, trial_id: int, *, read_through: bool = False, sync_now: bool = False,
                       until_next_write: bool = False) -> Iterator[None]:
        """Queue ``trial_id``'s parameter, attribute and intermediate-value writes in this block; append
        them in one go at its end.

        The queued writes are appended also when the block raises (a rejected combination keeps the
        parameters it sampled, a pruned trial its reports). With ``read_through`` reads still sync
        with the database, at most once per :data:`READ_THROUGH_WINDOW_S` (a pruner comparing with
        other workers' trials sees their reports up to then); without, reads come from the replay
        as of the block's start, synced then unless a sync was made less than :data:`FRESH_AT_START_S`
        before; ``sync_now`` syncs in any case (another process has just written what the block reads).
        With ``until_next_write`` the queue is not appended when the block ends but with this thread's
        next write that cannot wait (the trial's state, from Optuna's ``tell``), in the same append;
        until then reads still see it and the trial's attributes still join it. Blocks do not nest.
        """
        thread = threading.get_ident()
        with self._thread_lock:
            self._flush_lingering()  # a queue the last block left waiting goes out first
            if self._active_batch() is not None:
                raise RuntimeError("batched_writes blocks do not nest")
            if sync_now:
                self._sync_anyway()
            elif time.monotonic() - self.__dict__.get("_synced_at", -1e9) > FRESH_AT_START_S:
                self._sync_with_backend()  # the view the block's reads are served from
            self.__dict__.setdefault("_batches", {})[thread] = _Batch(trial_id, read_through, time.monotonic())
        try:
            yield
        finally:
            with self._thread_lock:
                batch = self._batches[thread]
                batch.lingering = True  # the block has ended
                if not (until_next_write and batch.logs):
                    self._flush_lingering()

    def _flush_lingering(self) -> None:
        """Append the queue of this thread's batch whose block has ended, and forget the batch (under the lock)."""
        batch = self._active_batch()
        if batch is None or not batch.lingering:
            return
        del self._batches[threading.get_ident()]
        logs = batch.take()
        if logs:
            self._backend.append_logs(logs)  # type: ignore[attr-defined]
            self._sync_with_backend()

    def _active_batch(self) -> _Batch | None:
        """This thread's open batch, if any."""
        batches = self.__dict__.get("_batches")
        return batches.get(threading.get_ident()) if batches else None

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        batch = self._active_batch()
        log = {"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields}  # type: ignore
        if batch is not None and op_code in _BATCHABLE and extra_fields.get("trial_id") == batch.trial_id:
            batch.queue(log)
            return
        pending: list[dict[str, Any]] = []
        if batch is not None:  # any other write: the queue first, in the same append, keeping the order
            pending = batch.take()
            if batch.lingering:  # its block has ended: this write closes it
                del self._batches[threading.get_ident()]
            else:
                batch.stale = True
        self._backend.append_logs([*pending, log])  # type: ignore[attr-defined]

    def sync_with_database(self) -> None:
        """Read every log appended since the last sync, whatever that sync's age (a read that must see
        every worker's writes, such as counting trials under the trial-start lock)."""
        with self._thread_lock:
            self._sync_anyway()

    def _sync_anyway(self) -> None:
        """Optuna's sync with the database, whatever the last one's age (under the lock)."""
        super()._sync_with_backend()  # type: ignore[misc]
        self._synced_at = time.monotonic()

    def _sync_with_backend(self) -> None:
        batch = self._active_batch()
        if (batch is None and self.fresh_reads_s > 0 and not self._backend.has_unread_appends()  # type: ignore
                and time.monotonic() - self.__dict__.get("_synced_at", -1e9) < self.fresh_reads_s):
            return  # a burst of reads (Optuna's at a trial's start): the last sync serves them
        if batch is not None and not batch.stale:
            if not batch.read_through:
                return  # reads in the block: this process's replay plus the queue
            now = time.monotonic()
            if now - batch.synced_at < READ_THROUGH_WINDOW_S:
                return  # a pruner's burst of reads: one sync serves them all
            batch.synced_at = now
        if batch is not None:
            batch.stale = False
        super()._sync_with_backend()  # type: ignore[misc]
        self._synced_at = time.monotonic()

    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial: FrozenTrial = super().get_trial(trial_id)  # type: ignore[misc]
        batch = self._active_batch()
        return batch.overlay(trial) if batch is not None and batch.trial_id == trial_id else trial

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials: list[FrozenTrial] = super().get_all_trials(study_id, deepcopy, states)  # type: ignore[misc]
        batch = self._active_batch()
        if batch is None or not batch.logs:
            return trials  # (nothing queued: the replayed trials as they are)
        return [batch.overlay(t) if t._trial_id == batch.trial_id else t for t in trials]


def trial_writes(storage: Any, trial_id: int, *, read_through: bool = False, sync_now: bool = False,
                 until_next_write: bool = False) -> AbstractContextManager[None]:
    """``storage.batched_writes(trial_id, ...)`` for a storage with batched trial writes (principlelab's
    journal storage); for any other storage (Optuna's ``rdb``) a block that changes nothing."""
    batched = getattr(storage, "batched_writes", None)
    if batched is None:
        return nullcontext()
    return batched(trial_id, read_through=read_through, sync_now=sync_now,  # type: ignore[no-any-return]
                   until_next_write=until_next_write)


@contextmanager
def fresh_reads(storage: Any, window_s: float | None = None) -> Iterator[None]:
    """In this block, ``storage``'s reads outside a batch reuse a sync younger than ``window_s`` (default
    :data:`FRESH_READS_S`), unless this process appended to the journal since (its own writes are
    always read back).

    At a trial's start Optuna reads the journal five times within a few milliseconds (stale trials,
    the waiting trials, the new trial, ...), each a database query. Reads in the block may miss
    another worker's write of the last ``window_s``, as if they had been made that much earlier; a
    read that must not (the trial count under the trial-start lock) calls ``sync_with_database``
    first. Only for a worker that reads its own trials: not while another process of this worker
    (the sampling process) writes trials for it. A storage without batched writes is left as it is.
    """
    if not isinstance(storage, BatchedTrialWrites):
        yield
        return
    before, storage.fresh_reads_s = storage.fresh_reads_s, FRESH_READS_S if window_s is None else window_s
    try:
        yield
    finally:
        storage.fresh_reads_s = before
