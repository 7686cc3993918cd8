"""DINO: its loss against the paper's algorithm, the centre's update and checkpointing, the last-layer freeze and
the weight-decay schedule."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_transfer.methods import build_method
from ssl_transfer.methods.dino import DINOConfig

from . import references as ref
from .test_losses import Identity


def _dino(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = DINOConfig(proj_hidden_dim=16, bottleneck_dim=8, output_dim=32, **kw)
    return build_method(cfg, Identity(6), (6, 1, 1))


def test_loss_is_the_papers_and_the_centre_moves_with_the_teacher():
    m = _dino(center_momentum=0.9, student_temp=0.1, teacher_temp=0.04)
    m.num_local_views = 2
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(8, 6, generator=g) for _ in range(4)]  # 2 global, then 2 local
    m.criterion.center.copy_(torch.randn(1, 1, 32, generator=g) * 0.1)
    center = m.criterion.center.clone()
    out = m.training_step(views)
    with torch.no_grad():
        teacher = [m.projection_head_momentum(v) for v in views[:2]]
        student = [m.projection_head(v) for v in views]
    expected = ref.dino_loss(teacher, student, center.view(1, -1), 0.04, 0.1)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-4)
    batch_center = torch.cat(teacher).mean(0)
    assert torch.allclose(m.criterion.center.view(-1), 0.9 * center.view(-1) + 0.1 * batch_center, atol=1e-6)
    assert "criterion.center" in m.state_dict()  # restored on resume


def test_teacher_starts_as_the_student_and_temperature_warms_up_per_epoch():
    m = _dino(warmup_teacher_temp=0.02, teacher_temp=0.06, teacher_temp_warmup_epochs=4)
    for p, q in zip(m.projection_head.parameters(), m.projection_head_momentum.parameters()):
        assert torch.equal(p, q) and not q.requires_grad
    temps = []
    for step in (0, 9, 10, 25, 40, 99):
        m.set_progress(step, 100, steps_per_epoch=10)
        temps.append(m.teacher_temp())
    assert temps == pytest.approx([0.02, 0.02, 0.03, 0.04, 0.06, 0.06])


def test_last_layer_frozen_in_the_first_epoch_and_weight_decay_schedule():
    m = _dino(freeze_last_layer_epochs=1, weight_decay_end=0.4)
    views = [torch.randn(8, 6), torch.randn(8, 6)]
    for step, frozen in ((3, True), (10, False)):
        m.zero_grad()
        m.set_progress(step, 100, steps_per_epoch=10)
        m.training_step(views)["loss"].backward()
        m.before_optimizer_step()
        grads = [p.grad for p in m.projection_head.last_layer.parameters() if p.requires_grad]
        assert grads and all((g is None) == frozen for g in grads), step
        assert m.projection_head.layers[0].weight.grad is not None
    m.set_progress(0, 100)
    assert m.weight_decay(0.04) == pytest.approx(0.04)
    m.set_progress(100, 100)
    assert m.weight_decay(0.04) == pytest.approx(0.4)
    m.set_progress(50, 100)  # lightly's cosine_schedule: step / (total - 1) of the way
    assert m.weight_decay(0.04) == pytest.approx(0.4 - 0.36 * (math.cos(math.pi * 50 / 99) + 1) / 2)
