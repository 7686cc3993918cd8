"""End-to-end pretraining runs on tiny data: run dir contents, resume, loggers, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ssl_transfer.errors import UserError
from ssl_transfer.export import load_encoder
from ssl_transfer.recipe import load_recipe
from ssl_transfer.train import first_and_last_loss, headline, pretrain, run
from ssl_transfer.training.metrics_log import read_metrics

SMALL = {"name": "t", "data": {"source": "digits", "limit_train": 256, "batch_size": 64}, "trainer": {"max_epochs": 2}}


def test_two_epoch_ae_run_writes_the_run_dir(quiet):
    res = pretrain(SMALL, quiet)
    d = res.run_dir
    for f in [
        "recipe.yaml",
        "checkpoints/last.ckpt",
        "metrics.jsonl",
        "encoder.safetensors",
        "encoder.json",
        "plots/loss.png",
        "plots/reconstructions_epoch001.png",
        "plots/reconstructions_epoch002.png",
    ]:
        assert (d / f).is_file(), f
    saved = load_recipe(d / "recipe.yaml")
    assert saved == load_recipe(SMALL, quiet)  # the resolved recipe, every default spelled out
    assert "augment" in yaml.safe_load((d / "recipe.yaml").read_text())

    ckpt = torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)
    # written at the end of the second epoch (Lightning's "epoch" is the 0-based epoch being saved);
    # 256 / 64 = 4 steps an epoch
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 8
    assert ckpt["ssl_transfer"]["sampler"] == {"epoch": 1, "batches_done": 4}
    recs = read_metrics(d / "metrics.jsonl")
    epochs = [r for r in recs if "train/loss_epoch" in r]
    assert [r["epoch"] for r in epochs] == [0, 1] and epochs[1]["train/loss_epoch"] < epochs[0]["train/loss_epoch"]
    assert sum("train/loss_step" in r for r in recs) == 8

    meta = json.loads((d / "encoder.json").read_text())
    assert meta["input"]["channels"] == 1 and meta["input"]["height"] == 8 and meta["method"] == "ae"
    assert meta["embed_dim"] == 128 and meta["recipe"]["name"] == "t" and "torch" in meta["versions"]
    weights = load_file(d / "encoder.safetensors")
    assert all(not k.startswith("decoder") for k in weights)  # the encoder alone is exported
    enc = load_encoder(d)
    assert enc.embed(torch.zeros(3, 1, 8, 8, dtype=torch.uint8)).shape == (3, 128)


def test_existing_run_dir_needs_resume_or_overwrite(quiet):
    pretrain({**SMALL, "trainer": {"max_epochs": 1}}, quiet)
    with pytest.raises(UserError, match="--resume"):
        pretrain({**SMALL, "trainer": {"max_epochs": 1}}, quiet)
    res = pretrain({**SMALL, "trainer": {"max_epochs": 1}}, quiet, overwrite=True)
    assert (res.run_dir / "encoder.safetensors").is_file()


def test_resume_continues_from_last_checkpoint(quiet):
    first = pretrain({**SMALL, "trainer": {"max_epochs": 1}}, quiet)
    res = pretrain(first.run_dir, ["trainer.max_epochs=3"], resume=True)  # a run dir resumes its saved recipe
    ckpt = torch.load(res.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 12
    epochs = [r["epoch"] for r in read_metrics(res.run_dir / "metrics.jsonl") if "train/loss_epoch" in r]
    assert epochs == [0, 1, 2]
    assert load_recipe(res.run_dir / "recipe.yaml").trainer.max_epochs == 3


def test_resume_without_checkpoint_is_a_clear_error(quiet):
    with pytest.raises(UserError, match="no checkpoint"):
        pretrain(SMALL, quiet, resume=True)


def test_wandb_offline_logs_locally(quiet):
    overrides = [o for o in quiet if not o.startswith("logging.wandb")] + ["logging.wandb=offline"]
    res = pretrain({**SMALL, "trainer": {"max_epochs": 1}}, overrides)
    runs = list((res.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_run_evaluates_knn_well_above_chance(quiet, monkeypatch):
    import ssl_transfer.evaluation.protocol as protocol
    import ssl_transfer.train as train

    built = []
    for mod in (train, protocol):  # run builds its data once: pretraining's bundle goes to the evaluator
        monkeypatch.setattr(
            mod, "build_data", lambda cfg, f=mod.build_data, **kw: built.append(cfg.source) or f(cfg, **kw)
        )
    res = run({"name": "e", "data": {"source": "digits", "batch_size": 64}, "trainer": {"max_epochs": 3}}, quiet)
    assert built == ["digits"]
    assert res.metrics["eval"]["data"]["config"]["source"] == "digits"
    knn = headline(res.metrics["eval"], "knn")
    assert knn["n_test"] == 360 and knn["top1"] > 0.75  # chance is 0.10
    assert headline(json.loads((res.run_dir / "eval.json").read_text()), "knn")["top1"] == knn["top1"]
    summary = json.loads((res.run_dir / "encoder.json").read_text())["eval_metrics"]["summary"]
    assert summary[0]["protocol"] == "knn" and summary[0]["mean"] == knn["top1"]
    assert (res.run_dir / "report.md").is_file()
    first, last = first_and_last_loss(res.run_dir)
    assert last < first


def test_dae_and_timm_backbone_train(quiet, tiny_npz: Path):
    recipe = {
        "name": "r",
        "data": {"source": "npz", "path": str(tiny_npz), "batch_size": 50, "image_size": 16, "channels": 3},
        "backbone": {"name": "resnet18"},
        "method": {"name": "dae"},
        "augment": {"preset": "simclr"},
        "trainer": {"max_epochs": 1},
    }
    res = pretrain(recipe, quiet)
    enc = load_encoder(res.run_dir)
    assert enc.embed_dim == 512 and enc.preprocess.size == (16, 16)


def test_pil_backend_on_an_image_folder(quiet, tmp_path: Path):
    from PIL import Image

    for c in range(2):
        for i in range(12):
            p = tmp_path / "imgs" / f"c{c}" / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (20 * i, 100 * c, 50)).save(p)
    recipe = {
        "name": "pil",
        "data": {"source": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 16, "batch_size": 8},
        "method": {"name": "simclr"},
        "augment": {"preset": "byol", "backend": "pil", "noise_std": 0.05},
        "backbone": {"name": "cnn_tiny"},
        "trainer": {"max_epochs": 1},
    }
    res = pretrain(recipe, quiet)
    assert load_encoder(res.run_dir).preprocess.size == (16, 16)
    assert sum("train/loss_step" in r for r in read_metrics(res.run_dir / "metrics.jsonl")) == 3


def test_pil_backend_refuses_array_sources(quiet):
    with pytest.raises(UserError, match="augment.backend=pil is for imagefolder"):
        pretrain({**SMALL, "augment": {"backend": "pil"}}, quiet)


def test_moco_queue_is_saved_in_the_lightning_checkpoint(quiet):
    res = pretrain({**SMALL, "method": {"name": "moco", "queue_size": 64}, "trainer": {"max_epochs": 1}}, quiet)
    sd = torch.load(res.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    bank = sd["method.criterion.memory_bank.bank"]
    assert (
        bank.shape == (64, 128) and int(sd["method.criterion.memory_bank.bank_ptr"]) == 0
    )  # 4 batches of 64 wrapped once
    assert torch.allclose(bank.norm(dim=1), torch.ones(64), atol=1e-4)
    assert any(k.startswith("method.encoder_momentum.") for k in sd)


def test_vae_writes_reconstruction_and_sample_grids_and_exports_the_mean(quiet):
    res = pretrain({**SMALL, "method": {"name": "vae", "latent_dim": 12}, "trainer": {"max_epochs": 1}}, quiet)
    assert (res.run_dir / "plots" / "reconstructions_epoch001.png").is_file()
    assert (res.run_dir / "plots" / "samples_epoch001.png").is_file()
    enc = load_encoder(res.run_dir)
    assert enc.embed_dim == 12 and json.loads((res.run_dir / "encoder.json").read_text())["head"] == {
        "in_features": 128,
        "out_features": 12,
    }


def test_run_without_a_test_split_fails_before_training(quiet, tmp_path: Path):
    import numpy as np

    path = tmp_path / "train_only.npz"
    np.savez(path, x_train=np.zeros((64, 8, 8), np.uint8), y_train=np.arange(64) % 2)
    with pytest.raises(UserError, match="no test split, which the evaluation after pretraining needs"):
        run({**SMALL, "data": {"source": "npz", "path": str(path), "batch_size": 32}}, quiet)
    assert not (tmp_path / "runs" / "t").exists()  # nothing trained, nothing written
    pretrain(
        {**SMALL, "data": {"source": "npz", "path": str(path), "batch_size": 32}, "trainer": {"max_epochs": 1}}, quiet
    )  # pretrain alone is fine


def test_overwrite_with_bad_data_keeps_the_existing_run(quiet, tmp_path: Path):
    res = pretrain({**SMALL, "trainer": {"max_epochs": 1}}, quiet)
    before = (res.run_dir / "encoder.safetensors").read_bytes()
    with pytest.raises(UserError, match="no such file"):
        pretrain({**SMALL, "data": {"source": "npz", "path": str(tmp_path / "missing.npz")}}, quiet, overwrite=True)
    assert (res.run_dir / "encoder.safetensors").read_bytes() == before
