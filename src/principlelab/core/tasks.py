"""Classification tasks: a registry of loaders plus fidelity-aware loading into tensors.

A task loader returns a :class:`RawTask` (numpy arrays, already split into train/val/test with a
fixed split seed, so every run of every recipe sees the same validation and test sets).
:func:`load_task` caches the raw data in-process and applies a :class:`Fidelity`: ``data_fraction``
subsamples the training split (seeded by the run's seed) and ``input_resolution`` average-pools the
spatial axes of spatial tasks. Built-ins: ``digits``, ``mnist1d``, ``xor``, ``parity``, ``modadd``;
names starting with ``file:`` load user files (see :mod:`principlelab.core.task_files`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from principlelab.core.recipe import Fidelity, resolve_fidelity
from principlelab.errors import ConfigError, TaskDataError, UnknownNameError

Array = npt.NDArray[Any]
SPLIT_SEED = 0
"""Seed of every fixed train/val/test split; independent of the training seed."""
FILE_PREFIX = "file:"


@dataclass(frozen=True)
class TaskData:
    """One task at one fidelity, as tensors ready for training.

    ``x_*`` are ``[N_split, D]`` float32 contiguous tensors, ``y_*`` are ``[N_split]`` int64 labels
    in ``0..num_classes-1``. ``input_shape`` is the spatial shape of one sample after downsampling
    (``prod(input_shape) == D``); non-spatial tasks have ``input_shape == (D,)``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def in_features(self) -> int:
        """``D``, the number of input features of one flattened sample."""
        return int(self.x_train.shape[1])


@dataclass(frozen=True)
class RawTask:
    """What a task loader returns: the full data, already split, as numpy arrays.

    ``x_*`` are ``[N_split, D]`` (or ``[N_split, *input_shape]``) numeric arrays, ``y_*`` are
    ``[N_split]`` integer labels in ``0..num_classes-1``. ``input_shape`` is the spatial shape of one
    sample (1 to 3 axes), or ``None`` when the features are not spatial (no downsampling possible).
    """

    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    x_test: Array
    y_test: Array
    num_classes: int
    input_shape: tuple[int, ...] | None


_TASKS: dict[str, tuple[Callable[[], RawTask], str]] = {}
_RAW_CACHE: dict[tuple[object, ...], RawTask] = {}
_PINNED: dict[tuple[str, str], tuple[RawTask, str, int]] = {}  # (name, cwd) -> raw data, digest, holds


def register_task(
    name: str, loader: Callable[[], RawTask], *, description: str = "", replace: bool = False
) -> None:
    """Register ``loader`` under ``name``; re-registering needs ``replace=True``."""
    if not name or name.startswith(FILE_PREFIX):
        raise ConfigError(
            f"task name {name!r} is not allowed; use a non-empty name not starting with 'file:'"
        )
    if not callable(loader):
        raise ConfigError(f"task {name!r}: the loader must be a function returning a RawTask, got {loader!r}")
    if name in _TASKS and not replace:
        raise ConfigError(f"task {name!r} is already registered; pass replace=True to override it")
    _TASKS[name] = (loader, description)
    for key in [k for k in _RAW_CACHE if k[0] == name]:
        del _RAW_CACHE[key]


def known_tasks() -> dict[str, str]:
    """``{name: description}`` of every registered task (``file:`` tasks are not listed)."""
    return {name: desc for name, (_, desc) in sorted(_TASKS.items())}


def clear_task_cache() -> None:
    """Forget the in-process raw data of every task (the on-disk mnist1d cache is kept)."""
    _RAW_CACHE.clear()


