"""A NaN/inf loss or gradient stops the run before the optimizer applies it, with a message naming the step
and the last good checkpoint, which stays loadable and finite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_transfer.cli import main
from ssl_transfer.errors import NonFiniteError
from ssl_transfer.methods.simclr import SimCLR
from ssl_transfer.train import pretrain

# 320 digits / batch 64 = 5 steps an epoch; last.ckpt at each epoch end only (the default)
RECIPE = {
    "name": "nf",
    "data": {"source": "digits", "limit_train": 320, "batch_size": 64},
    "backbone": {"name": "cnn_tiny"},
    "method": {"name": "simclr"},
    "augment": {"preset": "digits"},
    "trainer": {"max_epochs": 3},
}
BAD_STEP = 7  # epoch 1, batch 2; the last checkpoint is the end of epoch 0 (step 5)


@pytest.fixture
def nan_loss_at_step(monkeypatch):
    step_fn = SimCLR.training_step

    def bad(self, views):
        out = step_fn(self, views)
        if self.step == BAD_STEP:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", bad)


@pytest.fixture
def nan_grad_at_step(monkeypatch):
    step_fn = SimCLR.training_step

    def bad(self, views):
        out = step_fn(self, views)
        if self.step == BAD_STEP:  # the loss stays finite; one weight's gradient does not
            w = next(self.encoder.parameters())
            handle = w.register_hook(lambda g: torch.full_like(g, float("inf")))
            self._bad_hook = handle
        elif getattr(self, "_bad_hook", None) is not None:
            self._bad_hook.remove()
        return out

    monkeypatch.setattr(SimCLR, "training_step", bad)


def _assert_last_checkpoint_good(run_dir: Path) -> None:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_nan_loss_stops_the_run_naming_the_step(tmp_path: Path, quiet, nan_loss_at_step):
    with pytest.raises(
        NonFiniteError,
        match=rf"non-finite loss \(nan\) at step {BAD_STEP} \(epoch 1, batch 2\).*last good checkpoint .*last.ckpt "
        r"\(step 5\)",
    ) as e:
        pretrain(RECIPE, quiet)
    assert e.value.step == BAD_STEP
    _assert_last_checkpoint_good(tmp_path / "runs" / "nf")


def test_nonfinite_gradient_stops_the_run(tmp_path: Path, quiet, nan_grad_at_step):
    with pytest.raises(NonFiniteError, match=rf"non-finite gradients \(norm inf\) at step {BAD_STEP}.*the loss was \d"):
        pretrain(RECIPE, quiet)
    _assert_last_checkpoint_good(tmp_path / "runs" / "nf")


def test_cli_prints_one_line_and_exits_3(tmp_path: Path, quiet, nan_loss_at_step, capsys):
    import yaml

    recipe = tmp_path / "nf.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert main(["pretrain", str(recipe), *quiet]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "ssl-transfer: training stopped: non-finite loss (nan) at step 7"
    ) and "Traceback" not in "\n".join(err)


def test_check_can_be_switched_off(tmp_path: Path, quiet, nan_grad_at_step):
    res = pretrain(RECIPE, [*quiet, "trainer.stop_on_nonfinite=false"])
    ckpt = torch.load(res.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 15  # the run went on (and its weights are now inf: what the check prevents)
    assert not all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
