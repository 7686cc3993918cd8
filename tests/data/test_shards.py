"""LitData shards: written by ``ssl-transfer shard``, read by ``data.source=shards`` exactly as the image folder
they came from, resumable mid-epoch bit for bit, and one clear line for a folder that holds no shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_transfer.cli import main
from ssl_transfer.data import DataError, build_data, make_train_loader
from ssl_transfer.recipe import load_recipe
from ssl_transfer.train import pretrain
from ssl_transfer.training.checkpoint import LastCheckpoint

from ..training.test_resume import Interrupted, _final_state, assert_bit_identical


def image_folder(root: Path, n: int = 60, classes: int = 3, size: int = 20) -> Path:
    g = np.random.default_rng(0)
    for i in range(n):
        p = root / f"class{i % classes}" / f"{i:03d}.{'jpg' if i % 2 else 'png'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
    return root


def shard(images: Path, out: Path, *extra: str) -> Path:
    assert main(["shard", str(images), str(out), "--chunk-bytes", "8kb", "--workers", "2", *extra]) == 0
    return out


def data_cfg(**kw):
    return load_recipe({"data": kw}).data


def test_shards_round_trip_the_folder_item_for_item(tmp_path: Path, capsys):
    images = image_folder(tmp_path / "images")
    (images / "class1" / "broken.png").write_bytes(b"not a png")
    out = shard(images, tmp_path / "shards")
    printed = capsys.readouterr().out
    assert "60 images (3 classes)" in printed and "skipped 1 unreadable" in printed
    assert len(json.loads((out / "index.json").read_text())["chunks"]) > 2  # several chunks from two writers

    folder = build_data(data_cfg(source="imagefolder", root=str(images), test_root=str(images), image_size=16))
    shards = build_data(data_cfg(source="shards", root=str(out), test_root=str(out), image_size=16))
    assert shards.classes == folder.classes == ["class0", "class1", "class2"] and shards.num_classes == 3
    assert shards.input_shape == folder.input_shape == (3, 16, 16) and len(shards.train) == len(folder.train) == 60
    assert shards.mean == folder.mean and shards.std == folder.std
    for i in range(60):
        (a, ya), (b, yb) = shards.train[i], folder.train[i]
        assert torch.equal(a, b) and int(ya) == int(yb)
    for (xa, ya), (xb, yb) in zip(
        make_train_loader(shards.train, 8, seed=3, num_workers=2), make_train_loader(folder.train, 8, seed=3)
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # same global order, read in worker processes


def test_unlabeled_shards_and_in_memory(tmp_path: Path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        Image.fromarray(np.full((9, 9), 40 * i, np.uint8)).save(flat / f"{i}.png")
    out = shard(flat, tmp_path / "shards")
    d = build_data(data_cfg(source="shards", root=str(out), in_memory=True))
    assert d.classes is None and d.num_classes is None and d.input_shape == (1, 9, 9)
    assert d.train.labels.tolist() == [-1] * 5 and d.train.images[:, 0, 0, 0].tolist() == [0, 40, 80, 120, 160]


def test_a_folder_without_shards_is_one_clear_line(tmp_path: Path, capsys):
    images = image_folder(tmp_path / "images", n=6)
    with pytest.raises(DataError, match="has no LitData shards written by `ssl-transfer shard`"):
        build_data(data_cfg(source="shards", root=str(images)))
    code = main(["pretrain", "quickstart", "data.source=shards", f"data.root={images}", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no LitData shards" in err[0]


def test_training_on_shards_resumes_mid_epoch_bit_identical(tmp_path: Path, quiet, monkeypatch):
    out = shard(image_folder(tmp_path / "images", n=48, size=12), tmp_path / "shards")
    recipe = {
        "data": {"source": "shards", "root": str(out), "batch_size": 8, "num_workers": 2},
        "backbone": {"name": "cnn_tiny"},
        "augment": {"preset": "digits"},
        "trainer": {"max_epochs": 2, "deterministic": True, "checkpoint_every_n_steps": 1},
    }
    full = pretrain(recipe, [*quiet, "name=full"])
    save = LastCheckpoint.save

    def save_then_stop(self, trainer):
        save(self, trainer)
        if trainer.global_step == 4:  # mid-epoch (6 steps an epoch)
            raise Interrupted

    monkeypatch.setattr(LastCheckpoint, "save", save_then_stop)
    with pytest.raises(Interrupted):
        pretrain(recipe, [*quiet, "name=cut"])
    monkeypatch.undo()
    resumed = pretrain(full.run_dir.parent / "cut", [], resume=True)
    a, b = _final_state(full.run_dir), _final_state(resumed.run_dir)
    assert a["step"] == b["step"] == 12
    assert_bit_identical(a, b)
