"""Tests of the task registry, built-in tasks, fidelity handling and user data files."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from principlelab.core import tasks
from principlelab.core.recipe import Fidelity
from principlelab.core.tasks import RawTask, TaskData, known_tasks, load_task, register_task
from principlelab.errors import ConfigError, TaskDataError, UnknownNameError

FULL = Fidelity()


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generate mnist1d once per session into a temporary cache dir; record the global RNG states."""
    cache = tmp_path_factory.mktemp("plab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRINCIPLELAB_CACHE", str(cache))
        tasks.clear_task_cache()
        random.seed(123)
        np.random.seed(456)
        before = (random.getstate(), np.random.get_state())
        data = load_task("mnist1d", fidelity=FULL, seed=0)
        after = (random.getstate(), np.random.get_state())
    return {"dir": cache, "data": data, "before": before, "after": after}


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch: pytest.MonkeyPatch, mnist1d_cache: dict[str, Any]) -> Iterator[None]:
    monkeypatch.setenv("PRINCIPLELAB_CACHE", str(mnist1d_cache["dir"]))
    yield


EXPECTED = {  # name: (D, num_classes, input_shape, total samples)
    "digits": (64, 10, (8, 8), 1797),
    "mnist1d": (40, 10, (40,), 5000),
    "xor": (2, 2, (2,), 2000),
    "parity": (8, 2, (8,), 256),
    "modadd": (194, 97, (194,), 97 * 97),
}


def _sizes(data: TaskData) -> tuple[int, int, int]:
    return len(data.y_train), len(data.y_val), len(data.y_test)


def test_builtins_are_registered() -> None:
    assert set(EXPECTED) <= set(known_tasks())
    assert all(known_tasks()[name] for name in EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_shapes_and_dtypes(name: str) -> None:
    d, classes, shape, total = EXPECTED[name]
    data = load_task(name, fidelity=FULL, seed=0)
    assert (data.name, data.num_classes, data.input_shape, data.in_features) == (name, classes, shape, d)
    assert sum(_sizes(data)) == total
    for x, y in [(data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)]:
        assert x.dtype == torch.float32 and x.is_contiguous() and x.shape == (len(y), d)
        assert y.dtype == torch.int64 and y.ndim == 1
        assert int(y.min()) >= 0 and int(y.max()) < classes
        assert torch.isfinite(x).all()


def test_split_fractions() -> None:
    assert _sizes(load_task("digits", fidelity=FULL, seed=0)) == (1257, 270, 270)
    assert _sizes(load_task("parity", fidelity=FULL, seed=0)) == (154, 51, 51)
    assert _sizes(load_task("modadd", fidelity=FULL, seed=0)) == (4704, 941, 3764)
    assert _sizes(load_task("mnist1d", fidelity=FULL, seed=0)) == (3600, 400, 1000)
    digits = load_task("digits", fidelity=FULL, seed=0)
    assert set(digits.y_test.tolist()) == set(range(10))  # stratified


def test_value_ranges() -> None:
    digits = load_task("digits", fidelity=FULL, seed=0)
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    parity = load_task("parity", fidelity=FULL, seed=0)
    assert set(torch.unique(parity.x_train).tolist()) == {-1.0, 1.0}
    assert torch.equal(parity.y_train, ((parity.x_train > 0).sum(1) % 2).long())
    xor = load_task("xor", fidelity=FULL, seed=0)
    assert torch.equal(xor.y_train, ((xor.x_train[:, 0] > 0) != (xor.x_train[:, 1] > 0)).long())
    mnist = load_task("mnist1d", fidelity=FULL, seed=0)
    assert abs(float(mnist.x_train.mean())) < 1e-4 and abs(float(mnist.x_train.std()) - 1.0) < 1e-3


def test_splits_do_not_depend_on_seed() -> None:
    a = load_task("digits", fidelity=FULL, seed=1)
    b = load_task("digits", fidelity=FULL, seed=2)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_no_overlap_between_splits() -> None:
    data = load_task("modadd", fidelity=FULL, seed=0)
    rows = [
        {tuple(r) for r in x.nonzero()[:, 1].view(-1, 2).tolist()}
        for x in (data.x_train, data.x_val, data.x_test)
    ]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])


