"""The standard-protocol recipes (recipes/protocols/): each trains a short CPU epoch on the CIFAR-10 subset, and
the CIFAR ResNets they use export and reload like every timm model."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from ssl_transfer.export import export_encoder, load_encoder
from ssl_transfer.methods import METHODS
from ssl_transfer.recipe import list_recipes, load_recipe
from ssl_transfer.train import pretrain

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10_subset.npz"
PROTOCOLS = [r for r in list_recipes() if r.startswith("protocols/")]
needs_subset = pytest.mark.skipif(not SUBSET.is_file(), reason="../shared/datasets/cifar10_subset.npz not present")


def protocol_name(method: str) -> str:
    """A method's protocol recipe: the CIFAR ResNet-18, or ViT-Tiny for the methods that need a ViT."""
    return f"protocols/cifar10_{method}_{'vit_tiny' if METHODS.get(method).needs_vit else 'resnet18'}"


def test_every_method_has_a_protocol_recipe_with_lightlys_settings():
    assert sorted(PROTOCOLS) == sorted(protocol_name(m) for m in METHODS.names())
    for name in PROTOCOLS:
        r = load_recipe(name)
        assert r.name == name.split("/")[1] and r.method.name == name.split("_")[1]
        assert r.data.batch_size == 512 and r.trainer.max_epochs == 200
        assert (r.eval.knn.k, r.eval.knn.temperature) == (200, 0.1)
        if name.endswith("_vit_tiny"):
            assert r.backbone.name == "vit_tiny_patch16_224"
            continue
        assert r.backbone.name == "resnet18_cifar"
        # lightly's benchmark: its ResNet has no zero-initialised last BN per block, SGD decays every parameter
        assert r.backbone.kwargs == {"zero_init_last": False}
        assert r.optim.optimizer != "sgd" or not r.optim.exclude_norm_and_bias


def test_zero_init_last_reaches_the_cifar_resnet():
    from ssl_transfer.backbones import build_backbone

    def last_bn_scales(kwargs):
        m = build_backbone("resnet18_cifar", (3, 32, 32), kwargs=kwargs)
        return torch.cat([b.bn2.weight.detach() for b in m.modules() if b.__class__.__name__ == "BasicBlock"])

    assert torch.all(last_bn_scales({}) == 0)  # timm's default
    assert torch.all(last_bn_scales({"zero_init_last": False}) == 1)


@needs_subset
@pytest.mark.slow
@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_recipe_trains_a_short_cpu_epoch_on_the_subset(name, quiet, request):
    overrides = [
        *([f"method.teacher={request.getfixturevalue('teacher_run')}"] if "_distill_" in name else []),
        *quiet,
        "data.source=npz",
        f"data.path={SUBSET}",
        "data.limit_train=64",  # two steps of 32: a ResNet-18 at 32 px costs seconds per step on a CPU core
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "logging.plots=false",
        "monitor.val_samples=64",
        "trainer.precision=32-true",
    ]
    recipe = load_recipe(name, overrides)
    # two steps at the full lr of batch 512 can blow BatchNorm statistics up: a tenth of it, no warm-up
    optim = recipe.optim.model_copy(update={"lr": recipe.optim.lr / 10, "warmup_epochs": 0.0, "warmup_fraction": None})
    res = pretrain(recipe.model_copy(update={"optim": optim}))
    assert torch.isfinite(torch.tensor(res.metrics["train/loss_epoch"]))
    enc = load_encoder(res.run_dir)
    assert enc.embed(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, enc.embed_dim)


@pytest.mark.parametrize("name, dim", [("resnet18_cifar", 512), ("resnet50_cifar", 2048)])
def test_cifar_resnets_keep_32px_resolution_until_the_last_stage(name, dim):
    m = timm.create_model(name, num_classes=0)
    assert m.num_features == dim and m.maxpool.__class__.__name__ == "Identity"
    assert m.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)  # ImageNet's stem would leave 1x1


def test_resnet18_cifar_exports_and_reloads_with_timm(quiet, tmp_path):
    res = pretrain(
        {
            "name": "r18",
            "data": {"source": "digits", "limit_train": 64, "batch_size": 32, "image_size": 32, "channels": 3},
            "backbone": {"name": "resnet18_cifar"},
            "method": {"name": "simclr"},
            "trainer": {"max_epochs": 1, "precision": "32-true"},
            "logging": {"plots": False},
        },
        quiet,
    )
    live = load_encoder(res.run_dir).eval()
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    for fmt in ("timm", "onnx"):
        exp = export_encoder(res.run_dir, fmt, tmp_path / f"out_{fmt}")
        back = load_encoder(exp.path).eval()
        torch.testing.assert_close(back.embed(x), live.embed(x), atol=1e-4, rtol=1e-4)
    m = timm.create_model(f"local-dir:{tmp_path / 'out_timm'}", pretrained=True).eval()
    assert m.num_features == 512
