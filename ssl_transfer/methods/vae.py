"""Variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

q(z|x) = N(mu(x), diag(exp(logvar(x)))) from linear heads on the backbone's pooled features; z = mu + sigma * eps
(reparameterisation); closed-form KL to N(0, I); Gaussian (fixed sigma, in pixel units) or Bernoulli
likelihood. The KL weight is warmed up (linear) or annealed cyclically (Fu et al. 2019) against posterior
collapse; ``free_bits`` (Kingma et al. 2016) keeps a floor of KL per latent dimension.
The exported encoder is backbone -> mu (``export: mean``, the paper's representation) or the backbone's pooled
features (``export: features``): wider than the latent code, and on CIFAR-10 a better input for a linear probe
(benchmarks/RESULTS.md: the 32-d mean is a bottleneck for the probe).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.autoencoder import ConvDecoder
from ssl_transfer.methods.base import MethodConfig, PretextMethod, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, (B, L): 0.5 (mu^2 + e^logvar - 1 - logvar)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I); differentiable in mu and logvar."""
    return mu + (0.5 * logvar).exp() * torch.randn_like(mu)


class VAEConfig(MethodConfig):
    name: Literal["vae"] = Field("vae", description=METHOD_NAME)
    latent_dim: Annotated[int, Field(gt=0)] = Field(
        32, description="size of the latent code; the exported encoder outputs its mean"
    )
    beta: Annotated[float, Field(ge=0)] = Field(1.0, description="KL weight; > 1 is beta-VAE")
    likelihood: Literal["gaussian", "bernoulli"] = Field(
        "bernoulli", description="pixel likelihood of the decoder: bernoulli on [0, 1] intensities, or gaussian"
    )
    gaussian_sigma: Annotated[float, Field(gt=0)] = Field(
        0.1, description="Gaussian likelihood std, in [0, 1] pixel units"
    )
    kl_schedule: Literal["linear", "cyclical", "constant"] = Field(
        "linear", description="KL weight: linear warm-up, cyclical (Fu et al. 2019) or constant beta"
    )
    kl_warmup: Annotated[float, Field(ge=0, le=1)] = Field(
        0.2, description="fraction of training (per cycle if cyclical) over which the KL weight rises 0 -> 1"
    )
    kl_cycles: Annotated[int, Field(gt=0)] = Field(4, description="cyclical: number of warm-up cycles over the run")
    free_bits: Annotated[float, Field(ge=0)] = Field(
        0.0, description="nats per latent dimension below which KL is not penalised"
    )
    decoder_width: Annotated[int, Field(gt=0)] = Field(128, description="channels of the decoder's first grid")
    export: Literal["mean", "features"] = Field(
        "mean",
        description="what the exported encoder outputs: the posterior mean (latent_dim values) or the backbone's "
        "pooled features (its width; the usual choice for transfer and linear probes)",
    )


@METHODS.register("vae")
class VAE(PretextMethod):
    """Variational autoencoder / beta-VAE; features for downstream use are the posterior mean."""

    config_cls = VAEConfig
    cfg: VAEConfig

    def __init__(self, cfg: VAEConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.mu_head = nn.Linear(self.embed_dim, cfg.latent_dim)
        self.logvar_head = nn.Linear(self.embed_dim, cfg.latent_dim)
        self.decoder = ConvDecoder(cfg.latent_dim, self.input_shape, cfg.decoder_width)

    def kl_weight(self) -> float:
        """beta times the schedule's factor at the current training progress."""
        p, cfg = self.progress, self.cfg
        if cfg.kl_schedule == "constant" or cfg.kl_warmup == 0:
            f = 1.0
        elif cfg.kl_schedule == "linear":
            f = min(1.0, p / cfg.kl_warmup)
        else:
            f = min(1.0, ((p * cfg.kl_cycles) % 1.0) / cfg.kl_warmup) if p < 1.0 else 1.0
        return cfg.beta * f

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) normalised -> mu, logvar (B, latent_dim)."""
        h = self.encoder(x)
        return self.mu_head(h), self.logvar_head(h).clamp(-30.0, 20.0)

    def recon_nll(self, x: Tensor, out: Tensor) -> Tensor:
        """-log p(x|z) per image (B,), summed over pixels, constants dropped. ``x`` normalised, ``out`` decoder
        output."""
        if self.cfg.likelihood == "bernoulli":
            target = (x * self.pixel_std + self.pixel_mean).clamp(0.0, 1.0)
            return F.binary_cross_entropy_with_logits(out, target, reduction="none").flatten(1).sum(1)
        err = (out - x) * self.pixel_std / self.cfg.gaussian_sigma  # in units of sigma
        return 0.5 * err.pow(2).flatten(1).sum(1)

    def to_normalized(self, out: Tensor) -> Tensor:
        """Decoder output -> the mean image in normalised space (for plots)."""
        if self.cfg.likelihood == "bernoulli":
            return (torch.sigmoid(out) - self.pixel_mean) / self.pixel_std
        return out

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        (x,) = views
        mu, logvar = self.encode(x)
        out = self.decoder(in_fp32(reparameterize, mu, logvar))
        recon = in_fp32(self.recon_nll, x, out).mean()
        kl_dims = in_fp32(kl_to_standard_normal, mu, logvar).mean(0)  # (L,), batch mean per dimension
        kl = kl_dims.sum()
        kl_pen = kl_dims.clamp_min(self.cfg.free_bits).sum() if self.cfg.free_bits > 0 else kl
        w = self.kl_weight()
        loss = recon + w * kl_pen
        n_pix = math.prod(self.input_shape)
        return {
            "loss": loss,
            "recon_nll": recon.detach(),
            "kl": kl.detach(),
            "kl_weight": torch.tensor(w),
            "neg_elbo_per_pixel": (recon + kl).detach() / n_pix,
            "active_units": (kl_dims.detach() > 0.01).sum().float(),
        }

    @torch.no_grad()
    def visualize(self, x: Tensor) -> dict[str, Tensor]:
        """Inputs over reconstructions from the posterior mean; and decoded samples from the prior."""
        mu, _ = self.encode(x)
        z = torch.randn(
            2 * len(x), self.cfg.latent_dim, device=x.device, generator=torch.Generator(x.device).manual_seed(0)
        )
        return {
            "reconstructions": torch.cat([x, self.to_normalized(self.decoder(mu))]),
            "samples": self.to_normalized(self.decoder(z)),
        }

    def export_head(self) -> nn.Linear | None:
        """The posterior mean's head (``export: mean``), or none: the backbone's pooled features."""
        return self.mu_head if self.cfg.export == "mean" else None