def test_data_fraction_subsets_train_only() -> None:
    half = Fidelity(data_fraction=0.3)
    full = load_task("digits", fidelity=FULL, seed=0)
    a = load_task("digits", fidelity=half, seed=1)
    b = load_task("digits", fidelity=half, seed=2)
    assert len(a.y_train) == len(b.y_train) == round(0.3 * len(full.y_train))
    assert not torch.equal(a.x_train, b.x_train)
    assert torch.equal(a.x_test, full.x_test) and torch.equal(a.y_val, full.y_val)
    assert set(a.y_train.tolist()) == set(range(10))
    assert torch.equal(a.x_train, load_task("digits", fidelity=half, seed=1).x_train)  # seeded
    full_rows = {tuple(r) for r in full.x_train.tolist()}
    assert all(tuple(r) in full_rows for r in a.x_train.tolist())


def test_data_fraction_keeps_one_per_class() -> None:
    tiny = load_task("digits", fidelity=Fidelity(data_fraction=0.001), seed=3)
    assert sorted(tiny.y_train.tolist()) == list(range(10))


def test_downsampling_digits() -> None:
    full = load_task("digits", fidelity=FULL, seed=0)
    half = load_task("digits", fidelity=Fidelity(input_resolution=0.5), seed=0)
    assert half.input_shape == (4, 4) and half.in_features == 16 and half.x_test.is_contiguous()
    manual = full.x_train.view(-1, 4, 2, 4, 2).mean(dim=(2, 4)).reshape(-1, 16)
    assert torch.allclose(half.x_train, manual, atol=1e-6)
    assert torch.equal(half.y_train, full.y_train)


def test_downsampling_mnist1d_and_non_spatial() -> None:
    assert load_task("mnist1d", fidelity=Fidelity(input_resolution=0.25), seed=0).input_shape == (10,)
    xor = load_task("xor", fidelity=Fidelity(input_resolution=0.5), seed=0)
    assert xor.input_shape == (2,) and xor.in_features == 2


def test_mnist1d_cached_and_rng_restored(
    mnist1d_cache: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    before, after = mnist1d_cache["before"], mnist1d_cache["after"]
    assert before[0] == after[0]
    assert all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(before[1], after[1], strict=True))
    assert list(Path(mnist1d_cache["dir"]).glob("mnist1d-*.npz"))
    assert not list(Path(mnist1d_cache["dir"]).glob("*.tmp"))
    import mnist1d.data

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("make_dataset called despite the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", boom)
    tasks.clear_task_cache()
    again = load_task("mnist1d", fidelity=FULL, seed=0)
    assert torch.equal(again.x_test, mnist1d_cache["data"].x_test)
    assert torch.equal(again.y_train, mnist1d_cache["data"].y_train)


def test_modadd_labels() -> None:
    p = 97
    data = load_task("modadd", fidelity=FULL, seed=0)
    for x, y in [(data.x_train, data.y_train), (data.x_test, data.y_test)]:
        assert torch.equal(x.sum(1), torch.full((len(x),), 2.0))
        a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
        assert torch.equal(y, (a + b) % p)


def test_returned_tensors_do_not_alias_cache() -> None:
    first = load_task("xor", fidelity=FULL, seed=0)
    first.x_train.zero_()
    assert load_task("xor", fidelity=FULL, seed=0).x_train.abs().sum() > 0


