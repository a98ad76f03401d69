"""User data files as tasks: ``file:PATH.npz``, ``file:PATH.csv`` and ``file:IMAGES+LABELS`` (IDX).

* ``.npz``: arrays ``X`` (``[N, D]``, or ``[N, *spatial]`` with 1 to 3 spatial axes) and ``y``
  (``[N]``); optional ``X_val``/``y_val`` and ``X_test``/``y_test``, else a 70/15/15 split.
* ``.csv``: numeric, one header row; the label column is named ``label``, ``y``, ``target`` or
  ``class`` (case-insensitive), else it is the last column. Features are not spatial.
* IDX (MNIST format, optionally ``.gz``): ``file:IMAGES+LABELS`` with ``[N, H, W]`` images (input
  shape ``(H, W)``; uint8 images are scaled by 1/255) and ``[N]`` labels.

Labels must be finite integers; their sorted unique values are remapped to ``0..C-1``, and every
class of a given validation or test split must occur in the training labels. CSV files are UTF-8
(a byte-order mark is fine) and start with a header row. Splits use the
fixed seed :data:`~principlelab.core.tasks.SPLIT_SEED`. Every problem raises a one-line
:class:`~principlelab.errors.TaskDataError` naming the file and the fix.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import struct
import zipfile
from pathlib import Path

import numpy as np

from principlelab.core.tasks import Array, RawTask, split_indices
from principlelab.errors import TaskDataError, undecodable_byte

LABEL_COLUMNS = ("label", "y", "target", "class")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_HELP = "use file:PATH.npz, file:PATH.csv or file:IMAGES+LABELS (IDX)"


def resolve_paths(spec: str) -> list[Path]:
    """The one (npz, csv) or two (IDX images, labels) existing paths named by ``spec``."""
    if "+" in spec and Path(spec).suffix.lower() not in (".npz", ".csv"):
        cuts = [i for i, c in enumerate(spec) if c == "+"]
        pairs = [(Path(spec[:i]).expanduser(), Path(spec[i + 1 :]).expanduser()) for i in cuts]
        paths = list(next((p for p in pairs if p[0].is_file() and p[1].is_file()), pairs[0]))
    else:
        paths = [Path(spec).expanduser()]
        if paths[0].suffix.lower() not in (".npz", ".csv"):
            raise TaskDataError(f"task file {spec!r} has an unsupported type; {_HELP}")
    for path in paths:
        if not path.is_file():
            raise TaskDataError(f"task file {str(path)!r} does not exist; check the path after 'file:'")
    return paths


def file_stamps(spec: str) -> tuple[object, ...]:
    """``(path, mtime_ns, size)`` of each file, so an edited file is reloaded (in-process cache key)."""
    stamps: list[object] = []
    for path in resolve_paths(spec):
        stat = path.stat()
        stamps.append((str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def read_file_task(spec: str) -> tuple[RawTask, str]:
    """Load ``spec`` (the task name without ``file:``) as a :class:`RawTask`, with the SHA-256 (hex) of
    the bytes it was parsed from (of each file's SHA-256, in order): what the data is, wherever it lies
    and whatever its time stamps. Each file is read once, so the digest is that of the data loaded,
    even if the file is replaced meanwhile (a campaign stores it to notice changed data)."""
    paths = resolve_paths(spec)
    contents = [_read_bytes(path) for path in paths]
    digest = hashlib.sha256()
    for content in contents:
        digest.update(hashlib.sha256(content).digest())
    hexdigest = digest.hexdigest()
    if len(paths) == 2:
        x, y = _read_idx(paths[0], contents[0]), _read_idx(paths[1], contents[1])
        if x.ndim != 3 or y.ndim != 1:
            raise TaskDataError(
                f"IDX files {spec!r}: need [N, H, W] images then [N] labels, got {x.shape} and {y.shape}"
            )
        scaled = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
        return _assemble(spec, {"X": scaled, "y": y}, (x.shape[1], x.shape[2])), hexdigest
    if paths[0].suffix.lower() == ".csv":
        return _assemble(spec, _read_csv(paths[0], contents[0]), None), hexdigest
    arrays = _read_npz(paths[0], contents[0])
    x = arrays["X"]
    return _assemble(spec, arrays, tuple(int(s) for s in x.shape[1:]) if x.ndim > 2 else None), hexdigest


def load_file_task(spec: str) -> RawTask:
    """Load ``spec`` (the task name without ``file:``) as a :class:`RawTask`."""
    return read_file_task(spec)[0]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TaskDataError(f"task file {str(path)!r} cannot be read ({type(exc).__name__}: "
                            f"{exc.strerror or exc}); check its permissions") from None


def _read_npz(path: Path, content: bytes) -> dict[str, Array]:
    if not zipfile.is_zipfile(io.BytesIO(content)):
        raise TaskDataError(f"task file {str(path)!r} is not a .npz (zip) archive; save it with numpy.savez")
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # a member that is not a valid .npy fails in several ways inside numpy
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise TaskDataError(
            f"task file {str(path)!r} is not a readable .npz ({reason}); save plain arrays with numpy.savez"
        ) from None
    raw = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))  # numpy returns bytes for them
    if raw:
        raise TaskDataError(f"task file {str(path)!r} is not a readable .npz (member(s) {', '.join(raw)} are not "
                            ".npy arrays); save plain arrays with numpy.savez")
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise TaskDataError(
            f"task file {str(path)!r} lacks array(s) {', '.join(missing)}; it has {sorted(arrays)}; "
            "save the features as X and the labels as y"
        )
    for k in ("val", "test"):
        if (f"X_{k}" in arrays) != (f"y_{k}" in arrays):
            raise TaskDataError(
                f"task file {str(path)!r} has only one of X_{k} and y_{k}; save both or neither"
            )
    return arrays


def _read_csv(path: Path, content: bytes) -> dict[str, Array]:
    try:  # utf-8-sig: a spreadsheet's byte-order mark must not become part of the first column's name
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaskDataError(f"task file {str(path)!r} is not UTF-8 text ({undecodable_byte(exc)}); save the CSV "
                            "as UTF-8") from None
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise TaskDataError(
            f"task file {str(path)!r} has no data rows; it needs a header row then numeric rows"
        )
    if all(_is_number(cell) for cell in rows[0]):
        raise TaskDataError(f"task file {str(path)!r}: the first row is numbers, not column names; add a header "
                            f"row (the label column named {', '.join(LABEL_COLUMNS)}, or last)")
    header = [h.strip() for h in rows[0]]
    lowered = [h.lower() for h in header]
    label = next((lowered.index(name) for name in LABEL_COLUMNS if name in lowered), len(header) - 1)
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise TaskDataError(
                f"task file {str(path)!r} line {i + 2} has {len(row)} fields but the header has {len(header)}"
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise TaskDataError(
                    f"task file {str(path)!r} line {i + 2} column {header[j]!r}: {cell!r} is not a number; "
                    "CSV tasks must be all numeric after the header row"
                ) from None
    return {"X": np.delete(values, label, axis=1), "y": _csv_labels(path, [row[label] for row in rows[1:]],
                                                                       values[:, label])}


def _csv_labels(path: Path, cells: list[str], as_float: Array) -> Array:
    """The label column: int64 where every cell is an integer (as float64, labels above 2^53 would merge),
    else the float64 values ``as_float``."""
    try:
        ints = [int(cell) for cell in cells]
    except ValueError:  # 1.0, 1e3: checked as floats (finite integers) by _assemble
        return as_float
    too_big = [i for i in ints if not -(2**63) <= i < 2**63]
    if too_big:
        raise TaskDataError(f"task file {str(path)!r}: label {too_big[0]} does not fit in 64 bits; number the "
                            "classes 0..C-1 (or any smaller integers)")
    return np.array(ints, dtype=np.int64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_idx(path: Path, content: bytes) -> Array:
    gzipped = path.suffix.lower() == ".gz"
    try:
        data = gzip.decompress(content) if gzipped else content
    except (OSError, EOFError) as exc:  # not gzip, or cut short
        kind = "gzip-compressed IDX" if gzipped else "IDX"
        raise TaskDataError(f"IDX file {str(path)!r} is not a readable {kind} file ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split()) or 'truncated'}); check the file, or drop the .gz "
                            "suffix if it is not compressed") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise TaskDataError(
            f"IDX file {str(path)!r} has a bad magic number {data[:4].hex() or '(empty)'}; "
            "expected 0x0000TTNN (TT = 08 for uint8, NN = number of dimensions)"
        )
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else ()
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(dims) != ndim or len(data) != expected:
        raise TaskDataError(f"IDX file {str(path)!r} has {len(data)} bytes but its header implies {expected}")
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return body.astype(dtype.newbyteorder("="))


def _assemble(spec: str, arrays: dict[str, Array], input_shape: tuple[int, ...] | None) -> RawTask:
    """Check X/y pairs, remap labels to 0..C-1 and split (unless val and test are given)."""
    pairs = {k: (arrays[f"X{k}"], arrays[f"y{k}"]) for k in ("", "_val", "_test") if f"X{k}" in arrays}
    for k, (x, y) in pairs.items():
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or x.ndim not in (1, 2, 3, 4):
            raise TaskDataError(
                f"task file {spec!r}: y{k} must be [N] and X{k} [N, D] or [N, *spatial], got "
                f"shapes {y.shape} and {x.shape}"
            )
        if len(x) != len(y):
            raise TaskDataError(
                f"task file {spec!r}: X{k} has {len(x)} rows but y{k} has {len(y)}; they must match"
            )
        if np.iscomplexobj(x) or np.iscomplexobj(y):  # a float cast would drop the imaginary part silently
            raise TaskDataError(f"task file {spec!r}: X{k} and y{k} must be real numbers, got "
                                f"{x.dtype} and {y.dtype}; save e.g. the real and imaginary parts as features")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or not np.isfinite(x).all():
            raise TaskDataError(f"task file {spec!r}: X{k} must be finite numbers (no NaN/inf, no strings)")
        with np.errstate(over="ignore"):  # the overflow is what is checked: no RuntimeWarning besides the error
            beyond_float32 = np.isfinite(x).all() and not np.isfinite(x.astype(np.float32)).all()
        if beyond_float32:
            raise TaskDataError(f"task file {spec!r}: X{k} has values beyond float32's range (|x| > 3.4e38); "
                                "rescale the features")
        numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
        if not numeric or not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise TaskDataError(
                f"task file {spec!r}: labels y{k} must be finite integers (any values, remapped to 0..C-1)"
            )
        pairs[k] = (x.reshape(len(x), -1) if x.ndim == 1 else x, y)  # y keeps its values: a cast could merge two
    widths = {k: x.shape[1:] for k, (x, _) in pairs.items()}
    if int(np.prod(widths[""])) == 0:
        raise TaskDataError(f"task file {spec!r} has no feature columns; add at least one besides the labels")
    if len(set(widths.values())) > 1:
        raise TaskDataError(f"task file {spec!r}: the X arrays disagree on the sample shape: {widths}")
    classes = np.unique(pairs[""][1])
    for k, (_, y) in pairs.items():
        unseen = np.setdiff1d(y, classes)
        if len(unseen):
            raise TaskDataError(f"task file {spec!r}: y{k} has label(s) {unseen[:5].tolist()} that the training "
                                "labels y never have; a class must occur in training")
    if len(classes) < 2:
        raise TaskDataError(
            f"task file {spec!r} has fewer than 2 classes in y; a classification task needs at least 2"
        )
    mapped = {
        k: (x.astype(np.float32), np.searchsorted(classes, y).astype(np.int64)) for k, (x, y) in pairs.items()
    }
    x, y = mapped[""]
    if "_val" in mapped and "_test" in mapped:
        return RawTask(x, y, *mapped["_val"], *mapped["_test"], len(classes), input_shape)
    fractions = (0.0 if "_val" in mapped else 0.15, 0.0 if "_test" in mapped else 0.15)
    train, val, test = split_indices(y, fractions)
    x_val, y_val = mapped["_val"] if "_val" in mapped else (x[val], y[val])
    x_test, y_test = mapped["_test"] if "_test" in mapped else (x[test], y[test])
    if min(len(train), len(y_val), len(y_test)) == 0:
        raise TaskDataError(
            f"task file {spec!r} has too few samples ({len(y)}) to split 70/15/15; add more rows"
        )
    return RawTask(x[train], y[train], x_val, y_val, x_test, y_test, len(classes), input_shape)
