"""Autoencoder (``ae``) and denoising autoencoder (``dae``, Vincent et al. 2008).

The encoder is the backbone (B, C, H, W) -> (B, D); a convolutional decoder built for the input shape maps
(B, D) back to (B, C, H, W). The loss is the pixel reconstruction error on normalised images.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import MethodConfig, PretextMethod, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


class ConvDecoder(nn.Module):
    """(B, D) -> (B, C, H, W): a linear map to a (width, h0, w0) grid, then ×2 transposed-conv upsampling blocks.

    The number of upsamplings is the smallest n >= 1 with ceil(H / 2^n) <= 8; the output is resized to
    exactly (H, W) when H or W is not a multiple of 2^n.
    """

    def __init__(self, embed_dim: int, out_shape: tuple[int, int, int], width: int = 128) -> None:
        super().__init__()
        c, h, w = out_shape
        n = 1
        while math.ceil(max(h, w) / 2**n) > 8:
            n += 1
        self.h0, self.w0, self.width, self.out_hw = math.ceil(h / 2**n), math.ceil(w / 2**n), width, (h, w)
        self.fc = nn.Sequential(nn.Linear(embed_dim, width * self.h0 * self.w0), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = width
        for _ in range(n):
            cout = max(32, cin // 2)
            blocks += [
                nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        blocks.append(nn.Conv2d(cin, c, 3, padding=1))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: Tensor) -> Tensor:
        x = self.blocks(self.fc(z).view(-1, self.width, self.h0, self.w0))
        if tuple(x.shape[-2:]) != self.out_hw:
            x = F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=False)
        return x


class AEConfig(MethodConfig):
    name: Literal["ae"] = Field("ae", description=METHOD_NAME)
    decoder_width: Annotated[int, Field(gt=0)] = Field(128, description="channels of the decoder's first grid")
    loss: Literal["mse", "l1"] = Field("mse", description="pixel reconstruction loss on normalised images")


class DAEConfig(AEConfig):
    name: Literal["dae"] = Field("dae", description=METHOD_NAME)  # type: ignore[assignment]
    noise_std: Annotated[float, Field(ge=0)] = Field(
        0.5, description="Gaussian noise std added to the normalised input (1 = one pixel std)"
    )
    mask_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.25, description="fraction of pixels set to the mean (masking noise)"
    )


@METHODS.register("ae")
class Autoencoder(PretextMethod):
    """Reconstruct the input from the encoder's pooled embedding."""

    config_cls = AEConfig
    cfg: AEConfig

    def __init__(self, cfg: AEConfig, encoder: nn.Module, input_shape: tuple[int, int, int], *args, **kwargs) -> None:
        super().__init__(cfg, encoder, input_shape, *args, **kwargs)
        self.decoder = ConvDecoder(self.embed_dim, self.input_shape, cfg.decoder_width)

    def corrupt(self, x: Tensor) -> Tensor:
        """The encoder's input; the plain autoencoder sees the clean image."""
        return x

    def forward_encoder(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D)."""
        return self.encoder(x)

    def forward_decoder(self, z: Tensor) -> Tensor:
        """(B, D) -> (B, C, H, W)."""
        return self.decoder(z)

    def forward_loss(self, target: Tensor, recon: Tensor) -> Tensor:
        """Mean per-pixel error, a scalar."""
        return F.mse_loss(recon, target) if self.cfg.loss == "mse" else F.l1_loss(recon, target)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        (x,) = views
        recon = self.forward_decoder(self.forward_encoder(self.corrupt(x)))
        loss = in_fp32(self.forward_loss, x, recon)
        return {"loss": loss, "recon_loss": loss.detach()}

    @torch.no_grad()
    def visualize(self, x: Tensor) -> dict[str, Tensor]:
        """Rows of inputs (as the encoder saw them) over their reconstructions."""
        xin = self.corrupt(x)
        return {"reconstructions": torch.cat([xin, self.forward_decoder(self.forward_encoder(xin))])}


@METHODS.register("dae")
class DenoisingAutoencoder(Autoencoder):
    """Reconstruct the clean image from a corrupted one (Gaussian + masking noise)."""

    config_cls = DAEConfig
    cfg: DAEConfig

    def corrupt(self, x: Tensor) -> Tensor:
        if self.cfg.mask_ratio > 0:
            x = x * (torch.rand_like(x[:, :1]) >= self.cfg.mask_ratio)  # 0 = the mean after normalisation
        if self.cfg.noise_std > 0:
            x = x + self.cfg.noise_std * torch.randn_like(x)
        return x