def test_register_custom_task() -> None:
    def loader() -> RawTask:
        x = np.arange(24, dtype=np.float64).reshape(6, 4)
        y = np.array([0, 1, 0, 1, 0, 1])
        return RawTask(x[:2], y[:2], x[2:4], y[2:4], x[4:], y[4:], 2, (2, 2))

    register_task("tiny-test", loader, description="tiny", replace=True)
    try:
        assert known_tasks()["tiny-test"] == "tiny"
        with pytest.raises(ConfigError, match="already registered"):
            register_task("tiny-test", loader)
        with pytest.raises(ConfigError, match="the loader must be a function returning a RawTask, got 42"):
            register_task("tiny-test-2", 42)  # type: ignore[arg-type]
        assert "tiny-test-2" not in known_tasks()
        data = load_task("tiny-test", fidelity=Fidelity(input_resolution=0.5), seed=0)
        assert data.input_shape == (1, 1) and data.x_train.dtype == torch.float32
        assert data.x_train[:, 0].tolist() == [1.5, 5.5]
    finally:
        tasks._TASKS.pop("tiny-test", None)


def test_unknown_task_lists_known() -> None:
    with pytest.raises(UnknownNameError, match="digits") as info:
        load_task("nope", fidelity=FULL, seed=0)
    assert "nope" in str(info.value)


# --- user files ---------------------------------------------------------------------------------


def _load(path: str | Path) -> TaskData:
    return load_task(f"file:{path}", fidelity=FULL, seed=0)


def _error(spec: str | Path) -> str:
    with pytest.raises(TaskDataError) as info:
        _load(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_npz_split_and_label_remap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, X=rng.normal(size=(200, 3, 4)), y=np.repeat([5, -1, 10, 7], 50))
    data = _load(path)
    assert _sizes(data) == (140, 30, 30)
    assert data.num_classes == 4 and data.input_shape == (3, 4) and data.in_features == 12
    assert set(data.y_train.tolist()) == {0, 1, 2, 3}
    assert load_task(f"file:{path}", fidelity=Fidelity(input_resolution=0.5), seed=0).input_shape == (2, 2)


def test_npz_with_given_splits(tmp_path: Path) -> None:
    path = tmp_path / "given.npz"
    x = np.arange(20.0).reshape(10, 2)
    y = np.array([0, 1] * 5)
    np.savez(path, X=x, y=y, X_val=x[:3], y_val=y[:3], X_test=x[:4], y_test=y[:4])
    data = _load(path)
    assert _sizes(data) == (10, 3, 4) and data.input_shape == (2,)
    assert torch.equal(data.x_test, torch.tensor(x[:4], dtype=torch.float32))


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,target,b\n" + "".join(f"{i},{i % 2},{i * 0.5}\n" for i in range(40)))
    data = _load(path)
    assert data.in_features == 2 and data.num_classes == 2 and sum(_sizes(data)) == 40
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    assert sorted(x[:, 0].tolist()) == [float(i) for i in range(40)]
    last = tmp_path / "last.csv"
    last.write_text("f1,f2,whatever\n" + "".join(f"{i},{-i},{i % 3}\n" for i in range(30)))
    assert _load(last).num_classes == 3


def _write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(">u1").tobytes())


def test_idx(tmp_path: Path) -> None:
    images = np.arange(60 * 5 * 6, dtype=np.int64).reshape(60, 5, 6) % 256
    labels = np.arange(60) % 3
    _write_idx(tmp_path / "img.idx", images)
    _write_idx(tmp_path / "lab.idx", labels)
    data = _load(f"{tmp_path / 'img.idx'}+{tmp_path / 'lab.idx'}")
    assert data.input_shape == (5, 6) and data.num_classes == 3 and sum(_sizes(data)) == 60
    assert float(data.x_train.max()) <= 1.0
    x = torch.cat([data.x_train, data.x_val, data.x_test]) * 255
    assert sorted(x[:, 0].round().tolist()) == sorted((images[:, 0, 0]).astype(float).tolist())


def test_error_missing_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "absent.npz")
    assert "absent.npz" in message and "does not exist" in message