def pin_file_task(name: str) -> tuple[str, Callable[[], None]]:
    """Read ``file:`` task ``name``'s data once and keep it: until the returned release function is
    called, :func:`load_task` returns this data for ``name`` (relative paths: from the current
    directory), even if the file changes or disappears meanwhile. Returns the SHA-256 of the bytes read
    (:func:`~principlelab.core.task_files.read_file_task`) and the release function. A campaign pins
    its data files for its whole run, so every trial trains on the data whose digest it stored."""
    from principlelab.core import task_files

    if not name.startswith(FILE_PREFIX):
        raise ConfigError(f"only file: tasks are pinned, not {name!r}")
    key = (name, os.getcwd())
    if key in _PINNED:
        raw, digest, holds = _PINNED[key]
    else:
        raw, digest = task_files.read_file_task(name[len(FILE_PREFIX) :])
        raw, holds = _checked(name, raw), 0
    _PINNED[key] = (raw, digest, holds + 1)

    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        raw, digest, holds = _PINNED[key]
        if holds > 1:
            _PINNED[key] = (raw, digest, holds - 1)
        else:
            del _PINNED[key]

    return digest, release


def load_task(name: str, *, fidelity: Fidelity | str | dict[str, Any], seed: int) -> TaskData:
    """Load task ``name`` at ``fidelity`` (a :class:`Fidelity`, a level name such as ``"coarse"``, or a
    dict, as a recipe takes it); ``seed`` picks the ``data_fraction`` training subset.

    Validation and test splits never depend on ``seed`` or ``fidelity.data_fraction``.
    ``fidelity.input_resolution`` < 1 average-pools every spatial axis of size ``s`` to
    ``max(1, round(s * r))``; it is ignored for non-spatial tasks (``input_shape`` None).
    Raises :class:`UnknownNameError` for unknown names and :class:`TaskDataError` for bad data.
    """
    fidelity = resolve_fidelity(fidelity)
    raw = _raw_task(name)
    x_train, y_train = raw.x_train, raw.y_train
    if fidelity.data_fraction < 1.0:
        keep = subsample_indices(y_train, fidelity.data_fraction, seed=seed)
        x_train, y_train = x_train[keep], y_train[keep]
    shape = raw.input_shape
    xs = [_as_float(x) for x in (x_train, raw.x_val, raw.x_test)]
    if shape is not None and fidelity.input_resolution < 1.0:
        new_shape = tuple(max(1, round(s * fidelity.input_resolution)) for s in shape)
        if new_shape != shape:
            xs = [_pool(x, shape, new_shape) for x in xs]
            shape = new_shape
    ys = [torch.tensor(np.asarray(y, dtype=np.int64)) for y in (y_train, raw.y_val, raw.y_test)]
    return TaskData(
        name=name,
        x_train=xs[0],
        y_train=ys[0],
        x_val=xs[1],
        y_val=ys[1],
        x_test=xs[2],
        y_test=ys[2],
        num_classes=raw.num_classes,
        input_shape=shape if shape is not None else (int(xs[0].shape[1]),),
    )


def _as_float(x: Array) -> torch.Tensor:
    """``[N, ...]`` numpy array -> ``[N, D]`` float32 contiguous tensor (a copy, never a view)."""
    return torch.tensor(np.asarray(x, dtype=np.float32).reshape(len(x), -1))


def _pool(x: torch.Tensor, shape: tuple[int, ...], new_shape: tuple[int, ...]) -> torch.Tensor:
    """Average-pool ``[N, prod(shape)]`` to ``[N, prod(new_shape)]`` over 1 to 3 spatial axes."""
    grid = x.reshape(len(x), 1, *shape)
    if len(shape) == 1:
        pooled = F.adaptive_avg_pool1d(grid, new_shape[0])
    elif len(shape) == 2:
        pooled = F.adaptive_avg_pool2d(grid, (new_shape[0], new_shape[1]))
    else:
        pooled = F.adaptive_avg_pool3d(grid, (new_shape[0], new_shape[1], new_shape[2]))
    return pooled.reshape(len(x), -1).contiguous()


