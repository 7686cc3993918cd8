"""Generated from the method registry: every method optimises on a fixed batch and has a usable encoder."""

from __future__ import annotations

import pytest
import torch

from ssl_transfer.backbones import build_backbone
from ssl_transfer.data.augment_spec import AugmentConfig
from ssl_transfer.data.views import build_augment
from ssl_transfer.methods import METHODS, build_method

SHAPE = (1, 8, 8)


def tiny_backbone(name: str) -> torch.nn.Module:
    """cnn_tiny, or a 2-block ViT with 2-pixel patches for the methods that need a ViT."""
    if METHODS.get(name).needs_vit:
        return build_backbone("vit_tiny_patch16_224", SHAPE, kwargs={"patch_size": 2, "depth": 2})
    return build_backbone("cnn_tiny", SHAPE)


def fixed_views(n_views: int, n: int = 64) -> list[torch.Tensor]:
    """``n_views`` fixed augmentations of the same n real digits, normalised."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16.0
    aug = build_augment(AugmentConfig(preset="digits"), 1, SHAPE[1:])
    torch.manual_seed(0)
    views = [aug(x) if n_views > 1 else x for _ in range(n_views)]
    return [(v - 0.3) / 0.37 for v in views]


def method_config(name: str, request: pytest.FixtureRequest, **kw):
    """The method's default config; distill gets the session's small teacher run."""
    if name == "distill":
        kw["teacher"] = str(request.getfixturevalue("teacher_run"))
    return METHODS.get(name).config_cls(**kw)


@pytest.mark.parametrize("name", METHODS.names())
def test_loss_falls_over_20_steps_on_a_fixed_batch(name, request):
    torch.manual_seed(0)
    cfg = method_config(name, request, **({"queue_size": 256} if name == "moco" else {}))
    m = build_method(cfg, tiny_backbone(name), SHAPE, [0.3], [0.37])
    views = fixed_views(m.num_views)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    hold_queue = None
    if name == "moco":
        # A fresh queue holds random vectors (easy negatives) that real keys replace, so the loss rises as it
        # fills. Hold the negatives fixed instead: keys of 256 other digits, restored before every step.
        other = fixed_views(1, 320)[0][64:]
        m.criterion.memory_bank.bank.copy_(torch.nn.functional.normalize(m.key(other), dim=1)[: len(m.queue)])
        hold_queue = (m.queue.clone(), m.criterion.memory_bank.bank_ptr.clone())
    hold_center = None
    if name == "dino":
        # The centre follows the teacher's mean output (DINO's guard against collapse), which flattens the targets
        # and raises the cross-entropy as it moves; held fixed, the student's loss must fall.
        hold_center = m.criterion.center.clone()
    losses = []
    for step in range(20):
        m.set_progress(step, 20)
        if hold_center is not None:
            m.criterion.center.copy_(hold_center)
        if hold_queue is not None:
            m.criterion.memory_bank.bank.copy_(hold_queue[0])
            m.criterion.memory_bank.bank_ptr.copy_(hold_queue[1])
        out = m.training_step(views)
        opt.zero_grad()
        out["loss"].backward()
        m.before_optimizer_step()
        opt.step()
        m.after_optimizer_step()
        losses.append(float(out["loss"].detach()))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.05 * abs(first), f"{name}: {losses}"
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("name", METHODS.names())
def test_encoder_embeds_and_config_round_trips(name, request):
    cfg_cls = METHODS.get(name).config_cls
    cfg = method_config(name, request)
    assert cfg.name == name and cfg_cls.model_validate(cfg.model_dump()) == cfg
    m = build_method(cfg, tiny_backbone(name), SHAPE)
    head = m.export_head()
    z = m.encoder(torch.randn(4, *SHAPE))
    if head is not None:
        z = head(z)
    assert z.shape[0] == 4 and z.ndim == 2
    for grid in m.visualize(torch.randn(3, *SHAPE)).values():
        assert grid.ndim == 4 and grid.shape[1:] == SHAPE


@pytest.mark.parametrize("name", ["moco", "byol"])
def test_momentum_encoders_follow_the_online_encoder(name):
    torch.manual_seed(0)
    m = build_method(METHODS.get(name).config_cls(momentum=0.5), build_backbone("cnn_tiny", SHAPE), SHAPE)
    assert not any(p.requires_grad for p in m.encoder_momentum.parameters())
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.encoder_momentum.parameters()]
    m.set_progress(0, 100)
    m.after_optimizer_step()  # momentum 0.5 at step 0: halfway to the online weights
    for b, p, q in zip(before, m.encoder_momentum.parameters(), m.encoder.parameters()):
        assert torch.allclose(p, 0.5 * b + 0.5 * q, atol=1e-6)
