"""Sample the next trial in a second process while this one trains (a worker with a free core, first level).

A worker spends most of a coarse trial's machinery outside training: TPE over a few dozen
conditional parameters, then the run row and Optuna's state change (docs/performance.md). When a
level starts, a worker that has a free core beside it (:func:`can_sample_ahead`: a lone
``plab campaign run``, or ``--workers N`` and ``plab worker`` on a machine with twice as many
cores) forks a process onto it that does that work while the worker trains. Per trial:

==============================================  ==============================================
worker (trains)                                 sampling process
==============================================  ==============================================
receives trial N (created and sampled);         decides under the level's start lock (budget,
asks for another                                retries first, stale trials), creates N+2,
trains N (its pruner reports and decisions      samples it in one append, sends it
are its own); sends N's run row and state       writes N's run row, then tells Optuna N's state
==============================================  ==============================================

The worker keeps two trials asked for: a trial pruned at its first rung trains for less time than
sampling the next takes, and the second one in hand covers it. The process handles messages in
order, so TPE samples trial N+2 seeing trials up to N-1 finished and N, N+1 running: two trials of
lag, as three workers would have, and the same sequence on every rerun of a seeded campaign. A
sampled trial waits for at most two trials' time, with the process keeping its heartbeat. If the
worker dies, the process still writes what the worker sent, then exits (its pipe closes); the
trials it was training and had waiting are failed by heartbeat and retried, as a dead worker's
trial always is. If the worker stops on an exception, the trials sampled for nothing are failed and
retried at once.

Handing the run row and the state change over keeps decisions independent of timing only when the
pruner ignores other trials' states: Hyperband and successive halving compare rung values, which the
worker writes itself before it hands a trial over. The median and Wilcoxon pruners compare with
complete trials, so which trials the worker's pruner, and the sampler, see complete would depend on
when the process tells them: with those pruners the worker samples, records and tells itself
(:data:`PRUNERS`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import time
import traceback
import warnings
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from principlelab.errors import ConfigError, PrincipleLabError
from principlelab.studies.journal_batch import trial_writes
from principlelab.studies.journal_storage import SQLJournalStorage
from principlelab.studies.objective import INTERRUPTED, NOT_RUN, Objective, worker_id
from principlelab.studies.optuna_setup import HEARTBEAT_INTERVAL_S, make_storage

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from principlelab.studies.campaign import CampaignRunner, LevelProgress
    from principlelab.studies.objective import LevelContext


def free_cores() -> int:
    """CPU cores this process may run on."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        return int(counter() or 1)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def forks_here() -> bool:
    """Whether principlelab forks the sampling process on this platform (Linux only: ``fork`` starts
    it in milliseconds; macOS's ``fork`` is unsafe with system frameworks, Windows has none)."""
    return sys.platform.startswith("linux")


def can_sample_ahead(local_workers: int = 1) -> bool:
    """Sampling ahead by default: a platform that forks, and a free core for the sampling process of
    each of the ``local_workers`` worker processes on this machine (one core each to train on)."""
    return forks_here() and free_cores() >= 2 * local_workers


PRUNERS = ("hyperband", "successive_halving", "none")
"""The pruners a level samples ahead with: their decisions ignore other trials' states (see above)."""

TRIALS_IN_HAND = 2
"""Trials the worker keeps asked for (the one it will train next and one more): the lag of TPE's view."""


@dataclass(frozen=True)
class Proposal:
    """A trial the sampling process created and sampled, and the level's progress as it decided."""

    trial_id: int
    number: int
    progress: tuple[int, int | None, int, float | None]  # done, target, running, best


class SampleAheadError(PrincipleLabError):
    """The sampling process failed or exited."""