def _raw_task(name: str) -> RawTask:
    """The (in-process cached) raw data of ``name``, validated."""
    if name.startswith(FILE_PREFIX):
        from principlelab.core import task_files

        pinned = _PINNED.get((name, os.getcwd()))
        if pinned is not None:
            return pinned[0]

        spec = name[len(FILE_PREFIX) :]
        key: tuple[object, ...] = (name, *task_files.file_stamps(spec))
        loader: Callable[[], RawTask] = functools.partial(task_files.load_file_task, spec)
    elif name in _TASKS:
        key, loader = (name,), _TASKS[name][0]
    else:
        raise UnknownNameError("task", name, known_tasks())
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = _checked(name, loader())
    return _RAW_CACHE[key]


def _checked(name: str, raw: RawTask) -> RawTask:
    """Reject a loader's output whose shapes, labels or class count do not fit together."""
    splits = {
        "train": (raw.x_train, raw.y_train),
        "val": (raw.x_val, raw.y_val),
        "test": (raw.x_test, raw.y_test),
    }
    width = None
    for split, (x, y) in splits.items():
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise TaskDataError(
                f"task {name!r}: {split} split has x of shape {x.shape} and y of shape {y.shape}; "
                "need a non-empty [N, D] x and an [N] y"
            )
        d = int(np.prod(x.shape[1:]))
        if width is not None and d != width:
            raise TaskDataError(f"task {name!r}: {split} split has {d} features but train has {width}")
        width = d
        if d == 0:
            raise TaskDataError(f"task {name!r}: {split} split has no features; need D >= 1")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= raw.num_classes:
            raise TaskDataError(
                f"task {name!r}: {split} labels must be integers in 0..{raw.num_classes - 1}; remap them"
            )
    if raw.num_classes < 2:
        raise TaskDataError(f"task {name!r} has {raw.num_classes} class(es); need at least 2")
    if raw.input_shape is not None and (
        int(np.prod(raw.input_shape)) != width or not 1 <= len(raw.input_shape) <= 3
    ):
        raise TaskDataError(
            f"task {name!r}: input_shape {raw.input_shape} does not fit {width} features (1 to 3 axes)"
        )
    return raw


