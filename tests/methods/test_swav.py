"""SwAV: Sinkhorn-Knopp codes, the swapped-prediction loss against the paper's, prototype normalisation and
freezing, and the optional queue."""

from __future__ import annotations

import pytest
import torch
from lightly.loss.swav_loss import sinkhorn

from ssl_transfer.methods import build_method
from ssl_transfer.methods.swav import SwAVConfig

from . import references as ref
from .test_losses import Identity


def _swav(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(SwAVConfig(proj_hidden_dim=16, proj_out_dim=8, n_prototypes=12, **kw), Identity(6), (6, 1, 1))


def test_sinkhorn_codes_are_doubly_stochastic():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(64, 8, generator=g), dim=1)
    protos = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    cfg = SwAVConfig()
    q = sinkhorn(z @ protos.T, iterations=cfg.sinkhorn_iterations, epsilon=cfg.sinkhorn_epsilon)
    assert torch.allclose(q, ref.sinkhorn_knopp(z @ protos.T, cfg.sinkhorn_iterations, cfg.sinkhorn_epsilon))
    # the paper's 3 iterations approximate the transport polytope; run to convergence, the codes are on it:
    q = sinkhorn(z @ protos.T, iterations=200, epsilon=cfg.sinkhorn_epsilon)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-3)  # each image: one unit of assignment
    assert torch.allclose(q.sum(0), torch.full((16,), 64 / 16), rtol=1e-3)  # each prototype: an equal share


def test_loss_is_the_papers_swapped_prediction_with_local_views():
    m = _swav()
    m.num_local_views = 2
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 6, generator=g) for _ in range(4)]
    out = m.training_step(views)
    with torch.no_grad():
        w = m.prototypes.heads[0].weight
        assert torch.allclose(w.norm(dim=1), torch.ones(12), atol=1e-5)  # normalised before the step
        z = [torch.nn.functional.normalize(m.projection_head(v), dim=1) for v in views]
        scores = [m.prototypes(x) for x in z]
    expected = ref.swav_loss(scores, 2, 0.1, 3, 0.05)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-4)


def test_prototypes_frozen_early_and_queue_joins_after_its_start():
    m = _swav(freeze_prototypes_epochs=1, queue_size=32, queue_start_epochs=1)
    views = [torch.randn(16, 6), torch.randn(16, 6)]
    m.set_progress(3, 100, steps_per_epoch=10)
    m.training_step(views)["loss"].backward()
    m.before_optimizer_step()
    assert all(p.grad is None for p in m.prototypes.parameters())
    assert m.projection_head.layers[0].weight.grad is not None
    assert int(m.queues[0].bank_ptr) == 16  # the queue fills from the start
    state = [(q.bank.clone(), q.bank_ptr.clone()) for q in m.queues]
    other = [torch.randn(16, 6), torch.randn(16, 6)]
    before = m.training_step(other)["loss"]  # epoch 0.3: the queue stays out of the Sinkhorn
    for q, (bank, ptr) in zip(m.queues, state):
        q.bank.copy_(bank), q.bank_ptr.copy_(ptr)
    m.set_progress(10, 100, steps_per_epoch=10)
    after = m.training_step(other)["loss"]  # epoch 1: the same queue joins it, so the codes and the loss change
    assert float(before) != pytest.approx(float(after), rel=1e-3)
    assert {"queues.0.bank", "queues.1.bank"} <= set(m.state_dict())
