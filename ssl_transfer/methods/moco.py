"""MoCo v2 (He et al. 2020; Chen et al. 2020b): a query encoder, a momentum key encoder and a queue of keys.

The queue is lightly's ``MemoryBankModule``, with its buffers made persistent so that it is saved in checkpoints
and restored on resume. The loss is symmetrised over the two views by default (as in lightly's MoCo examples and
solo-learn's ``mocov2plus``; the paper uses one direction): both directions are scored against the same queue
state, and the step's keys are enqueued once, after both (an enqueue between the two directions would put each
query's own positive key among its negatives). Departures: momentum 0.99 and queue 4096 suit short runs on small
data (paper: 0.999 and 65536).

Shuffle-BN on one device, as in the MoCo authors' CIFAR-10 demo (``SplitBatchNorm``, 8 splits): the paper shuffles
the key batch across GPUs so that a query and its positive key never share BatchNorm statistics; without it the
network can tell the positive (same batch statistics as the query) from the queue's negatives (other batches) and
learns less. Here each rank runs its queries in ``bn_splits`` sub-batches (each with its own statistics) and its keys
in as many sub-batches of a shuffled batch, which gives the same statistics as split BatchNorm layers without
changing the backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import MomentumMethod, ProjectedConfig, in_fp32, momentum_copy, persistent_memory_bank
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME

MIN_SPLIT = 16  # images per BatchNorm sub-batch at least (the authors' demo: 64 of a 512 batch)


class MoCoConfig(ProjectedConfig):
    name: Literal["moco"] = Field("moco", description=METHOD_NAME)
    temperature: Annotated[float, Field(gt=0)] = Field(0.2, description="InfoNCE temperature (MoCo v2: 0.2)")
    queue_size: Annotated[int, Field(gt=0)] = Field(4096, description="keys kept as negatives (oldest replaced first)")
    momentum: Annotated[float, Field(ge=0, le=1)] = Field(
        0.99, description="start of the cosine momentum schedule to 1.0"
    )
    symmetric: bool = Field(
        True, description="both views as queries (keys enqueued once per step); false: the paper's one direction"
    )
    bn_splits: Annotated[int, Field(ge=1)] = Field(
        8,
        description="shuffle-BN on one device: queries in this many sub-batches (own BatchNorm statistics each), keys "
        f"in as many sub-batches of a shuffled batch; at least {MIN_SPLIT} images per sub-batch; 1 = off",
    )


def queue_infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE: each query (B, D) against its key (B, D) as the positive and every queue row (K, D) as a
    negative; rows are L2-normalised here (the queue's already are). Returns the mean cross-entropy."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class KeyQueue(nn.Module):
    """The MoCo loss with its queue of past keys (lightly's MemoryBankModule, gathered across DDP ranks)."""

    def __init__(self, size: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.memory_bank = persistent_memory_bank(size, dim)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """Loss of queries (B, D) against keys (B, D) and the queue as it stands (not updated here)."""
        return queue_infonce(q, k, self.memory_bank.bank.detach().clone(), self.temperature)  # enqueue writes in place

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Add keys (N, D), L2-normalised, replacing the oldest."""
        self.memory_bank(F.normalize(keys.float(), dim=1), update=True)


@METHODS.register("moco")
class MoCo(MomentumMethod):
    """Match each query to its momentum-encoded key against a queue of past keys."""

    config_cls = MoCoConfig
    num_views = 2
    cfg: MoCoConfig

    def __init__(self, cfg: MoCoConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = MoCoProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.encoder_momentum = momentum_copy(self.encoder)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = KeyQueue(cfg.queue_size, cfg.proj_out_dim, cfg.temperature)

    @property
    def queue(self) -> Tensor:
        """The key queue, (queue_size, proj_out_dim), unit rows."""
        return self.criterion.memory_bank.bank

    def query(self, x: Tensor) -> Tensor:
        return self.projection_head(self.encoder(x))

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.encoder_momentum(x))

    def bn_splits_for(self, batch: int) -> int:
        """Sub-batches a batch of ``batch`` images runs in: ``bn_splits``, fewer when they would be too small."""
        return min(self.cfg.bn_splits, batch // MIN_SPLIT)

    def in_splits(self, fn: Callable[[Tensor], Tensor], x: Tensor, shuffle: bool) -> Tensor:
        """``fn`` over ``x`` (B, C, H, W) in ``bn_splits`` sub-batches (each its own BatchNorm statistics), of a
        shuffled batch when ``shuffle``; rows come back in ``x``'s order: (B, D)."""
        n = self.bn_splits_for(len(x))
        if n <= 1:
            return fn(x)
        if not shuffle:
            return torch.cat([fn(c) for c in x.chunk(n)])
        perm = torch.randperm(len(x), device=x.device)
        return torch.cat([fn(c) for c in x[perm].chunk(n)])[torch.argsort(perm)]

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        x0, x1 = views
        if not self.cfg.symmetric:
            k1 = self.in_splits(self.key, x1, shuffle=True)
            loss = in_fp32(self.criterion, self.in_splits(self.query, x0, shuffle=False), k1)
            keys = k1
        elif self.bn_splits_for(len(x0)) > 1:
            q0, q1 = (self.in_splits(self.query, v, shuffle=False) for v in views)
            k0, k1 = (self.in_splits(self.key, v, shuffle=True) for v in views)
        else:
            q0, q1 = self.forward_views(self.query, views)
            k0, k1 = self.forward_views(self.key, views)
        if self.cfg.symmetric:
            loss = 0.5 * (in_fp32(self.criterion, q0, k1) + in_fp32(self.criterion, q1, k0))
            keys = torch.cat([k1, k0])
        if self.training:
            self.criterion.enqueue(keys)
        return {"loss": loss}
