"""MAE (He et al. 2022): mask most patches of an image, encode the visible ones with a ViT, reconstruct the pixels
of the masked ones with a light decoder; the loss is the mean squared error on the masked patches only.

Built on lightly's ``MaskedVisionTransformerTIMM`` (encodes the kept tokens of the timm ViT that is the run's
backbone; the class token is always kept), ``MaskedVisionTransformerDecoderTIMM`` and its token utilities, as in
lightly's MAE example. Targets are the normalised input patches, optionally normalised per patch
(``norm_pix_loss``, the paper's best setting). The exported encoder is the plain timm ViT (all patches, no mask, no
decoder) with its own pooling: timm's default is the class token; the bundled recipes set
``backbone.kwargs.global_pool: avg`` (the mean of the patch tokens), because the class token has no target of its
own and stayed at a random ViT's kNN on the CIFAR-10 subset where the mean learned. Departures for small images:
decoder 128 wide and 2 blocks deep (paper 512 x 8).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.errors import UserError
from ssl_transfer.methods.base import MethodConfig, PretextMethod
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


class MAEConfig(MethodConfig):
    name: Literal["mae"] = Field("mae", description=METHOD_NAME)
    mask_ratio: Annotated[float, Field(gt=0, lt=1)] = Field(0.75, description="share of patches masked (paper: 0.75)")
    decoder_dim: Annotated[int, Field(gt=0)] = Field(128, description="width of the decoder (paper: 512)")
    decoder_depth: Annotated[int, Field(gt=0)] = Field(2, description="transformer blocks in the decoder (paper: 8)")
    decoder_heads: Annotated[int, Field(gt=0)] = Field(4, description="attention heads in the decoder (paper: 16)")
    norm_pix_loss: bool = Field(True, description="targets normalised per patch (mean 0, variance 1)")


def vision_transformer(encoder: nn.Module) -> Any:
    """The timm VisionTransformer inside a backbone, or a UserError naming what MAE needs."""
    vit = getattr(encoder, "model", encoder)
    if type(vit).__name__ != "VisionTransformer" or not hasattr(vit, "patch_embed"):
        raise UserError(
            f"method mae needs a timm ViT backbone (e.g. backbone.name=vit_tiny_patch16_224 with backbone.kwargs "
            f"patch_size: 4 for 32 px images); got {type(vit).__name__}"
        )
    if vit.num_prefix_tokens != 1 or not getattr(vit, "has_class_token", True):
        raise UserError(
            f"method mae needs a ViT with one class token and no register tokens (got {vit.num_prefix_tokens} "
            "prefix tokens)"
        )
    return vit


def masked_patch_mse(pred: Tensor, target: Tensor, norm_pix: bool) -> Tensor:
    """MSE between predicted (B, M, P) and true (B, M, P) pixels of the M masked patches of each image; with
    ``norm_pix`` each true patch is first normalised to mean 0, variance 1 (the paper's eq. with 1e-6)."""
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return F.mse_loss(pred, target)


@METHODS.register("mae")
class MAE(PretextMethod):
    """Reconstruct the masked patches of each image from the visible ones."""

    config_cls = MAEConfig
    num_views = 1
    needs_vit = True
    cfg: MAEConfig

    def __init__(self, cfg: MAEConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        vit = vision_transformer(encoder)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.masked_encoder = MaskedVisionTransformerTIMM(vit=vit)  # shares the ViT's weights
        self.decoder_embed = nn.Linear(vit.embed_dim, cfg.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
        )
        self.prediction_head = nn.Linear(cfg.decoder_dim, self.patch_size**2 * self.input_shape[0])

    @property
    def sequence_length(self) -> int:
        return int(self.masked_encoder.sequence_length)

    def reconstruct(self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor) -> Tensor:
        """Pixels (B, M, patch_size**2 * C) predicted for the masked tokens ``idx_mask`` (B, M) of ``images``
        (B, C, H, W) from the kept tokens ``idx_keep`` (B, K); token 0 is the class token."""
        x = self.decoder_embed(self.masked_encoder.encode(images=images, idx_keep=idx_keep))
        full = x.new_zeros(len(images), self.sequence_length, x.shape[-1])
        full = utils.set_at_index(full, idx_keep, x)
        decoded = self.decoder(full, idx_mask=idx_mask)  # masked positions get the mask token
        return self.prediction_head(utils.get_at_index(decoded, idx_mask))

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        images = views[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(len(images), self.sequence_length), mask_ratio=self.cfg.mask_ratio, device=images.device
        )
        pred = self.reconstruct(images, idx_keep, idx_mask)
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)  # no class token
        with torch.autocast(device_type=images.device.type, enabled=False):
            loss = masked_patch_mse(pred.float(), target.float(), self.cfg.norm_pix_loss)
        return {"loss": loss}
