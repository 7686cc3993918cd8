"""Losses under DDP: 2 gloo ranks holding half a batch each must give the loss and gradients of one process
holding the global batch (the check lightly uses for its gather_distributed losses, PRs #1531 and #1980)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ssl_transfer.methods import build_method
from ssl_transfer.methods.barlowtwins import BarlowTwinsConfig
from ssl_transfer.methods.base import persistent_memory_bank
from ssl_transfer.methods.dino import DINOConfig
from ssl_transfer.methods.mocov3 import mocov3_infonce
from ssl_transfer.methods.nnclr import NNCLRConfig, nearest_neighbours
from ssl_transfer.methods.siamese import margin_contrastive_loss, triplet_loss
from ssl_transfer.methods.simclr import SimCLRConfig
from ssl_transfer.methods.swav import SwAVConfig
from ssl_transfer.methods.vicreg import VICRegConfig

B, D_IN, D_OUT, WORLD = 8, 6, 5, 2
LOSSES = ["simclr", "barlowtwins", "vicreg", "siamese", "triplet", "mocov3", "nnclr", "swav", "dino"]
DINO_CENTER: list[torch.Tensor] = []  # the DINO criterion of the last loss_fn("dino"), for its centre
SUPPORT = 12  # NNCLR support-set rows


class _Id(nn.Module):
    embed_dim = D_OUT

    def forward(self, x):
        return x


def loss_fn(name: str):
    """The exact criterion each method uses, applied to projections (B, D_OUT)."""
    if name == "siamese":
        return lambda a, b: margin_contrastive_loss(
            nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1), 1.2
        )
    if name == "triplet":
        return lambda a, b: triplet_loss(
            nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1), 0.5, "hard"
        )
    if name == "mocov3":
        return lambda q, k: mocov3_infonce(q, k, 0.2)
    if name == "nnclr":  # the neighbour of one view's projection (a support set every rank shares) vs the other's
        support = torch.randn(SUPPORT, D_OUT, generator=torch.Generator().manual_seed(1))
        nt_xent = build_method(NNCLRConfig(), _Id(), (D_OUT, 1, 1)).criterion
        return lambda a, b: nt_xent(nearest_neighbours(a.detach(), support), b)
    if name == "swav":  # Sinkhorn codes over the global batch (a, b: cosine prototype scores of the two views)
        swav = build_method(SwAVConfig(), _Id(), (D_OUT, 1, 1)).criterion
        return lambda a, b: swav([nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)], []).squeeze()
    if name == "dino":  # teacher = student outputs here; the centre update averages the teacher over all ranks
        dino = build_method(DINOConfig(output_dim=D_OUT), _Id(), (D_OUT, 1, 1)).criterion
        DINO_CENTER[:] = [dino.center]
        return lambda a, b: dino([a.detach(), b.detach()], [a, b])
    cfg = {"simclr": SimCLRConfig(), "barlowtwins": BarlowTwinsConfig(), "vicreg": VICRegConfig()}[name]
    return build_method(cfg, _Id(), (D_OUT, 1, 1)).criterion


def make_inputs() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(D_IN, D_OUT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(D_OUT, D_IN, generator=g))
        lin.bias.copy_(torch.randn(D_OUT, generator=g))
    return lin, torch.randn(B, D_IN, generator=g), torch.randn(B, D_IN, generator=g) + 0.3


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name in LOSSES:
            lin, x0, x1 = make_inputs()
            model = DDP(lin)
            half = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
            loss = loss_fn(name)(model(x0[half]), model(x1[half]))
            loss.backward()  # DDP averages parameter gradients over ranks
            results[name] = (loss.detach(), lin.weight.grad.clone(), lin.bias.grad.clone())
        results["dino_center"] = DINO_CENTER[0].clone()
        bank = persistent_memory_bank(SUPPORT, D_IN)  # queue / support-set update: every rank adds the global batch
        x0 = make_inputs()[1]
        bank(x0[rank * B // WORLD : (rank + 1) * B // WORLD], update=True)
        results["bank"] = (bank.bank.clone(), bank.bank_ptr.clone())
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(init_file, tmp), nprocs=WORLD, join=True)
        yield [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_gathered_loss_and_gradients_match_global_batch(ddp_results, name):
    lin, x0, x1 = make_inputs()
    global_loss = loss_fn(name)(lin(x0), lin(x1))
    global_loss.backward()
    rank_losses = torch.stack([r[name][0] for r in ddp_results])
    assert torch.allclose(rank_losses.mean(), global_loss.detach(), rtol=1e-5, atol=1e-6), (rank_losses, global_loss)
    for r in ddp_results:  # after DDP's all-reduce every rank holds the same, global, gradient
        assert torch.allclose(r[name][1], lin.weight.grad, rtol=1e-4, atol=1e-5), name
        assert torch.allclose(r[name][2], lin.bias.grad, rtol=1e-4, atol=1e-5), name


@pytest.mark.slow
def test_memory_bank_update_gathers_the_global_batch(ddp_results):
    torch.manual_seed(0)
    bank = persistent_memory_bank(SUPPORT, D_IN)
    x0 = make_inputs()[1]
    bank(x0, update=True)
    for r in ddp_results:
        rank_bank, ptr = r["bank"]
        assert int(ptr) == int(bank.bank_ptr) == B
        assert torch.equal(rank_bank[:B], bank.bank[:B])  # global order: rank 0's rows, then rank 1's


@pytest.mark.slow
def test_dino_centre_is_the_global_batch_mean(ddp_results):
    lin, x0, x1 = make_inputs()
    loss_fn("dino")(lin(x0), lin(x1))
    for r in ddp_results:
        assert torch.allclose(r["dino_center"], DINO_CENTER[0], atol=1e-6)