def _apportion(counts: Array, total: int) -> Array:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder), each <= count."""
    if counts.sum() == 0:
        return np.zeros(len(counts), dtype=np.int64)
    quota = counts * (total / counts.sum())
    base: Array = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - base), kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base


def split_indices(
    y: Array, fractions: Sequence[float], *, seed: int = SPLIT_SEED, stratify: bool = True
) -> list[Array]:
    """Randomly split ``range(len(y))`` into ``1 + len(fractions)`` sorted index arrays.

    Part ``k >= 1`` gets ``round(N * fractions[k-1])`` samples (per class in proportion when
    ``stratify``), part 0 gets the rest. ``y`` is ``[N]``; each result is ``[N_part]`` int64.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    groups = np.unique(y, return_inverse=True)[1] if stratify else np.zeros(len(y), dtype=np.int64)
    members = [rng.permutation(np.flatnonzero(groups == g)) for g in range(int(groups.max(initial=-1)) + 1)]
    left = np.array([len(m) for m in members], dtype=np.int64)
    taken = np.zeros_like(left)
    parts: list[list[Array]] = [[] for _ in range(len(fractions) + 1)]
    for k, frac in enumerate(fractions, start=1):
        counts = _apportion(left, min(int(left.sum()), round(len(y) * frac)))
        for g, m in enumerate(members):
            parts[k].append(m[taken[g] : taken[g] + counts[g]])
        taken, left = taken + counts, left - counts
    parts[0] = [m[taken[g] :] for g, m in enumerate(members)]
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def subsample_indices(y: Array, fraction: float, *, seed: int) -> Array:
    """Sorted ``[max(C, round(N * fraction))]`` indices of ``y`` (``[N]``), stratified, >= 1 per class."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    n = min(len(y), max(len(classes), round(len(y) * fraction)))
    per_class = 1 + _apportion(counts - 1, n - len(classes))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(per_class)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_raw(
    x: Array, y: Array, num_classes: int, input_shape: tuple[int, ...] | None, fractions: tuple[float, float]
) -> RawTask:
    """A :class:`RawTask` from all of ``x`` ``[N, ...]`` and ``y`` ``[N]``; ``fractions`` = (val, test)."""
    train, val, test = split_indices(y, fractions)
    return RawTask(x[train], y[train], x[val], y[val], x[test], y[test], num_classes, input_shape)


def _digits() -> RawTask:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0
    return split_raw(x, np.asarray(bunch.target, dtype=np.int64), 10, (8, 8), (0.15, 0.15))


def cache_dir() -> Path:
    """``$PRINCIPLELAB_CACHE``, else ``~/.cache/principlelab``."""
    return Path(os.environ.get("PRINCIPLELAB_CACHE") or Path.home() / ".cache" / "principlelab")


def _mnist1d_arrays() -> dict[str, Array]:
    """mnist1d's ``x`` [4000, 40], ``y``, ``x_test`` [1000, 40], ``y_test``, generated once then from disk."""
    from mnist1d import data as m1d

    args = m1d.get_dataset_args()
    key = hashlib.sha256(json.dumps(vars(args), sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    names = ("x", "y", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {k: cached[k] for k in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # missing or corrupt: regenerate
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = m1d.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {k: np.asarray(data[k]) for k in names}
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
            np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp_name, 0o644)  # NamedTemporaryFile creates 0600
        os.replace(tmp_name, path)
    except OSError:  # an unwritable cache only costs regeneration next time
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return arrays


def _mnist1d() -> RawTask:
    arrays = _mnist1d_arrays()
    x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)
    train, val = split_indices(y, (0.1,))
    mean, std = float(x[train].mean()), float(x[train].std())
    scale = std if std > 0 else 1.0
    x, x_test = (x - mean) / scale, (arrays["x_test"].astype(np.float32) - mean) / scale
    y_test = arrays["y_test"].astype(np.int64)
    return RawTask(x[train], y[train], x[val], y[val], x_test, y_test, 10, (x.shape[1],))


def _xor() -> RawTask:
    rng = np.random.default_rng(SPLIT_SEED)
    centers = np.repeat(np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float32), 500, axis=0)
    x = (centers + 0.25 * rng.standard_normal(centers.shape)).astype(np.float32)
    y = ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64)
    return split_raw(x, y, 2, None, (0.15, 0.15))


def _parity(bits: int = 8) -> RawTask:
    codes = (np.arange(2**bits)[:, None] >> np.arange(bits)) & 1
    x = (2 * codes - 1).astype(np.float32)
    return split_raw(x, (codes.sum(axis=1) % 2).astype(np.int64), 2, None, (0.2, 0.2))


def _modadd(p: int = 97) -> RawTask:
    a, b = np.divmod(np.arange(p * p), p)
    x = np.zeros((p * p, 2 * p), dtype=np.float32)
    x[np.arange(p * p), a] = 1.0
    x[np.arange(p * p), p + b] = 1.0
    y = ((a + b) % p).astype(np.int64)
    train, val, test = split_indices(y, (0.1, 0.4), stratify=False)
    return RawTask(x[train], y[train], x[val], y[val], x[test], y[test], p, None)


register_task("digits", _digits, description="sklearn 8x8 digits, 1797 samples, 10 classes, split 70/15/15")
register_task(
    "mnist1d", _mnist1d, description="MNIST-1D (5000 samples, 40 features), its own test set, 10 classes"
)
register_task("xor", _xor, description="2-D XOR of 4 Gaussian blobs, 2000 samples, 2 classes")
register_task("parity", _parity, description="8-bit parity of {-1,+1} inputs, all 256, split 60/20/20")
register_task("modadd", _modadd, description="(a+b) mod 97 from one-hot a and b, split 50/10/40 (grokking)")
