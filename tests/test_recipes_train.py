"""Every bundled method recipe trains: MNIST recipes for one epoch on the shared MNIST file, CIFAR-10 recipes on
the shared CIFAR-10 subset (their torchvision source swapped for the npz), on a slice of the data."""

from __future__ import annotations

import json

import pytest

from ssl_transfer.methods import METHODS
from ssl_transfer.recipe import list_recipes, load_recipe
from ssl_transfer.train import pretrain
from ssl_transfer.training.metrics_log import read_metrics

from .conftest import REPO, SHARED

MNIST = [r for r in list_recipes() if r.endswith("_mnist")]
CIFAR = [r for r in list_recipes() if r.endswith("_cifar10")]
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared datasets not present")


def test_every_method_has_both_recipes():
    assert sorted(r.removesuffix("_mnist") for r in MNIST) == METHODS.names()
    assert sorted(r.removesuffix("_cifar10") for r in CIFAR) == METHODS.names()


@needs_shared
@pytest.mark.parametrize("name", MNIST)
def test_mnist_recipe_path_is_the_shared_file_from_the_repo_root(name):
    assert (REPO / load_recipe(name).data.path).resolve() == (SHARED / "mnist.npz").resolve()


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("name", MNIST)
def test_mnist_recipe_trains_one_epoch(name, quiet, request):
    extra = [f"method.teacher={request.getfixturevalue('teacher_run')}"] if name.startswith("distill") else []
    res = pretrain(
        name,
        [
            *quiet,
            f"data.path={SHARED / 'mnist.npz'}",
            "data.limit_train=1024",
            "trainer.max_epochs=1",
            "monitor.val_samples=64",
            *extra,
        ],
    )
    losses = [r["train/loss_step"] for r in read_metrics(res.run_dir / "metrics.jsonl") if "train/loss_step" in r]
    assert len(losses) == 4 and all(abs(v) < 1e6 for v in losses)
    assert (res.run_dir / "encoder.safetensors").is_file()
    # the exported encoder is built as the recipe asks (MAE's recipes pool the patch tokens: global_pool avg)
    meta = json.loads((res.run_dir / "encoder.json").read_text())
    assert meta["backbone"]["kwargs"] == load_recipe(name).backbone.kwargs


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR)
def test_cifar10_recipe_trains_on_the_subset(name, quiet, request):
    overrides = [
        *([f"method.teacher={request.getfixturevalue('teacher_run')}"] if name.startswith("distill") else []),
        *quiet,
        "data.source=npz",
        f"data.path={SHARED / 'cifar10_subset.npz'}",
        "data.limit_train=256",
        "data.batch_size=128",
        "trainer.max_epochs=1",
        "monitor.val_samples=64",  # the monitor's default 1,000 held-out images took half of each test's time
    ]
    res = pretrain(name, overrides)
    assert (res.run_dir / "encoder.safetensors").is_file()
