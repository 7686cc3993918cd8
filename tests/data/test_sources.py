"""Every data source, fed with files written by the test in the formats the real loaders read."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_transfer.data import DataError, build_data, make_loader
from ssl_transfer.data.datasets import ArrayDataset, FileDataset, UnreadableImageError, to_nchw_uint8
from ssl_transfer.recipe import load_recipe

from ..conftest import SHARED


def data_cfg(**kw):
    return load_recipe({"data": kw}).data


def test_digits_split_shapes_and_stats():
    d = build_data(data_cfg(source="digits"))
    assert isinstance(d.train, ArrayDataset) and d.input_shape == (1, 8, 8)
    assert len(d.train) + len(d.test) == 1797 and len(d.test) == 360 and d.num_classes == 10
    x = d.train.images.float() / 255
    assert d.mean[0] == pytest.approx(float(x.mean()), abs=1e-5) and d.std[0] == pytest.approx(float(x.std()), abs=1e-3)
    assert set(d.test.labels.tolist()) == set(range(10))


def test_npz_source(tiny_npz: Path):
    d = build_data(data_cfg(source="npz", path=str(tiny_npz)))
    assert d.input_shape == (1, 12, 12) and len(d.train) == 200 and len(d.test) == 80 and d.num_classes == 4


def test_npz_missing_and_damaged(tmp_path: Path):
    with pytest.raises(DataError, match="no such file"):
        build_data(data_cfg(source="npz", path=str(tmp_path / "x.npz")))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        build_data(data_cfg(source="npz", path=str(bad)))


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"y_train": np.zeros(299, np.int64)}, "y_train has 299 labels but x_train has 300 images"),
        ({"y_train": np.full(300, -2, np.int64)}, "y_train has label -2; labels are >= 0, or -1"),
        ({"y_train": np.full(300, 0.5)}, "y_train has dtype float64 with non-integer values"),
        ({"y_train": np.zeros((300, 2), np.int64)}, r"y_train has shape \(300, 2\); labels are one integer per image"),
        ({"y_test": np.zeros(5, np.int64)}, "has y_test but no x_test"),
        ({"x_test": np.zeros((5, 2, 3, 4, 5))}, "x_test: images must be"),
    ],
)
def test_npz_with_inconsistent_arrays_is_one_line_naming_the_array(tmp_path: Path, capsys, arrays: dict, message: str):
    from ssl_transfer.cli import main

    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((300, 8, 8), np.uint8), **arrays)
    with pytest.raises(DataError, match=message):
        build_data(data_cfg(source="npz", path=str(path)))
    assert main(["pretrain", "quickstart", "data.source=npz", f"data.path={path}", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-transfer: error:") and "Traceback" not in err[0]


@pytest.mark.skipif(not (SHARED / "mnist.npz").is_file(), reason="shared datasets not present")
def test_real_mnist_npz_with_resize_and_rgb():
    d = build_data(data_cfg(source="npz", path=str(SHARED / "mnist.npz"), limit_train=500, image_size=16, channels=3))
    assert d.input_shape == (3, 16, 16) and len(d.train) == 500 and len(d.test) == 10000
    assert torch.equal(d.train.images[:, 0], d.train.images[:, 2])  # gray repeated
    assert len(d.std) == 3


@pytest.mark.skipif(not (SHARED / "cifar10_subset.npz").is_file(), reason="shared datasets not present")
def test_real_cifar_subset_npz_to_gray():
    d = build_data(data_cfg(source="npz", path=str(SHARED / "cifar10_subset.npz"), channels=1))
    assert d.input_shape == (1, 32, 32) and len(d.train) == 4000 and d.num_classes == 10


def test_to_nchw_layouts():
    assert to_nchw_uint8(np.zeros((2, 5, 6, 3), np.uint8)).shape == (2, 3, 5, 6)
    assert to_nchw_uint8(np.zeros((2, 3, 5, 6), np.uint8)).shape == (2, 3, 5, 6)
    assert to_nchw_uint8(np.zeros((2, 5, 6), np.uint8)).shape == (2, 1, 5, 6)
    assert to_nchw_uint8(np.ones((1, 2, 2), np.float32))[0, 0, 0, 0] == 255


# --- torchvision sources: files in torchvision's own formats --------------------------------------


def _write_idx(path: Path, arr: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, code, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 30, n_test: int = 10) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + n_test, dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", x[:n_train])
    _write_idx(raw / "train-labels-idx1-ubyte", y[:n_train])
    _write_idx(raw / "t10k-images-idx3-ubyte", x[n_train:])
    _write_idx(raw / "t10k-labels-idx1-ubyte", y[n_train:])
    return x


@pytest.mark.parametrize("source,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_mnist_like(tmp_path: Path, source: str, folder: str):
    x = _write_mnist(tmp_path, folder)
    d = build_data(data_cfg(source=source, root=str(tmp_path)))
    assert d.input_shape == (1, 28, 28) and len(d.train) == 30 and len(d.test) == 10 and d.num_classes == 10
    assert torch.equal(d.train.images[:, 0], torch.from_numpy(x[:30]))


def test_torchvision_missing_without_download_is_one_clear_line(tmp_path: Path):
    with pytest.raises(DataError) as e:
        build_data(data_cfg(source="mnist", root=str(tmp_path)))
    assert "data.download=true" in str(e.value) and "\n" not in str(e.value)


def test_torchvision_cifar10(tmp_path: Path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(2)
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        images[name] = data
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(rng.integers(0, 10, 4))}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our files have other md5s
    d = build_data(data_cfg(source="cifar10", root=str(tmp_path)))
    assert d.input_shape == (3, 32, 32) and len(d.train) == 20 and len(d.test) == 4 and d.classes[0] == "c0"
    first = images["data_batch_1"][0].reshape(3, 32, 32)
    assert torch.equal(d.train.images[0], torch.from_numpy(first))


def test_torchvision_stl10_with_unlabeled(tmp_path: Path, monkeypatch):
    import torchvision.datasets.stl10 as tv_stl

    base = tmp_path / "stl10_binary"
    base.mkdir()
    rng = np.random.default_rng(3)
    for split, n in [("train", 6), ("test", 4), ("unlabeled", 5)]:
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(base / f"{split}_X.bin")
        if split != "unlabeled":
            rng.integers(1, 11, n, dtype=np.uint8).tofile(base / f"{split}_y.bin")
    (base / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    monkeypatch.setattr(tv_stl, "check_integrity", lambda *a, **k: True)
    d = build_data(data_cfg(source="stl10", root=str(tmp_path)))
    assert d.input_shape == (3, 96, 96) and len(d.train) == 6 and len(d.test) == 4
    d = build_data(data_cfg(source="stl10", root=str(tmp_path), unlabeled=True, image_size=32))
    assert len(d.train) == 11 and (d.train.labels == -1).sum() == 5 and d.input_shape == (3, 32, 32)


# --- image folders ------------------------------------------------------------------------------


def _png(path: Path, size=(20, 16), mode="RGB", value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 255 - value, 7)).save(path)


def test_imagefolder_with_classes_and_test_root(tmp_path: Path):
    for split, n in [("train", 3), ("test", 2)]:
        for c in ("cat", "dog"):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", value=40 * i)
    d = build_data(data_cfg(source="imagefolder", root=str(tmp_path / "train"), test_root=str(tmp_path / "test")))
    assert isinstance(d.train, FileDataset) and d.input_shape == (3, 16, 20)  # (C, H, W) of the first image
    assert d.classes == ["cat", "dog"] and sorted(d.train.labels) == [0, 0, 0, 1, 1, 1] and len(d.test) == 4
    images, labels = next(iter(make_loader(d.train, 4, shuffle=False, drop_last=False)))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 20) and labels.tolist() == [0, 0, 0, 1]


def test_imagefolder_in_memory_decodes_every_file_once_into_the_same_arrays(tmp_path: Path):
    for split, n in [("train", 3), ("test", 2)]:
        for c in ("cat", "dog"):
            for i in range(n):
                _png(tmp_path / split / c / f"{i}.png", value=40 * i + (c == "dog"))
    cfg = dict(source="imagefolder", root=str(tmp_path / "train"), test_root=str(tmp_path / "test"), image_size=8)
    files, arrays = build_data(data_cfg(**cfg)), build_data(data_cfg(**cfg, in_memory=True))
    assert isinstance(arrays.train, ArrayDataset) and isinstance(arrays.test, ArrayDataset)
    for a, f in ((arrays.train, files.train), (arrays.test, files.test)):
        assert torch.equal(a.images, torch.stack([f[i][0] for i in range(len(f))]))
        assert a.labels.tolist() == list(f.labels)
    assert arrays.mean == files.mean and arrays.std == files.std and arrays.classes == ["cat", "dog"]


def test_imagefolder_flat_unlabeled_resized_gray(tmp_path: Path):
    for i in range(5):
        _png(tmp_path / f"img{i}.jpg", size=(30 + i, 25), mode="RGB", value=50 * i)
    (tmp_path / "notes.txt").write_text("not an image")
    d = build_data(data_cfg(source="imagefolder", root=str(tmp_path), image_size=12, channels=1))
    assert d.input_shape == (1, 12, 12) and len(d.train) == 5 and d.num_classes is None and d.test is None
    assert set(d.train.labels) == {-1}
    assert d.train[3][0].shape == (1, 12, 12)


def test_imagefolder_errors(tmp_path: Path):
    with pytest.raises(DataError, match="no such image folder"):
        build_data(data_cfg(source="imagefolder", root=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no images"):
        build_data(data_cfg(source="imagefolder", root=str(tmp_path / "empty")))


def _corrupt_folder(root: Path) -> list[str]:
    """6 good images per class, plus 4 broken files of the kinds met in scraped datasets; returns their names."""
    for c in ("cat", "dog"):
        for i in range(6):
            _png(root / c / f"{i}.png", value=30 * i)
    good = (root / "cat" / "0.png").read_bytes()
    broken = {
        "cat/empty.png": b"",
        "cat/text.jpg": b"<html>404 not found</html>",
        "dog/truncated.png": good[: len(good) // 2],
        "dog/bad_crc.png": good[:40] + bytes([good[40] ^ 0xFF]) + good[41:],
    }
    for name, data in broken.items():
        (root / name).write_bytes(data)
    return list(broken)


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path, caplog):
    broken = _corrupt_folder(tmp_path)
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        d = build_data(data_cfg(source="imagefolder", root=str(tmp_path)))
    assert len(d.train) == 12 and d.describe()["skipped_files"] == 4
    assert sorted(Path(f).relative_to(tmp_path).as_posix() for f, _ in d.skipped_files) == sorted(broken)
    assert "skipped 4 of 16 files" in caplog.text
    assert sorted(d.train.labels) == [0] * 6 + [1] * 6
    images, _ = next(iter(make_loader(d.train, 12, shuffle=False, drop_last=False, num_workers=2)))
    assert images.shape == (12, 3, 16, 20)


def test_corrupt_images_fail_clearly_when_asked(tmp_path: Path):
    _corrupt_folder(tmp_path)
    with pytest.raises(
        DataError,
        match=r"4 of 16 files are not readable images, e\.g\. .*(empty|text|truncated|bad_crc).*data\.bad_images=skip",
    ):
        build_data(data_cfg(source="imagefolder", root=str(tmp_path), bad_images="error"))


def test_file_broken_after_the_scan_is_replaced_or_named(tmp_path: Path):
    for name in _corrupt_folder(tmp_path):
        (tmp_path / name).unlink()
    for policy in ("skip", "error"):
        d = build_data(data_cfg(source="imagefolder", root=str(tmp_path), bad_images=policy))
        victim = d.train.files.index(str(tmp_path / "cat" / "3.png"))
        Path(d.train.files[victim]).write_bytes(b"gone bad")
        if policy == "skip":
            img, label = d.train[victim]  # the next readable file stands in, with its own label
            assert torch.equal(img, d.train[victim + 1][0]) and int(label) == d.train.labels[victim + 1]
            assert d.train.read_failures == 1
        else:
            with pytest.raises(UnreadableImageError, match="3.png"):
                d.train[victim]
        _png(tmp_path / "cat" / "3.png", value=90)


def test_pretraining_on_a_folder_with_corrupt_images(tmp_path: Path, quiet):
    from ssl_transfer.train import pretrain

    _corrupt_folder(tmp_path / "imgs")
    res = pretrain(
        {
            "name": "c",
            "data": {
                "source": "imagefolder",
                "root": str(tmp_path / "imgs"),
                "image_size": 16,
                "batch_size": 4,
                "num_workers": 2,
            },
            "backbone": {"name": "cnn_tiny"},
            "method": {"name": "simclr"},
            "trainer": {"max_epochs": 1},
        },
        quiet,
    )
    assert res.data is not None and res.data.describe()["skipped_files"] == 4
    import json

    assert json.loads((res.run_dir / "encoder.json").read_text())["data"]["skipped_files"] == 4


def test_array_loader_batches_in_one_gather(tiny_npz: Path):
    d = build_data(data_cfg(source="npz", path=str(tiny_npz)))
    batches = list(make_loader(d.train, 64, shuffle=True, drop_last=True))
    assert len(batches) == 3 and all(b[0].shape == (64, 1, 12, 12) and b[0].dtype == torch.uint8 for b in batches)
