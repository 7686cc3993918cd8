"""Each method's loss against a plain reference computation (tests/methods/references.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_transfer.methods import build_method
from ssl_transfer.methods.barlowtwins import BarlowTwinsConfig
from ssl_transfer.methods.byol import BYOLConfig
from ssl_transfer.methods.moco import MoCoConfig
from ssl_transfer.methods.mocov3 import MoCoV3Config, mocov3_infonce
from ssl_transfer.methods.nnclr import NNCLRConfig, nearest_neighbours
from ssl_transfer.methods.siamese import SiameseConfig, TripletConfig, margin_contrastive_loss, triplet_loss
from ssl_transfer.methods.simclr import SimCLRConfig
from ssl_transfer.methods.simsiam import SimSiamConfig
from ssl_transfer.methods.vae import VAEConfig, kl_to_standard_normal, reparameterize
from ssl_transfer.methods.vicreg import VICRegConfig

from . import references as ref


class Identity(nn.Module):
    """A stand-in encoder that passes D-dim inputs through, so heads and losses can be checked directly."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.embed_dim = d
        self.p = nn.Parameter(torch.zeros(()))  # methods copy/optimise encoders; keep one parameter

    def forward(self, x):
        return x.flatten(1) + 0 * self.p


def z_pair(b=8, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def test_simclr_criterion_is_nt_xent():
    z0, z1 = z_pair()
    m = build_method(SimCLRConfig(temperature=0.3), Identity(6), (6, 1, 1))
    assert float(m.criterion(z0, z1)) == pytest.approx(float(ref.nt_xent(z0, z1, 0.3)), rel=1e-5)


def test_moco_criterion_is_info_nce_against_the_queue():
    q, k = z_pair(4, 5)
    m = build_method(MoCoConfig(queue_size=7, proj_out_dim=5, temperature=0.2), Identity(5), (5, 1, 1))
    queue = m.queue.clone()
    assert queue.shape == (7, 5)
    expected = ref.info_nce_with_queue(q, k, queue.T, 0.2)
    got = m.criterion(q.requires_grad_(), k)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    assert torch.equal(m.queue, queue)  # scoring leaves the queue alone
    m.criterion.enqueue(k)
    ks = torch.nn.functional.normalize(k, dim=1)
    assert torch.allclose(m.queue[:4], ks)  # keys enqueued after use


def test_moco_queue_is_in_the_state_dict_and_restored():
    m = build_method(MoCoConfig(queue_size=16, proj_out_dim=5), Identity(5), (5, 1, 1))
    m.criterion.enqueue(torch.randn(4, 5))
    sd = m.state_dict()
    assert "criterion.memory_bank.bank" in sd and int(sd["criterion.memory_bank.bank_ptr"]) == 4
    fresh = build_method(MoCoConfig(queue_size=16, proj_out_dim=5), Identity(5), (5, 1, 1))
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(fresh.queue, m.queue) and int(fresh.criterion.memory_bank.bank_ptr) == 4


def test_mocov3_loss_is_its_papers_contrastive_loss_over_keys():
    q, k = z_pair(6, 5)
    got = mocov3_infonce(q, k, 0.2)
    assert float(got) == pytest.approx(float(ref.mocov3_contrastive(q, k, 0.2)), rel=1e-5)
    qg = q.clone().requires_grad_()
    kg = k.clone().requires_grad_()
    mocov3_infonce(qg, kg, 0.2).backward()
    assert qg.grad is not None and kg.grad is None  # keys come from the momentum encoder: no gradient


def test_mocov3_step_is_symmetric_over_views_against_momentum_keys():
    torch.manual_seed(0)
    m = build_method(MoCoV3Config(proj_out_dim=5, proj_hidden_dim=7, pred_hidden_dim=7), Identity(6), (6, 1, 1))
    x0, x1 = z_pair(8, 6)
    out = m.training_step([x0, x1])
    q0, q1 = (m.prediction_head(m.projection_head(x)) for x in (x0, x1))
    k0, k1 = (m.projection_head_momentum(x) for x in (x0, x1))
    expected = ref.mocov3_contrastive(q0, k1, 0.2) + ref.mocov3_contrastive(q1, k0, 0.2)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-4)


