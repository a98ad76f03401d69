"""One ``plab campaign run`` per campaign on an SQLite file: :func:`campaign_runner_lock`.

SQLite is for one process (:func:`~principlelab.studies.optuna_setup.check_workers` refuses
``--workers N``), but nothing stopped a second ``plab campaign run`` of the same campaign, started in
another terminal, from running trials beside the first. Each would believe it is the campaign's only
worker: TPE without constant liar, a sampled-ahead pruner that reads only the rungs it wrote itself,
progress bars that do not count the other's trials.

The runner of a campaign on an SQLite file holds an exclusive POSIX record lock (``lockf``) on one
byte of a lock file beside the database (``<database>-campaigns.lock``; the byte's offset is a hash
of the campaign's name, so different campaigns in one file do not exclude each other). The kernel
releases the lock when the process ends, however it ends, so a killed run never blocks the next one.
The lock is not taken on the database file itself: closing any descriptor of a file drops every
record lock the process holds on it, SQLite's own included. Record locks belong to a process, so a
process that takes one twice (tests running several runners) is counted, not refused; the lock
file stays open for the process's life for the same reason. Platforms without ``fcntl`` take no lock.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from principlelab.errors import ConfigError
from principlelab.studies.sql_setup import mask_url, sqlite_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

__all__ = ["campaign_runner_lock", "lock_file_of"]

_OPEN: dict[Path, int] = {}  # lock file -> descriptor, open for the process's life (see the module docstring)
_HELD: dict[tuple[Path, int], int] = {}  # (lock file, offset) -> how many times this process holds it


def lock_file_of(database: Path) -> Path:
    """The lock file beside an SQLite ``database`` file."""
    return database.with_name(database.name + "-campaigns.lock")


def _offset(campaign: str) -> int:
    """The byte of the lock file that stands for ``campaign``: 56 bits of its name's SHA-256."""
    return int.from_bytes(hashlib.sha256(campaign.encode()).digest()[:7], "big")


@contextmanager
def campaign_runner_lock(url: str, campaign: str) -> Iterator[None]:
    """Hold campaign ``campaign``'s runner lock on the SQLite database ``url`` while the block runs;
    nothing for other databases. Raises :class:`ConfigError` (nothing written) when another process
    holds it."""
    database = sqlite_path(url)
    if database is None or fcntl is None:
        yield
        return
    path, offset = lock_file_of(database), _offset(campaign)
    key = (path, offset)
    if key not in _HELD:
        if path not in _OPEN:
            try:
                _OPEN[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:  # no such folder, or not writable: opening the database says so, in its words
                yield
                return
        try:
            fcntl.lockf(_OPEN[path], fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            holder = _holder(_OPEN[path], offset)
            raise ConfigError(
                f"campaign {campaign!r} is already running on {mask_url(url)}"
                f"{f' in process {holder}' if holder else ' in another process'}: SQLite is for one process. "
                "Wait for it to finish (rerunning then resumes where it stopped), or run several workers on "
                "PostgreSQL (--storage postgresql+psycopg://USER:PASSWORD@HOST/DB, see docs/campaigns.md)") from None
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
            fcntl.lockf(_OPEN[path], fcntl.LOCK_UN, 1, offset)


def _holder(descriptor: int, offset: int) -> int | None:
    """The process holding byte ``offset`` of the open file ``descriptor``, from Linux's ``/proc/locks``
    (``N: POSIX ADVISORY WRITE PID MAJOR:MINOR:INODE START END``); None where it cannot be told."""
    inode = os.fstat(descriptor).st_ino
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 8 and fields[1] == "POSIX" and fields[5].rsplit(":", 1)[-1] == str(inode) \
                        and fields[6] == str(offset):
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None
