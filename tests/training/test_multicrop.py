"""Multi-crop: global views at the data's size and local views at ``augment.local_size`` reach the method grouped by
size, from the batched pipeline and from per-image (PIL) views; methods without local views refuse them."""

from __future__ import annotations

from pathlib import Path

import kornia.augmentation as K
import pytest
import torch

from ssl_transfer.data.augment_spec import AugmentConfig
from ssl_transfer.data.datasets import collate_batch
from ssl_transfer.data.views import build_local_augment, build_pil_views
from ssl_transfer.errors import UserError
from ssl_transfer.methods.dino import DINO
from ssl_transfer.methods.swav import SwAV
from ssl_transfer.train import pretrain


def test_local_pipeline_crops_small_and_resizes():
    cfg = AugmentConfig(preset="cifar", crop_scale=(0.4, 1.0), local_views=3, local_crop_scale=(0.05, 0.3))
    aug = build_local_augment(cfg, 3, (32, 32))
    assert aug is not None and build_local_augment(AugmentConfig(), 3, (32, 32)) is None
    x = torch.rand(5, 3, 32, 32)
    assert aug(x).shape == (5, 3, 16, 16)
    crop = next(op for op in aug.ops if isinstance(op, K.RandomResizedCrop))
    assert tuple(crop._param_generator.scale) == pytest.approx((0.05, 0.3))  # not the global crop_scale
    sized = AugmentConfig(local_views=2, local_size=12, local_crop_scale=(1.0, 1.0))  # no crop: plain resize
    out = build_local_augment(sized, 3, (32, 32))(x)
    assert out.shape == (5, 3, 12, 12)


def test_pil_views_give_global_and_local_stacks_that_collate():
    from PIL import Image

    cfg = AugmentConfig(preset="cifar", local_views=4, local_size=8)
    t = build_pil_views(cfg, 3, (16, 16), num_views=2)
    g, loc = t(Image.new("RGB", (40, 30), (200, 30, 50)))
    assert g.shape == (2, 3, 16, 16) and loc.shape == (4, 3, 8, 8) and loc.dtype == torch.uint8
    (gb, lb), labels = collate_batch([((g, loc), 0), ((g, loc), 1)])
    assert gb.shape == (2, 2, 3, 16, 16) and lb.shape == (2, 4, 3, 8, 8) and labels.tolist() == [0, 1]


def _record_views(monkeypatch, cls) -> list[list[tuple[int, ...]]]:
    seen: list[list[tuple[int, ...]]] = []
    original = cls.training_step

    def spy(self, views):
        seen.append([tuple(v.shape) for v in views])
        return original(self, views)

    monkeypatch.setattr(cls, "training_step", spy)
    return seen


@pytest.mark.parametrize("cls,name", [(DINO, "dino"), (SwAV, "swav")])
def test_batched_multicrop_trains(quiet, monkeypatch, cls, name):
    seen = _record_views(monkeypatch, cls)
    recipe = {
        "name": name,
        "data": {"source": "digits", "limit_train": 128, "batch_size": 32},
        "backbone": {"name": "cnn_tiny"},
        "method": {"name": name},
        "augment": {"preset": "digits", "local_views": 3, "local_size": 6},
        "trainer": {"max_epochs": 1},
    }
    res = pretrain(recipe, quiet)
    assert res.metrics["train/loss_epoch"] == res.metrics["train/loss_epoch"]  # finite, logged
    assert seen[-1] == [(32, 1, 8, 8)] * 2 + [(32, 1, 6, 6)] * 3


def test_per_image_multicrop_on_an_image_folder(quiet, monkeypatch, tmp_path: Path):
    from PIL import Image

    for c in range(2):
        for i in range(8):
            p = tmp_path / "imgs" / f"c{c}" / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (20 * i, 100 * c, 50)).save(p)
    seen = _record_views(monkeypatch, DINO)
    recipe = {
        "name": "pil",
        "data": {"source": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 16, "batch_size": 8},
        "method": {"name": "dino"},
        "augment": {"preset": "cifar", "backend": "pil", "local_views": 2, "local_size": 8},
        "backbone": {"name": "cnn_tiny"},
        "trainer": {"max_epochs": 1},
    }
    pretrain(recipe, quiet)
    assert seen and seen[-1] == [(8, 3, 16, 16)] * 2 + [(8, 3, 8, 8)] * 2


def test_two_view_methods_refuse_local_views(quiet):
    recipe = {"name": "t", "data": {"source": "digits", "limit_train": 64}, "method": {"name": "simclr"}}
    with pytest.raises(UserError, match=r"augment.local_views=2: method simclr takes 2 views.*dino, swav"):
        pretrain({**recipe, "augment": {"local_views": 2}}, quiet)