def test_nnclr_neighbours_loss_and_support_set():
    torch.manual_seed(0)
    cfg = NNCLRConfig(support_size=16, proj_out_dim=5, proj_hidden_dim=7, pred_hidden_dim=7)
    m = build_method(cfg, Identity(6), (6, 1, 1))
    z, support = z_pair(8, 5)[0], torch.randn(16, 5)
    assert torch.equal(nearest_neighbours(z, support), ref.nearest_by_cosine(z, support))
    m.support_set.bank.copy_(support)
    x0, x1 = z_pair(8, 6, seed=1)
    out = m.training_step([x0, x1])
    z0, z1 = (m.projection_head(x) for x in (x0, x1))
    p0, p1 = m.prediction_head(z0), m.prediction_head(z1)
    n0, n1 = ref.nearest_by_cosine(z0.detach(), support), ref.nearest_by_cosine(z1.detach(), support)
    expected = 0.5 * (ref.nt_xent(n0, p1, 0.1) + ref.nt_xent(n1, p0, 0.1))
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-4)
    # the step's first-view projections are added after both lookups, oldest first, and kept in checkpoints
    assert torch.allclose(m.support_set.bank[:8], z0.detach(), atol=1e-6)
    assert torch.equal(m.support_set.bank[8:], support[8:])
    sd = m.state_dict()
    assert int(sd["support_set.bank_ptr"]) == 8
    fresh = build_method(cfg, Identity(6), (6, 1, 1))
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(fresh.support_set.bank, m.support_set.bank)


@pytest.mark.parametrize("cfg", [BYOLConfig(), SimSiamConfig()])
def test_byol_and_simsiam_criterion_is_negative_cosine(cfg):
    p, z = z_pair()
    m = build_method(cfg, Identity(6), (6, 1, 1))
    assert float(m.criterion(p, z)) == pytest.approx(float(ref.neg_cosine(p, z)), rel=1e-5)


def test_barlow_twins_criterion():
    z0, z1 = z_pair(16, 5)
    m = build_method(BarlowTwinsConfig(lambda_param=0.01), Identity(5), (5, 1, 1))
    assert float(m.criterion(z0, z1)) == pytest.approx(float(ref.barlow_twins(z0, z1, 0.01)), rel=1e-4)


def test_vicreg_criterion():
    z0, z1 = z_pair(16, 5)
    z0 = z0 * 0.5  # some dimensions below unit std so the variance hinge is active
    m = build_method(VICRegConfig(lambda_param=25, mu_param=25, nu_param=1), Identity(5), (5, 1, 1))
    assert float(m.criterion(z0, z1)) == pytest.approx(float(ref.vicreg(z0, z1, 25, 25, 1)), rel=1e-4)


def test_margin_contrastive_loss():
    p0, p1 = z_pair()  # projections: the loss normalises them
    z0, z1 = (torch.nn.functional.normalize(z, dim=1) for z in (p0, p1))
    assert float(margin_contrastive_loss(p0, p1, 1.2)) == pytest.approx(
        float(ref.margin_contrastive(z0, z1, 1.2)), rel=1e-5
    )


def test_triplet_loss_batch_hard_and_random():
    p0, p1 = z_pair()
    z0, z1 = (torch.nn.functional.normalize(z, dim=1) for z in (p0, p1))
    assert float(triplet_loss(p0, p1, 0.5, "hard")) == pytest.approx(
        float(ref.triplet_batch_hard(z0, z1, 0.5)), rel=1e-5
    )
    # random mining never picks the positive and is bounded by the hardest choice
    assert 0 <= float(triplet_loss(p0, p1, 0.5, "random")) <= float(triplet_loss(p0, p1, 0.5, "hard")) + 1e-6


