"""Plain, loop-level reference computations of each loss, written from the papers' formulas."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def nt_xent(z0: Tensor, z1: Tensor, t: float) -> Tensor:
    """SimCLR eq. 1, averaged over all 2B anchors."""
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    n = len(z)
    b = len(z0)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / denom)
    return torch.tensor(total / n)


def info_nce_with_queue(q: Tensor, k: Tensor, queue: Tensor, t: float) -> Tensor:
    """MoCo eq. 1: queue is (D, K) of unit keys; q, k (B, D)."""
    q = torch.nn.functional.normalize(q, dim=1)
    k = torch.nn.functional.normalize(k, dim=1)
    total = 0.0
    for i in range(len(q)):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / t) for j in range(queue.shape[1]))
        total += -math.log(pos / (pos + neg))
    return torch.tensor(total / len(q))


def neg_cosine(p: Tensor, z: Tensor) -> Tensor:
    return torch.tensor(-sum(float(p[i] @ z[i] / (p[i].norm() * z[i].norm())) for i in range(len(p))) / len(p))


def barlow_twins(z0: Tensor, z1: Tensor, lam: float) -> Tensor:
    """Zbontar et al. eq. 1-2 with batch-standardised projections (biased std, as BatchNorm)."""
    b, d = z0.shape
    a = (z0 - z0.mean(0)) / z0.std(0, unbiased=False)
    c_ = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            cij = float(sum(a[n, i] * c_[n, j] for n in range(b))) / b
            loss += (1 - cij) ** 2 if i == j else lam * cij**2
    return torch.tensor(loss)


def vicreg(z0: Tensor, z1: Tensor, lam: float, mu: float, nu: float, eps: float = 1e-4) -> Tensor:
    """Bardes et al. with the official code's 1/2 on the variance term (v(Z) + v(Z')) / 2."""
    b, d = z0.shape
    inv = float(((z0 - z1) ** 2).sum()) / (b * d)

    def var_term(z: Tensor) -> float:
        return sum(max(0.0, 1 - math.sqrt(float(z[:, j].var(unbiased=True)) + eps)) for j in range(d)) / d

    def cov_term(z: Tensor) -> float:
        zc = z - z.mean(0)
        cov = zc.T @ zc / (b - 1)
        return sum(float(cov[i, j]) ** 2 for i in range(d) for j in range(d) if i != j) / d

    return torch.tensor(lam * inv + mu * 0.5 * (var_term(z0) + var_term(z1)) + nu * (cov_term(z0) + cov_term(z1)))


def margin_contrastive(z0: Tensor, z1: Tensor, margin: float) -> Tensor:
    """Hadsell et al.: mean over positive pairs of d^2/2 plus mean over negative pairs of max(0, m - d)^2 / 2."""
    b = len(z0)
    pos = sum(float((z0[i] - z1[i]).norm()) ** 2 for i in range(b)) / b
    neg = [max(0.0, margin - float((z0[i] - z1[j]).norm())) ** 2 for i in range(b) for j in range(b) if i != j]
    return torch.tensor(0.5 * pos + 0.5 * sum(neg) / len(neg))


def triplet_batch_hard(z0: Tensor, z1: Tensor, margin: float) -> Tensor:
    """Hermans et al.: each anchor z0[i] with positive z1[i] and its closest negative z1[j], j != i."""
    b = len(z0)
    total = 0.0
    for i in range(b):
        dp = float((z0[i] - z1[i]).norm())
        dn = min(float((z0[i] - z1[j]).norm()) for j in range(b) if j != i)
        total += max(0.0, dp - dn + margin)
    return torch.tensor(total / b)


def mocov3_contrastive(q: Tensor, k: Tensor, t: float) -> Tensor:
    """MoCo v3 (Chen et al. 2021, Algorithm 1): 2t * mean_i -log softmax_j(q_i . k_j / t)[i], unit rows."""
    q = torch.nn.functional.normalize(q, dim=1)
    k = torch.nn.functional.normalize(k, dim=1)
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ k[j]) / t for j in range(len(k))]
        total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    return torch.tensor(2 * t * total / len(q))


def nearest_by_cosine(z: Tensor, support: Tensor) -> Tensor:
    """Row by row, the support row with the largest cosine similarity to z's row."""
    rows = []
    for zi in z:
        sims = [float(zi @ s / (zi.norm() * s.norm())) for s in support]
        rows.append(support[max(range(len(sims)), key=sims.__getitem__)])
    return torch.stack(rows)


def dino_loss(teacher: list[Tensor], student: list[Tensor], center: Tensor, t_temp: float, s_temp: float) -> Tensor:
    """Caron et al. 2021, Algorithm 1: cross-entropy of the centred, sharpened teacher distribution of global view i
    and the student's of view j, for every pair i != j, averaged over pairs and images."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        pt = torch.softmax((t - center) / t_temp, dim=1)
        for j, s in enumerate(student):
            if i == j:
                continue
            total += float(-(pt * torch.log_softmax(s / s_temp, dim=1)).sum(1).mean())
            pairs += 1
    return torch.tensor(total / pairs)


def sinkhorn_knopp(scores: Tensor, iterations: int, eps: float) -> Tensor:
    """Caron et al. 2020, Algorithm 1 (the authors' distributed_sinkhorn on one process): codes (B, K) with each
    image's row summing to 1 and each prototype's column to B / K (approximately, after ``iterations``)."""
    q = torch.exp(scores / eps).T  # (K, B)
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def swav_loss(scores: list[Tensor], n_global: int, temp: float, iterations: int, eps: float) -> Tensor:
    """SwAV's swapped prediction: the codes of each global view predicted from every other view, averaged."""
    total = 0.0
    for i in range(n_global):
        q = sinkhorn_knopp(scores[i].detach(), iterations, eps)
        sub = sum(
            float(-(q * torch.log_softmax(s / temp, dim=1)).sum(1).mean()) for v, s in enumerate(scores) if v != i
        )
        total += sub / (len(scores) - 1)
    return torch.tensor(total / n_global)
