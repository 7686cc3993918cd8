"""Speed settings change how fast a run goes, not what it learns: channels_last, bf16 autocast with float32
losses, one pass per view or one joint pass, torch.compile; plus the epoch speed metrics and worker counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from torch import nn

from ssl_transfer.backbones import build_backbone
from ssl_transfer.data import resolve_workers
from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.errors import UserError
from ssl_transfer.export import export_encoder, load_encoder
from ssl_transfer.methods import build_method
from ssl_transfer.methods.base import in_fp32
from ssl_transfer.recipe import RecipeError, load_recipe
from ssl_transfer.train import pretrain, resolve_device
from ssl_transfer.training import performance
from ssl_transfer.training.metrics_log import read_metrics
from ssl_transfer.training.performance import compile_children, to_channels_last, to_contiguous, uncompile

RECIPE = {
    "data": {"source": "digits", "limit_train": 256, "batch_size": 64},
    "backbone": {"name": "cnn_tiny"},
    "augment": {"preset": "digits"},
    "trainer": {"max_epochs": 2, "deterministic": True},
}


def _losses(run: Path) -> list[float]:
    return [r["train/loss_step"] for r in read_metrics(run / "metrics.jsonl") if "train/loss_step" in r]


def _run(tmp: Path, name: str, quiet: list[str], *extra: str) -> Path:
    return pretrain(
        RECIPE, [*quiet, f"output_dir={tmp}", f"name={name}", "trainer.log_every_n_steps=1", *extra]
    ).run_dir


def _assert_same_embeddings(a: torch.Tensor, b: torch.Tensor) -> None:
    """Same function up to rounding: after a few AdamW steps (updates ~ lr * sign of the gradient for small
    gradients) float differences of ~1e-3 in single coordinates are expected; directions must agree."""
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999
    assert (a - b).abs().max() < 1e-2 * a.abs().max()


def test_auto_precision_follows_the_device(monkeypatch):
    assert performance.auto_precision("gpu") == "bf16-mixed"
    monkeypatch.setattr(performance, "cpu_has_native_bf16", lambda: True)
    assert performance.auto_precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(performance, "cpu_has_native_bf16", lambda: False)
    assert performance.auto_precision("cpu") == "32-true"
    assert resolve_device(load_recipe({"trainer": {"accelerator": "cpu"}}).trainer) == ("cpu", "32-true")
    assert resolve_device(load_recipe({"trainer": {"accelerator": "cpu", "precision": "bf16-mixed"}}).trainer) == (
        "cpu",
        "bf16-mixed",
    )


def _bf16_weight_grad_is_right(conv: nn.Module, x: torch.Tensor, reps: int = 3) -> bool:
    for _ in range(reps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        g = torch.randn(y.shape)
        y.float().backward(g)
        got, conv.weight.grad = conv.weight.grad, None
        conv(x).backward(g)
        want, conv.weight.grad = conv.weight.grad, None
        if not (torch.isfinite(got).all() and (got - want).abs().max() <= 0.05 * want.abs().max() + 1e-3):
            return False
    return True


def test_cpu_bf16_hazards_flag_every_convolution_whose_bf16_weight_gradient_is_wrong():
    """Every convolution the check passes computes its bf16 weight gradient right (oneDNN's bug is caught),
    and the check flags the known cases (input narrower than the stride, with padding) in plain and
    transposed convolutions."""
    torch.manual_seed(0)
    passed = 0
    cases = [
        (k_, s_, p_, w_, t_)
        for k_ in (2, 3, 5)
        for s_ in (1, 2, 3)
        for p_ in range(k_ // 2 + 1)
        for w_ in (1, 2, 3, 5)
        for t_ in (False, True)
    ]
    for k, s, p, w, transposed in cases:
        if not transposed and w + 2 * p < k or transposed and (w - 1) * s - 2 * p + k < 1:
            continue
        conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(16, 16, k, s, p, bias=False)
        x = torch.randn(8, 16, 6, w)
        hazards = performance.cpu_bf16_hazards(conv, lambda m, x=x: m(x))
        wide = conv(x).shape[-1] if transposed else w
        assert bool(hazards) == (p > 0 and wide < s), (k, s, p, w, transposed, hazards)
        if not hazards:
            assert _bf16_weight_grad_is_right(conv, x), (k, s, p, w, transposed)
            passed += 1
    assert passed > 100
    frozen = nn.Conv2d(4, 4, 3, 2, 1).requires_grad_(False)  # no weight gradient, nothing to get wrong
    assert performance.cpu_bf16_hazards(frozen, lambda m: m(torch.randn(2, 4, 1, 1))) == []
    named = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1))
    assert performance.cpu_bf16_hazards(named, lambda m: m(torch.randn(2, 3, 2, 2))) == [
        "1 (input 1 px, stride 2, padding 1)"
    ]


def test_auto_precision_falls_back_to_float32_where_cpu_bf16_is_wrong(
    monkeypatch, tmp_path: Path, quiet, tiny_npz: Path, caplog
):
    """A timm ResNet at 16 px (1-pixel input to layer 4's strided conv) trains in float32 under ``auto`` and is
    refused under an explicit bf16-mixed; a small CNN keeps bf16. The random streams are not disturbed."""
    monkeypatch.setattr(performance, "cpu_has_native_bf16", lambda: True)
    seen: list[str] = []

    class Precision(pl.Callback):
        def on_train_start(self, trainer, module):
            seen.append(str(trainer.precision))

    data = {"source": "npz", "path": str(tiny_npz), "batch_size": 50, "image_size": 16, "channels": 3}
    resnet = {
        "name": "r",
        "data": data,
        "backbone": {"name": "resnet18"},
        "method": {"name": "simclr"},
        "trainer": {"max_epochs": 1},
    }
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        res = pretrain(resnet, [*quiet, f"output_dir={tmp_path}"], callbacks=[Precision()])
    assert (
        seen == ["32-true"]
        and res.precision == "32-true"
        and "float32 instead of bf16" in caplog.text
        and "layer4.0.conv1" in caplog.text
    )
    with pytest.raises(
        UserError,
        match=r"trainer.precision=bf16-mixed on CPU: oneDNN's bf16 weight gradients are wrong for "
        r"encoder.model.layer4.0.conv1",
    ):
        pretrain(resnet, [*quiet, f"output_dir={tmp_path}", "name=r2", "trainer.precision=bf16-mixed"])
    small = pretrain(
        RECIPE, [*quiet, f"output_dir={tmp_path}", "name=small", "trainer.max_epochs=1"], callbacks=[Precision()]
    )
    assert seen[-1] == "bf16-mixed" and small.precision == "bf16-mixed"
    a = small.run_dir
    b = pretrain(
        RECIPE,
        [*quiet, f"output_dir={tmp_path}", "name=small2", "trainer.max_epochs=1", "trainer.precision=bf16-mixed"],
    ).run_dir
    assert _losses(a) == _losses(b)  # the probe's forward pass used no random numbers of the run


def test_loss_in_fp32_under_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    z0, z1 = torch.randn(64, 32), torch.randn(64, 32)
    crit = NTXentLoss(temperature=0.1)
    exact = crit(z0, z1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lossy = crit(z0, z1)  # the similarity matmul runs in bf16
        kept = in_fp32(crit, z0, z1)
    assert kept.dtype == torch.float32 and torch.allclose(kept, exact, rtol=0, atol=1e-6)
    assert not torch.allclose(lossy.float(), exact, rtol=0, atol=1e-4)


def test_channels_last_model_gives_the_same_outputs_and_saves_contiguous():
    torch.manual_seed(0)
    a = build_backbone("cnn_tiny", (1, 28, 28)).eval()
    b = build_backbone("cnn_tiny", (1, 28, 28)).eval()
    b.load_state_dict(a.state_dict())
    to_channels_last(b)
    conv = b.stages[0][3].weight  # 16 -> 16 channels (with 1 input channel both layouts coincide)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(b(x.contiguous(memory_format=torch.channels_last)), a(x), rtol=1e-5, atol=1e-5)
    to_contiguous(b)
    assert all(t.is_contiguous() for t in b.state_dict().values())


def test_channels_last_run_learns_the_same_as_default_layout(tmp_path: Path, quiet):
    cl = _run(tmp_path, "cl", quiet, "trainer.precision=32-true", "trainer.channels_last=true")
    plain = _run(tmp_path, "plain", quiet, "trainer.precision=32-true", "trainer.channels_last=false")
    a, b = _losses(cl), _losses(plain)
    assert len(a) == len(b) == 8
    assert a == pytest.approx(b, rel=1e-3)
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    _assert_same_embeddings(load_encoder(cl).embed(x), load_encoder(plain).embed(x))


def test_bf16_run_tracks_the_float32_run(tmp_path: Path, quiet):
    bf = _run(tmp_path, "bf", quiet, "trainer.precision=bf16-mixed")
    fp = _run(tmp_path, "fp", quiet, "trainer.precision=32-true")
    a, b = _losses(bf), _losses(fp)
    assert a[0] == pytest.approx(b[0], rel=0.02)  # same weights, same views: only bf16 rounding differs
    assert a[-1] < 0.8 * a[0] and b[-1] < 0.8 * b[0]
    assert a != b
    enc = load_encoder(bf)
    assert all(p.dtype == torch.float32 for p in enc.parameters())  # autocast keeps master weights in float32


def test_views_go_through_one_pass_each_unless_joint():
    torch.manual_seed(0)
    method = build_method(
        load_recipe({"method": {"name": "simclr"}}).method, build_backbone("cnn_tiny", (1, 16, 16)), (1, 16, 16)
    )
    views = [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16) + 3.0]
    fn = lambda x: method.encoder(x)  # noqa: E731 (BatchNorm in train mode: batch statistics)
    per_view = method.forward_views(fn, views)
    torch.testing.assert_close(per_view[1], fn(views[1]))
    method.joint_views = True
    joint = method.forward_views(fn, views)
    torch.testing.assert_close(joint[1], fn(torch.cat(views))[8:])
    assert not torch.allclose(joint[1], per_view[1], atol=1e-3)  # statistics shared across views differ


def test_recipe_speed_fields(quiet):
    r = load_recipe(
        {"trainer": {"compile": True, "channels_last": False, "joint_views": True}, "data": {"num_workers": "auto"}}
    )
    assert r.trainer.compile and not r.trainer.channels_last and r.trainer.joint_views and r.data.num_workers == "auto"
    with pytest.raises(RecipeError, match="data.num_workers"):
        load_recipe({"data": {"num_workers": -1}})
    with pytest.raises(RecipeError, match="trainer.compile"):
        load_recipe({"trainer": {"compile": "sometimes"}})


def test_auto_workers_for_files_not_arrays(tmp_path: Path):
    arrays = ArrayDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    files = FileDataset([str(tmp_path / "a.png")], [0], channels=1, size=(8, 8))
    assert resolve_workers(arrays, "auto") == 0
    assert 1 <= resolve_workers(files, "auto") <= 8
    assert resolve_workers(files, 3) == 3


def test_epoch_speed_is_logged(tmp_path: Path, quiet):
    run = _run(tmp_path, "speed", quiet)
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "train/epoch_time_s" in r]
    assert len(rows) == 2
    for r in rows:
        assert r["train/epoch_time_s"] > 0
        assert r["train/images_per_s"] == pytest.approx(4 * 64 / r["train/epoch_time_s"], rel=1e-3)


def test_compile_children_keeps_state_dict_keys():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    keys = list(m.state_dict())
    assert compile_children(m) == ["0", "2"]
    assert m[0]._compiled_call_impl is not None and list(m.state_dict()) == keys
    uncompile(m)
    assert m[0]._compiled_call_impl is None


@pytest.mark.slow
def test_compiled_run_matches_eager_run_and_exports(tmp_path: Path, quiet):
    comp = _run(tmp_path, "compiled", quiet, "trainer.precision=32-true", "trainer.compile=true")
    eager = _run(tmp_path, "eager", quiet, "trainer.precision=32-true")
    assert _losses(comp) == pytest.approx(_losses(eager), rel=1e-3)
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    _assert_same_embeddings(load_encoder(comp).embed(x), load_encoder(eager).embed(x))
    onnx = export_encoder(comp, "onnx", tmp_path / "compiled.onnx")  # exporters trace the plain modules
    torch.testing.assert_close(load_encoder(onnx.path).embed(x), load_encoder(comp).embed(x), rtol=1e-4, atol=1e-4)