def test_error_mismatched_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((100, 2)), y=np.arange(99) % 2)
    message = _error(path)
    assert "100" in message and "99" in message and "bad.npz" in message


def test_error_missing_array(tmp_path: Path) -> None:
    path = tmp_path / "noy.npz"
    np.savez(path, X=np.zeros((10, 2)), labels=np.zeros(10))
    message = _error(path)
    assert "y" in message and "labels" in message and "noy.npz" in message


def test_error_non_numeric_csv(tmp_path: Path) -> None:
    path = tmp_path / "text.csv"
    path.write_text("a,label\n1,0\nhello,1\n")
    message = _error(path)
    assert "hello" in message and "line 3" in message and "text.csv" in message


def test_error_bad_idx_magic(tmp_path: Path) -> None:
    (tmp_path / "img.idx").write_bytes(b"\x12\x34\x56\x78" + bytes(10))
    _write_idx(tmp_path / "lab.idx", np.zeros(3, dtype=np.int64))
    message = _error(f"{tmp_path / 'img.idx'}+{tmp_path / 'lab.idx'}")
    assert "magic" in message and "12345678" in message and "img.idx" in message


def test_error_single_class(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, X=np.zeros((10, 2)), y=np.ones(10, dtype=int))
    message = _error(path)
    assert "2 classes" in message and "one.npz" in message


def test_error_non_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "float.npz"
    np.savez(path, X=np.zeros((10, 2)), y=np.linspace(0, 1, 10))
    assert "integers" in _error(path)


def test_error_unsupported_type(tmp_path: Path) -> None:
    assert "unsupported" in _error(tmp_path / "data.txt")


def test_error_no_features_and_bad_npz(tmp_path: Path) -> None:
    only = tmp_path / "only.csv"
    only.write_text("label\n" + "".join(f"{i % 2}\n" for i in range(20)))
    assert "no feature columns" in _error(only)
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    assert "bad.npz" in _error(bad)


def test_a_csv_with_a_byte_order_mark_keeps_its_label_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"  # spreadsheets' "CSV UTF-8" starts with a BOM; the label column is first
    path.write_text("label,a,count\n" + "".join(f"{i % 3},{i},{i % 5}\n" for i in range(60)), encoding="utf-8-sig")
    data = _load(path)
    assert data.num_classes == 3 and data.in_features == 2  # not count's 5 classes


