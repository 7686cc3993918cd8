"""MAE: the loss is the MSE on the masked patches only (against a loop over patches), the mask keeps the class token
and the configured share of patches, and a non-ViT backbone is refused with one line."""

from __future__ import annotations

import pytest
import torch

from ssl_transfer.backbones import build_backbone
from ssl_transfer.errors import UserError
from ssl_transfer.methods import build_method
from ssl_transfer.methods.mae import MAEConfig

SHAPE = (3, 8, 8)


def _mae(**kw):
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny_patch16_224", SHAPE, kwargs={"patch_size": 2, "depth": 1})
    return build_method(MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2, **kw), vit, SHAPE)


def patch_pixels(img: torch.Tensor, token: int, p: int) -> torch.Tensor:
    """The pixels of patch token ``token`` (1-based: token 0 is the class token) of img (C, H, W), in the MAE
    authors' order: rows of the patch, then columns, then channels."""
    per_row = img.shape[2] // p
    r, c = divmod(token - 1, per_row)
    return img[:, r * p : (r + 1) * p, c * p : (c + 1) * p].permute(1, 2, 0).reshape(-1)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_mse_on_the_masked_patches(monkeypatch, norm_pix):
    m = _mae(mask_ratio=0.75, norm_pix_loss=norm_pix)
    images = torch.randn(3, *SHAPE)
    seen = {}
    import lightly.models.utils as lu

    original = lu.random_token_mask

    def spy(*args, **kwargs):
        seen["keep"], seen["mask"] = original(*args, **kwargs)
        return seen["keep"], seen["mask"]

    monkeypatch.setattr(lu, "random_token_mask", spy)
    torch.manual_seed(1)
    loss = m.training_step([images])["loss"]
    keep, mask = seen["keep"], seen["mask"]
    assert keep.shape == (3, 1 + 4) and mask.shape == (3, 12)  # 16 patches: 4 kept (+ class token), 12 masked
    assert bool((keep[:, 0] == 0).all()) and not bool((mask == 0).any())  # the class token is always kept
    with torch.no_grad():
        pred = m.reconstruct(images, keep, mask)
    total, n = 0.0, 0
    for b in range(3):
        for j, token in enumerate(mask[b].tolist()):
            t = patch_pixels(images[b], token, 2)
            if norm_pix:
                t = (t - t.mean()) / (t.var() + 1e-6).sqrt()
            total += float(((pred[b, j] - t) ** 2).sum())
            n += t.numel()
    assert float(loss) == pytest.approx(total / n, rel=1e-4)


def test_a_cnn_backbone_is_refused_in_one_line():
    with pytest.raises(UserError, match="method mae needs a timm ViT backbone.*got TimmSmallCNN"):
        build_method(MAEConfig(), build_backbone("cnn_tiny", SHAPE), SHAPE)
