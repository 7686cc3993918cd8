"""Distillation: the target is the teacher's own embedding of each view (through its preprocessing), the teacher
stays frozen and in eval mode, and a teacher that cannot be read is one line before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_transfer.backbones import build_backbone
from ssl_transfer.errors import UserError
from ssl_transfer.export import load_encoder
from ssl_transfer.methods import build_method
from ssl_transfer.methods.distill import DistillConfig


def test_target_is_the_teachers_embedding_of_the_view_and_the_loss_is_2_minus_2_cos(teacher_run: Path):
    shape, mean, std = (3, 16, 16), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]  # another size and channels than the teacher's
    torch.manual_seed(0)
    m = build_method(DistillConfig(teacher=str(teacher_run)), build_backbone("cnn_tiny", shape), shape, mean, std)
    x01 = torch.rand(6, *shape)
    views = (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    expected = load_encoder(teacher_run).embed(x01)  # the teacher's own path: grey conversion, resize, its stats
    assert torch.allclose(m.teacher_embedding(views), expected, atol=1e-5)
    m.train()
    assert not m.teacher.training and not any(p.requires_grad for p in m.teacher.parameters())
    loss = m.training_step([views])["loss"]
    pred = m.projection_head(m.encoder(views))
    cos = torch.nn.functional.cosine_similarity(pred, expected, dim=1).mean()
    assert float(loss) == pytest.approx(float(2 - 2 * cos), rel=1e-4)
    loss.backward()
    assert all(p.grad is None for p in m.teacher.parameters())


def test_an_unreadable_teacher_is_one_line(tmp_path: Path):
    with pytest.raises(UserError, match="no encoder at"):
        build_method(
            DistillConfig(teacher=str(tmp_path / "nope.safetensors")), build_backbone("cnn_tiny", (1, 8, 8)), (1, 8, 8)
        )
