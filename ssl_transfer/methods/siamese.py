"""Siamese networks with margin losses: ``siamese`` (pairs, Hadsell et al. 2006) and ``triplet``
(Schroff et al. 2015; batch-hard mining from Hermans et al. 2017).

One shared-weight encoder + projection embeds every image; the losses put the embeddings on the unit sphere
themselves, in float32 (a bf16 unit vector moves distances near the margin by ~1e-2). A positive pair is two
augmentations of one image; negatives are the other images of the batch, gathered across DDP ranks with
gradients (lightly.utils.dist.gather).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.utils import dist
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PROJ_OUT


def global_negatives(z1: Tensor) -> tuple[Tensor, Tensor]:
    """(B, D) local -> (all views over ranks (B*W, D), mask (B, B*W) that is True where the pair is a negative)."""
    if dist.world_size() > 1:
        return torch.cat(dist.gather(z1), 0), ~dist.eye_rank(len(z1), device=z1.device)
    return z1, ~torch.eye(len(z1), dtype=torch.bool, device=z1.device)


def unit_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances (N, M) between unit vectors a (N, D) and b (M, D); safe gradients at 0."""
    sq = (2.0 - 2.0 * a @ b.T).clamp_min(0.0)
    return (sq + 1e-12).sqrt()


def margin_contrastive_loss(z0: Tensor, z1: Tensor, margin: float) -> Tensor:
    """Hadsell et al.: 1/2 d^2 for positives (z0[i], z1[i]); 1/2 max(0, margin - d)^2 for negatives (z0[i], z1[j!=i]).

    z0, z1: (B, D) projections, L2-normalised here. Each term is averaged over its pairs, so positives and negatives
    weigh alike.
    """
    z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    pos = (z0 - z1).pow(2).sum(dim=1)
    all_z1, neg_mask = global_negatives(z1)
    neg = unit_distance(z0, all_z1)[neg_mask]
    return 0.5 * pos.mean() + 0.5 * F.relu(margin - neg).pow(2).mean()


def triplet_loss(z0: Tensor, z1: Tensor, margin: float, mining: str) -> Tensor:
    """max(0, d(a, p) - d(a, n) + margin) with anchors z0, positives z1 and negatives among the other z1.

    z0, z1: (B, D) projections, L2-normalised here. ``mining``: ``hard`` takes the closest negative of each anchor,
    ``random`` a uniformly drawn one.
    """
    z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    all_z1, neg_mask = global_negatives(z1)
    d = unit_distance(z0, all_z1)
    if mining == "hard":
        j = d.masked_fill(~neg_mask, float("inf")).argmin(dim=1)
    else:
        j = torch.multinomial(neg_mask.float(), 1).squeeze(1)
    return F.triplet_margin_loss(z0, z1, all_z1[j], margin=margin, p=2)


class SiameseConfig(ProjectedConfig):
    name: Literal["siamese"] = Field("siamese", description=METHOD_NAME)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(64, description=PROJ_OUT)
    margin: Annotated[float, Field(gt=0, le=2)] = Field(
        1.2, description="negatives closer than this (unit sphere, max 2) are pushed apart"
    )


class TripletConfig(ProjectedConfig):
    name: Literal["triplet"] = Field("triplet", description=METHOD_NAME)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(64, description=PROJ_OUT)
    margin: Annotated[float, Field(gt=0, le=2)] = Field(
        0.5, description="the negative must be this much farther than the positive (unit sphere)"
    )
    mining: Literal["hard", "random"] = Field(
        "hard", description="negative per anchor: the hardest in the batch, or a random other image"
    )


class _SiameseBase(PretextMethod):
    num_views = 2

    def __init__(self, cfg: ProjectedConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = SimCLRProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)

    def embed_pair(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Two views (B, C, H, W) -> float32 projections (B, proj_out_dim) each, through the shared network.

        The encoder runs at the trainer's precision; the projection head runs through ``in_fp32`` (autocast off, on
        the encoder's features cast up). With the head in bf16, siamese at its parity budget lost 2-3 kNN points to
        the same run in float32 (36.6 / 37.8 vs 38.5 / 38.3 on seeds 0 / 1); with only the head in float32 it
        reached 38.7 / 41.0 at bf16's speed (benchmarks/PROBES.md, stop 33). The head is a small share of a step.
        """
        z0, z1 = self.forward_views(lambda x: in_fp32(self.projection_head, self.encoder(x)), views)
        return z0, z1


@METHODS.register("siamese")
class Siamese(_SiameseBase):
    """Twin network on pairs: pull two views of an image together, push other images beyond a margin."""

    config_cls = SiameseConfig
    cfg: SiameseConfig

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.embed_pair(views)
        return {"loss": in_fp32(margin_contrastive_loss, z0, z1, self.cfg.margin)}


@METHODS.register("triplet")
class Triplet(_SiameseBase):
    """Triplet network: an anchor view must be closer to its other view than to another image, by a margin."""

    config_cls = TripletConfig
    cfg: TripletConfig

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.embed_pair(views)
        m, mining = self.cfg.margin, self.cfg.mining
        loss = 0.5 * (in_fp32(triplet_loss, z0, z1, m, mining) + in_fp32(triplet_loss, z1, z0, m, mining))
        return {"loss": loss}