@pytest.mark.parametrize("cfg", [SiameseConfig(), TripletConfig()], ids=["siamese", "triplet"])
def test_margin_losses_run_head_and_loss_in_float32_under_bf16_autocast(cfg):
    """In bf16 the projection head cost siamese 2-3 kNN points at its parity budget (PROBES.md, stop 33); normalising
    bf16 projections moved distances near the margin by ~1e-2. Under bf16 autocast the step's loss must be the
    float32 loss of the float32 head applied to the encoder's features."""
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 16))
    enc.embed_dim = 16
    m = build_method(cfg, enc, (16, 1, 1)).eval()  # eval: BatchNorm gives the same outputs twice
    x0, x1 = torch.randn(32, 16, 1, 1), torch.randn(32, 16, 1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h0, h1 = m.encoder(x0), m.encoder(x1)
        torch.manual_seed(1)
        loss = m.training_step([x0, x1])["loss"]
    assert h0.dtype == torch.bfloat16  # the encoder does run in bf16 here
    p0, p1 = m.projection_head(h0.float()), m.projection_head(h1.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.projection_head(h0.float()).dtype == torch.bfloat16  # what autocast alone would have given
    if cfg.name == "siamese":
        expected = margin_contrastive_loss(p0, p1, cfg.margin)
    else:
        expected = 0.5 * (triplet_loss(p0, p1, 0.5, "hard") + triplet_loss(p1, p0, 0.5, "hard"))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-7)


def test_vae_kl_matches_monte_carlo_estimate():
    torch.manual_seed(0)
    mu = torch.randn(3, 4)
    logvar = torch.randn(3, 4) * 0.5
    closed = kl_to_standard_normal(mu, logvar).sum(1)
    n = 200_000
    z = reparameterize(mu.expand(n, 3, 4), logvar.expand(n, 3, 4))
    std = (0.5 * logvar).exp()
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0)
    assert torch.allclose(mc, closed, rtol=0.02, atol=0.02), (mc, closed)


def test_vae_reparameterisation_moments_and_gradients():
    mu = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    torch.manual_seed(0)
    z = reparameterize(mu.expand(100_000, 2), logvar.expand(100_000, 2))
    assert torch.allclose(z.mean(0), mu[0].detach(), atol=0.03) and torch.allclose(
        z.std(0), torch.tensor([1.0, 2.0]), atol=0.03
    )
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None


def test_vae_kl_schedules():
    m = build_method(VAEConfig(kl_schedule="linear", kl_warmup=0.5, beta=2.0), Identity(4), (4, 1, 1))
    got = []
    for step in (0, 25, 50, 100):
        m.set_progress(step, 100)
        got.append(m.kl_weight())
    assert got == pytest.approx([0.0, 1.0, 2.0, 2.0])
    c = build_method(VAEConfig(kl_schedule="cyclical", kl_cycles=2, kl_warmup=0.5), Identity(4), (4, 1, 1))
    w = []
    for step in (0, 12, 25, 40, 50, 62, 100):
        c.set_progress(step, 100)
        w.append(c.kl_weight())
    assert w == pytest.approx([0.0, 0.48, 1.0, 1.0, 0.0, 0.48, 1.0])


def test_vae_bernoulli_nll_is_bce_in_pixel_space():
    m = build_method(VAEConfig(likelihood="bernoulli"), Identity(4), (1, 2, 2), [0.5], [0.25])
    x01 = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    x = (x01 - 0.5) / 0.25
    logits = torch.tensor([[[[-1.0, 2.0], [0.0, 0.5]]]])
    p = torch.sigmoid(logits)
    expected = -(x01 * p.log() + (1 - x01) * (1 - p).log()).sum()
    assert float(m.recon_nll(x, logits)[0]) == pytest.approx(float(expected), rel=1e-5)
    g = build_method(VAEConfig(likelihood="gaussian", gaussian_sigma=0.1), Identity(4), (1, 2, 2), [0.5], [0.25])
    out = x + 0.4  # 0.4 normalised units = 0.1 pixel units = one sigma per pixel
    assert float(g.recon_nll(x, out)[0]) == pytest.approx(0.5 * 4, rel=1e-5)


def test_siamese_configs_have_sane_defaults():
    assert SiameseConfig().margin <= 2 and TripletConfig().mining == "hard"
