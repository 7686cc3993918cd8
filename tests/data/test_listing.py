"""Image-folder listing (no file opened), the listing saved with a run, lazy verification and draft decoding."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from ssl_transfer.data import DataError, build_data, make_loader
from ssl_transfer.data import sources as sources_mod
from ssl_transfer.data.datasets import FileDataset, load_image
from ssl_transfer.data.listing import Listing, ListingError, Paths, list_folder
from ssl_transfer.recipe import load_recipe


def _png(path: Path, value: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def _nested(root: Path) -> None:
    for cls in ("cat", "dog", "emu"):
        for i in range(3):
            _png(root / cls / f"{i}.png", 10 * i)
        _png(root / cls / "sub" / "deeper" / "x.png")
        (root / cls / "notes.txt").write_text("not an image")


def test_labels_and_order_match_torchvision_image_folder(tmp_path: Path):
    _nested(tmp_path)
    ours = list_folder(tmp_path)
    theirs = tvd.ImageFolder(str(tmp_path), loader=lambda p: p)
    assert ours.classes == theirs.classes
    assert sorted(zip(ours.paths, ours.labels.tolist())) == sorted(theirs.samples)
    assert list(ours.paths) == [ours.paths[i] for i in range(len(ours))]


def test_flat_and_recursive_folders_are_unlabeled(tmp_path: Path):
    for i in range(4):
        _png(tmp_path / f"{i}.jpg")
    _png(tmp_path / "more" / "x.png")
    flat = list_folder(tmp_path / "more")
    assert flat.classes is None and flat.labels.tolist() == [-1]
    everything = list_folder(tmp_path, recursive=True)
    assert len(everything) == 5 and everything.classes is None and (everything.labels == -1).all()
    assert everything.paths.relative(4) == "more/x.png"


def test_missing_empty_and_empty_class_folders_are_named(tmp_path: Path):
    with pytest.raises(ListingError, match="no such image folder"):
        list_folder(tmp_path / "nope")
    with pytest.raises(ListingError, match="has no images"):
        list_folder(tmp_path)
    _png(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(ListingError, match="class folder 'b' has no images"):
        list_folder(tmp_path)
    cfg = load_recipe({"data": {"source": "imagefolder", "root": str(tmp_path)}}).data
    with pytest.raises(DataError, match="data.root=.*class folder 'b' has no images"):
        build_data(cfg)


def test_paths_pickle_as_one_array_not_one_string_per_file(tmp_path: Path):
    rel = [f"class_{i % 10}/image_{i:07d}.jpg" for i in range(20_000)]
    paths = Paths.from_strings(str(tmp_path), rel)
    assert paths[123] == str(tmp_path / rel[123]) and paths.take([5, 7])[1] == str(tmp_path / rel[7])
    as_list = pickle.dumps([str(tmp_path / r) for r in rel])
    assert len(pickle.dumps(paths)) < 0.6 * len(as_list)
    assert len(pickle.loads(pickle.dumps(paths))) == 20_000


def test_listing_saved_with_a_run_is_read_back_even_after_files_are_added(tmp_path: Path):
    root = tmp_path / "images"
    _nested(root)
    _png(root / "cat" / "broken.png")
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    cfg = load_recipe({"data": {"source": "imagefolder", "root": str(root), "image_size": 8}}).data
    first = build_data(cfg)
    assert len(first.train) == 12 and len(first.skipped_files) == 1
    run = tmp_path / "run"
    first.save_listings(run)
    saved = Listing.load(run / "data" / "listing-train.npz")
    assert list(saved.paths) == list(first.train.files) and saved.skipped == first.skipped_files

    _png(root / "dog" / "added.png")
    again = build_data(cfg, listing_dir=run)  # resume: the files the run started with, in the same order
    assert list(again.train.files) == list(first.train.files) and len(again.skipped_files) == 1
    assert len(build_data(cfg).train) == 13  # a new run lists the folder again
    other_root = str(root / "cat" / "sub" / "deeper")
    other = load_recipe({"data": {"source": "imagefolder", "root": other_root, "image_size": 8}}).data
    assert len(build_data(other, listing_dir=run).train) == 1  # a listing of another folder is not used


def test_large_folders_are_verified_as_they_are_read_and_failures_counted_across_workers(tmp_path: Path, monkeypatch):
    for i in range(40):
        _png(tmp_path / f"{i:02d}.png", i)
    (tmp_path / "07.png").write_bytes(b"truncated")
    (tmp_path / "23.png").write_bytes(b"")
    monkeypatch.setattr(sources_mod, "VERIFY_ALL_MAX", 10)
    cfg = load_recipe({"data": {"source": "imagefolder", "root": str(tmp_path)}}).data
    d = build_data(cfg)
    assert len(d.train) == 40 and not d.skipped_files  # nothing opened up front beyond the statistics' sample
    assert isinstance(d.train, FileDataset)
    before = d.train.read_failures
    seen = [y for _, y in make_loader(d.train, 8, shuffle=False, drop_last=False, num_workers=2)]
    assert sum(len(y) for y in seen) == 40
    assert d.train.read_failures - before == 2  # counted in the two worker processes, seen here
    strict = load_recipe({"data": {"source": "imagefolder", "root": str(tmp_path), "verify": "all"}}).data
    assert len(build_data(strict).train) == 38


def test_draft_decode_reads_a_large_jpeg_at_reduced_scale_close_to_full(tmp_path: Path):
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    smooth = np.stack([(xx + yy) / 4, xx / 2, 255 - yy / 2], -1) + g.normal(0, 4, (512, 512, 3))
    path = tmp_path / "big.jpg"
    Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(path, quality=92)
    full = load_image(path, 3, (64, 64), decode="full")
    draft = load_image(path, 3, (64, 64), decode="draft")
    assert full.shape == draft.shape == (3, 64, 64)
    assert (full.float() - draft.float()).abs().mean() < 2.0
    with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        assert im.size == (64, 64)  # libjpeg decoded 1/8 of each side
    png = tmp_path / "big.png"
    Image.open(path).save(png)
    assert torch.equal(load_image(png, 3, (64, 64), decode="draft"), load_image(png, 3, (64, 64), decode="full"))


def test_a_resumed_run_trains_on_the_files_it_listed(tmp_path: Path, quiet):
    from ssl_transfer.train import pretrain

    root = tmp_path / "imgs"
    for i in range(12):
        _png(root / ("a" if i % 2 else "b") / f"{i}.png", 20 * i)
    recipe = {
        "name": "listed",
        "data": {"source": "imagefolder", "root": str(root), "image_size": 8, "batch_size": 4, "num_workers": 0},
        "backbone": {"name": "cnn_tiny"},
        "method": {"name": "simclr"},
        "trainer": {"max_steps": 2},
    }
    first = pretrain(recipe, quiet)
    assert (first.run_dir / "data" / "listing-train.npz").is_file()
    for i in range(12, 20):
        _png(root / "a" / f"{i}.png", 5 * i)
    resumed = pretrain(recipe, [*quiet, "trainer.max_steps=4"], resume=True)
    assert resumed.data is not None and len(resumed.data.train) == 12


def test_device_decode_batches_jpegs_like_pil_and_replaces_a_broken_one(tmp_path: Path):
    from ssl_transfer.data.datasets import collate_batch, decode_batch

    g = np.random.default_rng(1)
    yy, xx = np.mgrid[0:48, 0:40]
    for i in range(4):
        smooth = np.stack([xx * 5 + i * 10, yy * 4, 200 - xx * 3], -1) + g.normal(0, 3, (48, 40, 3))
        Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(tmp_path / f"{i}.jpg", quality=95)
    Image.fromarray(np.full((10, 10, 3), 77, np.uint8)).save(tmp_path / "4.png")
    files = [str(tmp_path / f"{i}.jpg") for i in range(4)] + [str(tmp_path / "4.png")]
    ds = FileDataset(files, [0, 1, 2, 3, 4], 3, (24, 24), decode="device")
    images, labels = collate_batch([ds[i] for i in range(5)])
    assert (
        isinstance(images, list) and [t.ndim for t in images] == [1, 1, 1, 1, 3] and labels.tolist() == [0, 1, 2, 3, 4]
    )
    batch, failures = decode_batch(images, 3, (24, 24), "cpu")
    assert batch.shape == (5, 3, 24, 24) and batch.dtype == torch.uint8 and failures == 0
    for i in range(5):
        ref = load_image(files[i], 3, (24, 24), "full")
        assert (batch[i].float() - ref.float()).abs().mean() < 1.5
    broken = images[1][: len(images[1]) // 3]
    batch, failures = decode_batch([images[0], broken, images[2]], 3, (24, 24), "cpu")
    assert failures == 1 and batch.shape == (3, 3, 24, 24)


def test_pretraining_with_device_decode(tmp_path: Path, quiet, monkeypatch):
    import ssl_transfer.training.module as module_mod
    from ssl_transfer.train import pretrain

    calls = []
    real = module_mod.decode_batch

    def counted(images, *args):
        calls.append(sum(t.ndim == 1 for t in images))
        return real(images, *args)

    monkeypatch.setattr(module_mod, "decode_batch", counted)

    root = tmp_path / "imgs"
    g = np.random.default_rng(2)
    for i in range(16):
        (root / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / str(i % 2) / f"{i}.jpg")
    res = pretrain(
        {
            "data": {"source": "imagefolder", "root": str(root), "image_size": 16, "batch_size": 8, "decode": "device"},
            "backbone": {"name": "cnn_tiny"},
            "trainer": {"max_steps": 2},
        },
        [*quiet, "name=device"],
    )
    assert res.data is not None and res.data.train.decode == "draft"  # evaluation and the monitor decode on CPU
    assert np.isfinite(res.metrics["train/loss_epoch"]) and "data/read_failures" not in res.metrics
    assert calls == [8, 8]  # every training batch arrived as encoded JPEGs
