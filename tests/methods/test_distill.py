"""Distillation: the target is the teacher's own embedding of each view (through its preprocessing), the teacher
stays frozen and in eval mode, and a teacher that cannot be read is one line before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssl_transfer.backbones import build_backbone
from ssl_transfer.errors import UserError
from ssl_transfer.export import load_encoder
from ssl_transfer.methods import build_method
from ssl_transfer.methods.distill import DistillConfig, similarity_kl


def test_target_is_the_teachers_embedding_of_the_view_and_the_loss_is_2_minus_2_cos(teacher_run: Path):
    shape, mean, std = (3, 16, 16), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]  # another size and channels than the teacher's
    torch.manual_seed(0)
    cfg = DistillConfig(teacher=str(teacher_run), loss="cosine", mixup=False)
    m = build_method(cfg, build_backbone("cnn_tiny", shape), shape, mean, std)
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


def test_similarity_loss_is_the_kl_between_softmaxes_over_the_queue_and_the_queue_persists(teacher_run: Path):
    shape = (1, 8, 8)
    torch.manual_seed(0)
    cfg = DistillConfig(teacher=str(teacher_run), queue_size=16, temperature=0.1, mixup=False)
    m = build_method(cfg, build_backbone("cnn_tiny", shape), shape)
    m.train()
    views = torch.randn(4, *shape)
    past = m.queue.bank.clone()  # (16, D) unit rows before the step
    loss = m.training_step([views])["loss"]
    t = F.normalize(m.teacher_embedding(views), dim=1)
    s = F.normalize(m.projection_head(m.encoder(views)), dim=1)
    keys = torch.cat([t, past])  # this batch's teacher embeddings, then the queue as it was
    p_t, p_s = (torch.softmax(z @ keys.T / 0.1, dim=1) for z in (t, s))
    kl = (p_t * (p_t.log() - p_s.log())).sum(dim=1).mean()
    assert float(loss) == pytest.approx(float(kl), rel=1e-4)
    assert torch.allclose(m.queue.bank[:4], t)  # the batch entered the queue once
    assert "queue.bank" in m.state_dict() and "queue.bank_ptr" in m.state_dict()  # resumes with its queue


def test_similarity_loss_ignores_a_shared_offset_of_the_teacher_embeddings():
    """Unlike a cosine to the raw embedding, the target distribution depends on how the teacher tells images apart,
    not on their common direction: a student that matches every relative similarity has zero loss."""
    torch.manual_seed(0)
    t = F.normalize(torch.randn(8, 5), dim=1)
    keys = torch.cat([t, F.normalize(torch.randn(20, 5), dim=1)])
    assert float(similarity_kl(t * 3.0, t, keys, 0.07)) == pytest.approx(0.0, abs=1e-6)  # only direction counts
    assert float(similarity_kl(torch.randn(8, 5), t, keys, 0.07)) > 0.1


def test_distillation_loss_falls_on_a_fixed_batch(teacher_run: Path):
    shape = (1, 8, 8)
    torch.manual_seed(0)
    m = build_method(DistillConfig(teacher=str(teacher_run), queue_size=32), build_backbone("cnn_tiny", shape), shape)
    m.train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    views = torch.randn(16, *shape)
    losses = []
    for _ in range(20):
        loss = m.training_step([views])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_an_unreadable_teacher_is_one_line(tmp_path: Path):
    with pytest.raises(UserError, match="no encoder at"):
        build_method(
            DistillConfig(teacher=str(tmp_path / "nope.safetensors")), build_backbone("cnn_tiny", (1, 8, 8)), (1, 8, 8)
        )


def test_a_distillation_run_does_not_warn_about_its_frozen_teacher(teacher_run: Path, tmp_path: Path, quiet):
    """Lightning warns about modules in eval mode at the start of training; the teacher is frozen by design, so
    that warning is not shown for it (it still is for any other module left in eval)."""
    import warnings

    from ssl_transfer.train import pretrain

    recipe = {
        "name": "student",
        "output_dir": str(tmp_path),
        "data": {"source": "digits", "limit_train": 64, "batch_size": 32},
        "backbone": {"name": "cnn_tiny"},
        "method": {"name": "distill", "teacher": str(teacher_run), "queue_size": 64},
        "trainer": {"max_epochs": 1, "progress_bar": False},
        "logging": {"wandb": "disabled", "plots": False},
        "monitor": {"enabled": False},
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain(recipe, quiet)
    assert not [w for w in caught if "eval mode" in str(w.message)]
