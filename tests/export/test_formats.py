"""Every export format round-trips: embeddings from the exported file match the live encoder within 1e-4,
the metadata travels beside it, and each format loads with its own ecosystem's call (timm, torch.jit,
onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_transfer.cli import main
from ssl_transfer.export import FORMATS, ExportError, export_encoder, load_encoder
from ssl_transfer.train import pretrain, run

FORMAT_NAMES = ["safetensors", "torchscript", "pt2", "onnx", "timm"]
QUIET = {"logging": {"wandb": "disabled", "plots": False}, "trainer": {"max_epochs": 1, "progress_bar": False}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three trained encoders: our small CNN (via `run`, so eval metrics are in its metadata), a timm ResNet
    with the VAE's linear mean head, and a timm ViT built with extra constructor arguments, pretrained by MAE (the
    exported encoder is the ViT without masking or decoder)."""
    out = tmp_path_factory.mktemp("runs")
    digits = {"source": "digits", "limit_train": 128, "batch_size": 64}
    res = {
        "cnn": run(
            {
                "name": "cnn",
                "output_dir": str(out),
                "data": digits,
                "backbone": {"name": "cnn_tiny"},
                "method": {"name": "simclr"},
                **QUIET,
                "eval": {"protocols": ["knn"]},
            }
        ).run_dir,
        "resnet_vae": pretrain(
            {
                "name": "rv",
                "output_dir": str(out),
                "data": {**digits, "image_size": 32, "channels": 3},
                "backbone": {"name": "resnet18"},
                "method": {"name": "vae", "latent_dim": 16},
                **QUIET,
            }
        ).run_dir,
        "vit": pretrain(
            {
                "name": "vit",
                "output_dir": str(out),
                "data": {**digits, "image_size": 16},
                "backbone": {"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4}},
                "method": {"name": "mae"},
                **QUIET,
            }
        ).run_dir,
    }
    return res


def _images(n: int, meta: dict, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    inp = meta["input"]
    return torch.randint(
        0, 256, (n, inp["channels"], inp["height"] + 3, inp["width"] + 3), dtype=torch.uint8, generator=g
    )


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("which", ["cnn", "resnet_vae", "vit"])
def test_export_round_trip_matches_live_encoder(runs, tmp_path: Path, fmt: str, which: str):
    live = load_encoder(runs[which])
    res = export_encoder(runs[which], fmt, tmp_path / "out" / "enc")
    assert res.max_abs_diff <= 1e-4
    loaded = load_encoder(res.path)
    x = _images(7, live.meta)  # another batch size than traced/exported with; other sizes than trained on
    a, b = live.embed(x), loaded.embed(x)
    assert a.shape == b.shape == (7, live.embed_dim)
    assert torch.allclose(a, b, atol=1e-4, rtol=0), float((a - b).abs().max())
    assert torch.allclose(loaded.embed(x[:1]), a[:1], atol=1e-4)  # a batch of one too

    meta = json.loads(res.meta_path.read_text())
    assert res.meta_path.parent == (res.path if fmt == "timm" else res.path.parent)
    for key in ("backbone", "input", "method", "recipe", "versions", "embed_dim", "export"):
        assert key in meta, key
    assert meta["export"]["format"] == fmt and meta["export"]["check"]["max_abs_diff"] <= 1e-4
    assert {"torch", "timm", "lightly"} <= set(meta["versions"])
    if which == "cnn":
        assert meta["eval_metrics"]["summary"]  # `run` evaluated before exporting


def test_timm_export_loads_with_timms_own_calls(runs, tmp_path: Path):
    import timm
    from timm.data import resolve_data_config

    for which in runs:
        live = load_encoder(runs[which])
        res = export_encoder(runs[which], "timm", tmp_path / which)
        t = json.loads(res.meta_path.read_text())["timm"]
        overlay = dict(t["pretrained_cfg_overlay"])
        file = overlay.pop("file")
        model = timm.create_model(
            t["model_name"], pretrained=True, pretrained_cfg_overlay=dict(file=file, **overlay), **t["model_args"]
        ).eval()
        x = live.preprocess(_images(4, live.meta))
        with torch.no_grad():
            assert torch.allclose(model(x), live(x), atol=1e-5), which
            local = timm.create_model(f"local-dir:{res.path}", pretrained=True).eval()
            assert torch.allclose(local(x), live(x), atol=1e-5), which
        cfg = resolve_data_config({}, model=model)
        inp = live.meta["input"]
        assert tuple(cfg["input_size"]) == (inp["channels"], inp["height"], inp["width"])
        assert list(cfg["mean"]) == pytest.approx(inp["mean"]) and list(cfg["std"]) == pytest.approx(inp["std"])


def test_torchscript_and_onnx_load_without_ssl_transfer(runs, tmp_path: Path):
    import onnxruntime as ort

    live = load_encoder(runs["resnet_vae"])
    x = live.preprocess(_images(3, live.meta))
    ts = export_encoder(runs["resnet_vae"], "torchscript", tmp_path / "e")
    extra = {"ssl_transfer.json": ""}
    scripted = torch.jit.load(str(ts.path), _extra_files=extra)
    assert json.loads(extra["ssl_transfer.json"])["head"]["out_features"] == 16  # metadata inside the file too
    with torch.no_grad():
        assert torch.allclose(scripted(x), live(x), atol=1e-5)

    ox = export_encoder(runs["resnet_vae"], "onnx", tmp_path / "e")
    session = ort.InferenceSession(str(ox.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": x.numpy()})
    assert np.abs(out - live(x).detach().numpy()).max() <= 1e-4


def test_unknown_format_and_bad_source_are_clear(runs, tmp_path: Path, capsys):
    with pytest.raises(ExportError, match="unknown export format 'onxx'.*onnx"):
        export_encoder(runs["cnn"], "onxx", tmp_path / "x")
    assert main(["export", str(runs["cnn"]), "--format", "tflite"]) == 2
    assert "ssl-transfer: error: --format: unknown export format 'tflite'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    assert sorted(FORMATS) == sorted(FORMAT_NAMES)


def test_export_cli(runs, tmp_path: Path, capsys):
    assert main(["export", str(runs["cnn"]), "--format", "onnx", "--out", str(tmp_path / "model.onnx")]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and "max |embedding difference|" in out
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.json").is_file()
    assert main(["export", str(runs["cnn"]), "--format", "timm"]) == 0
    assert (runs["cnn"] / "export" / "timm" / "config.json").is_file()


def test_run_writes_the_recipes_export_formats(tmp_path: Path):
    res = run(
        {
            "name": "ex",
            "output_dir": str(tmp_path),
            "data": {"source": "digits", "limit_train": 128, "batch_size": 64},
            "backbone": {"name": "cnn_tiny"},
            "method": {"name": "ae"},
            **QUIET,
            "export": {"formats": ["safetensors", "torchscript", "timm"]},
        }
    )
    d = res.run_dir
    assert (
        (d / "encoder.safetensors").is_file()
        and (d / "export" / "encoder.pt").is_file()
        and (d / "export" / "timm" / "model.safetensors").is_file()
    )
    assert json.loads((d / "export" / "encoder.json").read_text())["eval_metrics"]["summary"]


def test_embed_a_folder_of_images(runs, tmp_path: Path, capsys):
    live = load_encoder(runs["cnn"])
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    names = ["a/1.png", "a/2.jpg", "b/c/3.png", "4.bmp"]
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 17), dtype=np.uint8)).save(root / n)
    (root / "b" / "broken.png").write_bytes(b"not a png")
    (root / "readme.txt").write_text("ignored")

    assert main(["embed", str(runs["cnn"]), str(root), "--out", str(tmp_path / "emb.npy")]) == 0
    assert "4 embeddings of dim 64" in capsys.readouterr().out
    emb = np.load(tmp_path / "emb.npy")
    rows = (tmp_path / "emb.files.txt").read_text().splitlines()
    assert emb.shape == (4, 64) and emb.dtype == np.float32 and rows == sorted(names)
    info = json.loads((tmp_path / "emb.json").read_text())
    assert info["count"] == 4 and [s["file"] for s in info["skipped_files"]] == ["b/broken.png"]
    want = live.embed([Image.open(root / r) for r in rows])
    assert torch.allclose(torch.from_numpy(emb), want, atol=1e-5)

    assert main(["embed", str(runs["cnn"]), str(root), "--out", str(tmp_path / "e2.npy"), "--bad-images", "error"]) == 2


def test_embed_drops_a_file_that_passes_the_scan_but_fails_to_decode(runs, tmp_path: Path, capsys):
    # a truncated JPEG passes PIL's verify() and fails only when decoded: its row is dropped, the others keep
    # their files (the embed reads through the training's FileDataset, which marks it instead of substituting)
    live = load_encoder(runs["cnn"])
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(1)
    for n in ("1.jpg", "2.jpg", "3.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / n, quality=95)
    data = (root / "2.jpg").read_bytes()
    (root / "2.jpg").write_bytes(data[: len(data) // 2])
    assert main(["embed", str(runs["cnn"]), str(root), "--out", str(tmp_path / "emb.npy")]) == 0
    rows = (tmp_path / "emb.files.txt").read_text().splitlines()
    info = json.loads((tmp_path / "emb.json").read_text())
    assert rows == ["1.jpg", "3.jpg"] and info["skipped_files"] == [{"file": "2.jpg", "reason": "decoding failed"}]
    want = live.embed([Image.open(root / r) for r in rows])
    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "emb.npy")), want, atol=1e-5)
    assert main(["embed", str(runs["cnn"]), str(root), "--out", str(tmp_path / "e2.npy"), "--bad-images", "error"]) == 2
    assert "2.jpg" in capsys.readouterr().err


def test_embed_killed_midway_continues_where_it_was_and_matches_an_uninterrupted_run(runs, tmp_path: Path):
    from ssl_transfer.data.datasets import FileDataset
    from ssl_transfer.embed import embed_folder

    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(root / f"{i:02d}.png")
    whole = embed_folder(runs["cnn"], root, tmp_path / "whole.npy", batch_size=4)

    reads: list[int] = []
    real_getitem = FileDataset.__getitem__

    def dies_after_18_reads(self, i):
        if len(reads) == 18:
            raise KeyboardInterrupt  # the process is gone here: nothing after this point may be saved
        reads.append(i)
        return real_getitem(self, i)

    FileDataset.__getitem__ = dies_after_18_reads  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            embed_folder(runs["cnn"], root, tmp_path / "part.npy", batch_size=4, save_every_s=0)
    finally:
        FileDataset.__getitem__ = real_getitem  # type: ignore[method-assign]
    progress = json.loads((tmp_path / "part.progress.json").read_text())
    assert progress["rows_done"] == 16 and progress["rows"] == 30

    counted: list[int] = []

    def counts(self, i):
        counted.append(i)
        return real_getitem(self, i)

    FileDataset.__getitem__ = counts  # type: ignore[method-assign]
    try:
        again = embed_folder(runs["cnn"], root, tmp_path / "part.npy", batch_size=4)
    finally:
        FileDataset.__getitem__ = real_getitem  # type: ignore[method-assign]
    assert len(counted) == 14  # only the rows not done before
    assert again.count == 30 and not (tmp_path / "part.progress.json").exists()
    assert np.array_equal(np.load(again.embeddings), np.load(whole.embeddings))
    assert again.files.read_text() == whole.files.read_text()