def test_labels_keep_their_values_until_remapped(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"  # 1e19 and 2e19 overflow int64 to the same value: they were merged
    np.savez(path, X=np.arange(60.0).reshape(30, 2), y=np.repeat([0.0, 1e19, 2e19], 10))
    assert _load(path).num_classes == 3


def test_csv_integer_labels_above_2_to_the_53_stay_apart(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"  # read as float64, 2^53 and 2^53 + 1 were one class
    path.write_text("a,label\n" + "".join(f"{i},{2**53 + i % 3}\n" for i in range(30)))
    assert _load(path).num_classes == 3
    path.write_text("a,label\n" + "".join(f"{i},{2**64 * (i % 2)}\n" for i in range(30)))
    with pytest.raises(TaskDataError, match="label 18446744073709551616 does not fit in 64 bits"):
        _load(path)
    path.write_text("a,label\n" + "".join(f"{i},{i % 2}.0\n" for i in range(30)))  # float cells still work
    assert _load(path).num_classes == 2


@pytest.mark.parametrize(("name", "arrays", "expected"), [
    ("inf.npz", {"X": np.zeros((30, 2)), "y": np.r_[np.inf, np.arange(29) % 3]}, "must be finite integers"),
    ("huge.npz", {"X": np.r_[[[1e39, 0.0]], np.zeros((29, 2))], "y": np.arange(30) % 3}, "beyond float32"),
    ("newclass.npz", {"X": np.zeros((30, 2)), "y": np.arange(30) % 2, "X_val": np.zeros((4, 2)),
                      "y_val": np.array([0, 1, 2, 7]), "X_test": np.zeros((4, 2)), "y_test": np.zeros(4)},
     "y_val has label(s) [2, 7] that the training labels y never have"),
    ("complex.npz", {"X": np.ones((30, 2)) * (1 + 2j), "y": np.arange(30) % 3},
     "X and y must be real numbers, got complex128 and int64"),
])
def test_bad_values_are_one_line_errors(tmp_path: Path, name: str, arrays: dict, expected: str) -> None:
    np.savez(tmp_path / name, **arrays)
    assert expected in _error(tmp_path / name)


def test_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "latin1.csv").write_bytes(b"f\xe9,label\n1,0\n2,1\n")
    assert "is not UTF-8 text (byte 0xe9" in _error(tmp_path / "latin1.csv")
    (tmp_path / "noheader.csv").write_text("".join(f"{i},{i % 2}\n" for i in range(20)))
    assert "the first row is numbers, not column names" in _error(tmp_path / "noheader.csv")
    _write_idx(tmp_path / "lab.idx", np.arange(10) % 2)
    labels = tmp_path / "lab.idx"
    (tmp_path / "img.gz").write_bytes(b"\x00\x00\x08\x03 not gzip")
    assert "not a readable gzip-compressed IDX file (BadGzipFile" in _error(f"{tmp_path / 'img.gz'}+{labels}")
    import gzip

    _write_idx(tmp_path / "img.idx", np.random.default_rng(0).integers(0, 255, (10, 8, 8)))
    packed = gzip.compress((tmp_path / "img.idx").read_bytes())
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])  # truncated: EOFError, which click took for ^C
    assert "not a readable gzip-compressed IDX file (EOFError" in _error(f"{tmp_path / 'cut.gz'}+{labels}")
    import zipfile

    with zipfile.ZipFile(tmp_path / "badnpy.npz", "w") as archive:  # members that are not .npy arrays
        archive.writestr("X.npy", b"junk")
        archive.writestr("y.npy", b"junk")
    assert "is not a readable .npz" in _error(tmp_path / "badnpy.npz")


def test_mnist1d_corrupt_cache_is_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist1d_cache: dict[str, Any]
) -> None:
    cached = next(Path(mnist1d_cache["dir"]).glob("mnist1d-*.npz"))
    (tmp_path / cached.name).write_bytes(b"garbage")
    monkeypatch.setenv("PRINCIPLELAB_CACHE", str(tmp_path))
    tasks.clear_task_cache()
    data = load_task("mnist1d", fidelity=FULL, seed=0)
    assert torch.equal(data.x_test, mnist1d_cache["data"].x_test)
    assert (tmp_path / cached.name).stat().st_size == cached.stat().st_size
    tasks.clear_task_cache()


def test_train_refuses_task_data_of_another_task() -> None:
    from principlelab.core.recipe import make_recipe
    from principlelab.core.trainer import train
    from principlelab.errors import ConfigError

    recipe = make_recipe({"task": "digits", "fidelity": {"epochs": 1}, "network": {"hidden": [8]}})
    with pytest.raises(ConfigError, match="task data 'xor' is not the recipe's task 'digits'"):
        train(recipe, task=load_task("xor", fidelity=recipe.fidelity, seed=0))


def test_load_task_takes_a_level_name_or_a_table_as_a_recipe_does() -> None:
    from principlelab.core.recipe import FIDELITIES

    by_name = load_task("digits", fidelity="coarse", seed=0)
    assert torch.equal(by_name.x_train, load_task("digits", fidelity=FIDELITIES["coarse"], seed=0).x_train)
    half = load_task("digits", fidelity={"name": "coarse", "data_fraction": 0.5}, seed=0)
    assert len(half.y_train) == 628  # half of digits' 1257 training samples, not coarse's 30%
    with pytest.raises(UnknownNameError, match="coarse"):
        load_task("digits", fidelity="corse", seed=0)