class SampleAhead:
    """The worker's side of the sampling process (a context manager; see the module docstring)."""

    def __init__(self, runner: CampaignRunner, ctx: LevelContext, study: optuna.Study, target: int | None,
                 deadline: float | None) -> None:
        self.runner, self.ctx, self.study, self.target, self.deadline = runner, ctx, study, target, deadline
        self.requested = 0  # trials asked for and not yet received
        self.interrupted: int | None = None  # the trial in training when the worker was interrupted

    def __enter__(self) -> SampleAhead:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(self.runner, self.ctx, child, self.conn, worker_id(), self.target, self.deadline),
            name="principlelab-sampler", daemon=True)
        # The child's garbage collections skip the objects it inherited: a full collection over the
        # worker's heap (torch, sklearn, Optuna) took ~200 ms in the child, copying each page it
        # touched, and held up the worker when the child held SQLite's write lock meanwhile.
        gc.freeze()
        try:
            with warnings.catch_warnings():  # Python >= 3.12 warns on fork with threads: the child uses none of them
                warnings.simplefilter("ignore", DeprecationWarning)
                self.process.start()
        finally:
            gc.unfreeze()  # the worker collects as before
        child.close()
        return self

    def finish(self, trial: optuna.Trial, value: float | None, state: TrialState,
               records: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        """Hand over a trial's run rows and final state: the process writes the rows, then tells Optuna."""
        self._send(("finish", trial.number, value, state, records))

    def request(self) -> None:
        """Ask for the next trial (sampled while the caller trains the current one)."""
        self._send("next")
        self.requested += 1

    def _send(self, message: object) -> None:
        """Send ``message``; if the process has gone (its pipe is closed), raise its own error instead
        of the broken pipe (which click takes for a closed stdout: ``plab`` exited 1 saying nothing
        when the disk filled up)."""
        try:
            self.conn.send(message)
        except OSError:
            while self.conn.poll(1):  # what the process said before it exited: an error, if it failed
                try:
                    said = self.conn.recv()
                except (EOFError, OSError):
                    break
                if isinstance(said, tuple) and said[0] == "error":
                    raise SampleAheadError(_failure(said[1])) from None
            raise self._exited() from None

    def _exited(self) -> SampleAheadError:
        """The error for a sampling process that exited without saying why."""
        self.process.join(1)
        return SampleAheadError(f"the sampling process exited (exit code {self.process.exitcode})")

    def receive(self) -> Proposal | None:
        """The trial asked for, or None when the level needs no more."""
        try:
            message = self.conn.recv()
        except EOFError:
            raise self._exited() from None
        self.requested -= 1
        if isinstance(message, tuple) and message[0] == "error":
            raise SampleAheadError(_failure(message[1]))
        assert message is None or isinstance(message, Proposal)
        return message

    def __exit__(self, *exc_info: object) -> None:
        unused: list[Proposal | None] = []
        while self.requested and self.process.is_alive():  # stopped early: trials were sampled for nothing
            try:
                unused.append(self.receive())
            except (SampleAheadError, OSError, EOFError):
                break
        with suppress(OSError):
            self.conn.send("stop")
        self.process.join(60)  # it writes what is queued first (milliseconds per trial)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        if self.interrupted is not None:
            self.runner.abandon(self.study, self.interrupted, INTERRUPTED)
        for proposal in unused:
            if proposal is not None:
                self.runner.abandon(self.study, proposal.number, NOT_RUN)


def run_sampled_trial(study: optuna.Study, trial_id: int, objective: Objective, ahead: SampleAhead) -> None:
    """Optuna's ``_run_trial`` for a trial the sampling process created: the objective, then the run
    row and the state change, handed to the process. The process keeps the trial's heartbeat (it
    exits when the worker does), so the worker writes none."""
    with trial_writes(study._storage, trial_id, sync_now=True):  # one read for Optuna's three (trial, bracket)
        trial = optuna.Trial(study, trial_id)
    value, state = None, TrialState.FAIL
    try:
        value, state = objective(trial), TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except Exception:  # recorded by the objective, with its reason
        pass
    except KeyboardInterrupt:  # failed with a retry when the sampling process has stopped (SampleAhead.__exit__)
        ahead.interrupted = trial.number
        raise
    ahead.finish(trial, value, state, objective.take_records())


def run_level_sampled_ahead(runner: CampaignRunner, ctx: LevelContext, study: optuna.Study,
                            progress: LevelProgress, target: int | None, deadline: float | None) -> None:
    """The worker's loop: train each trial the sampling process sends while it samples the next."""
    assert ctx.level.pruner_name(ctx.level_index) in PRUNERS, "see the module docstring"
    # a lone worker's pruner compares with rung values it wrote itself: no reads during training; with
    # other workers, its reads see their reports as in the worker (at most one sync per 50 ms)
    objective = Objective(ctx, defer_records=True, read_through=runner.workers > 1)
    with SampleAhead(runner, ctx, study, target, deadline) as ahead:
        for _ in range(TRIALS_IN_HAND):
            ahead.request()
        while ahead.requested:  # until every trial asked for is answered "none due"
            proposal = ahead.receive()
            if proposal is None:  # none due now; one asked for before may still come (a stale trial's retry)
                continue
            progress.done, progress.target, progress.running, progress.best = proposal.progress
            runner.progress(progress)
            ahead.request()
            run_sampled_trial(study, proposal.trial_id, objective, ahead)
    runner.update_progress(progress, study.get_trials(deepcopy=False), ctx)  # with every trial written


# ------------------------------------------------------------------------------- sampling process


def _serve(runner: CampaignRunner, ctx: LevelContext, conn: Connection, workers_end: Connection, worker: str,
           target: int | None, deadline: float | None) -> None:
    """The sampling process: answer each ``next`` with a :class:`Proposal` (or None) and write each
    ``finish``, in order, until ``stop`` or EOF."""
    workers_end.close()  # the fork copied it: open here, the pipe would never close when the worker dies
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the worker, which then stops this process
        runner.progress = lambda _: None  # the worker shows progress
        storage: Any = runner.storage
        if isinstance(storage, SQLJournalStorage):  # the worker's, replayed already (a new one replays the journal)
            storage.forget_locks()
        else:
            storage = make_storage(runner.url, failed_trial_callback=runner.recorder, kind=runner.spec.optuna_storage)
        study = optuna.load_study(study_name=ctx.study_name, storage=storage, sampler=runner.sampler(ctx),
                                  pruner=optuna.pruners.NopPruner())
        beating = is_heartbeat_enabled(storage)
        alive: list[int] = []  # the trial the worker trains, and those sampled for it next
        last_beat = time.monotonic()
        while True:
            if beating and time.monotonic() - last_beat >= HEARTBEAT_INTERVAL_S:
                for trial_id in alive:
                    storage.record_heartbeat(trial_id)
                last_beat = time.monotonic()
            if not conn.poll(max(0.0, last_beat + HEARTBEAT_INTERVAL_S - time.monotonic()) if beating else None):
                continue
            message = conn.recv()
            if message == "stop":
                return
            if isinstance(message, tuple) and message[0] == "finish":
                _, number, value, state, records = message
                for row, events in records:
                    runner.db.record_run(row, events)
                study.tell(number, value, state=state)
                continue
            # "next": the worker took the trial sent last; the ones before it are finished
            proposal = _next_trial(runner, ctx, study, worker, target, deadline)
            alive = alive[-TRIALS_IN_HAND:] + ([proposal.trial_id] if proposal is not None else [])
            conn.send(proposal)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the worker is gone (or interrupted): its trials fail by heartbeat and are retried
    except BaseException:
        with suppress(OSError):
            conn.send(("error", traceback.format_exc()))


def _next_trial(runner: CampaignRunner, ctx: LevelContext, study: optuna.Study, worker: str, target: int | None,
                deadline: float | None) -> Proposal | None:
    """Decide under the start lock, create the trial (a waiting retry first), sample it in one append."""
    from principlelab.studies.campaign import LevelProgress

    progress = LevelProgress(ctx.task, ctx.level.name, 0, target, 0, None)
    with runner.trial_start_lock(ctx.study_name):
        if not runner.may_start_trial(ctx, study, progress, target, deadline):
            return None
        trial = study.ask()
        storage: Any = study._storage
        if is_heartbeat_enabled(storage):
            storage.record_heartbeat(trial._trial_id)
        with trial_writes(storage, trial._trial_id), suppress(ConfigError):
            Objective(ctx).prepare(trial, worker)  # a rejected combination is recorded by the worker
    return Proposal(trial._trial_id, trial.number, (progress.done, progress.target, progress.running, progress.best))


def _failure(trace: str) -> str:
    """The error for the sampling process's traceback ``trace``: its last line first (a full disk reads
    ``sqlite3.OperationalError: database or disk is full``), then the traceback."""
    last = trace.strip().splitlines()[-1] if trace.strip() else "unknown error"
    return f"the sampling process failed: {last}\n{trace.rstrip()}"

