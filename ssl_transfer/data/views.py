"""Augmentations as batched tensor ops (kornia), run on the training device after the batch is moved there.

A recipe's ``augment`` section names a preset and may override any of its fields. Every op works on float
images in [0, 1] of shape (B, C, H, W) and samples its parameters per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from ssl_transfer.data.augment_spec import AugmentConfig
from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.data.resized_crop import EdgeAlignedResizedCrop
from ssl_transfer.errors import UserError

if TYPE_CHECKING:
    from ssl_transfer.data.loading import DataBundle


class GaussianNoise(nn.Module):
    """x + N(0, std^2), clamped to [0, 1]."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.std * torch.randn_like(x)).clamp_(0, 1)


class Augment(nn.Module):
    """Batched augmentation: (B, C, H, W) float in [0, 1] -> same shape, new random draw per call and image."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: Tensor) -> Tensor:
        for op in self.ops:
            x = op(x)
        return x


def blur_kernel(image_size: tuple[int, int]) -> int:
    """Gaussian blur kernel side: about 10% of the shorter side, odd, at least 3 (SimCLR's rule)."""
    return max(3, int(0.1 * min(image_size)) // 2 * 2 + 1)


def augment_steps(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> list[tuple[str, dict[str, Any]]]:
    """The pipeline ``cfg`` describes, as backend-neutral steps in order: (op, parameters). Both backends build
    from this one list (:func:`build_augment`, :func:`build_pil_augment`); an op absent from a backend's table
    is not that backend's (``resize``: the batch is already sized; ``noise``: added on the device)."""
    rgb = channels == 3
    steps: list[tuple[str, dict[str, Any]]] = []
    if tuple(cfg.crop_scale) != (1.0, 1.0):
        steps.append(("crop", {"size": image_size, "scale": tuple(cfg.crop_scale), "ratio": tuple(cfg.crop_ratio)}))
    else:
        steps.append(("resize", {"size": image_size}))
    if cfg.hflip > 0:
        steps.append(("hflip", {"p": cfg.hflip}))
    if cfg.rotate_degrees > 0 or cfg.translate > 0 or tuple(cfg.scale) != (1.0, 1.0):
        steps.append(
            (
                "affine",
                {
                    "degrees": cfg.rotate_degrees,
                    "translate": (cfg.translate, cfg.translate) if cfg.translate > 0 else None,
                    "scale": tuple(cfg.scale) if tuple(cfg.scale) != (1.0, 1.0) else None,
                },
            )
        )
    b, c, s, h = cfg.jitter
    if not rgb:
        s, h = 0.0, 0.0
    if cfg.color_jitter > 0 and any(v > 0 for v in (b, c, s, h)):
        steps.append(("jitter", {"brightness": b, "contrast": c, "saturation": s, "hue": h, "p": cfg.color_jitter}))
    if rgb and cfg.grayscale > 0:
        steps.append(("grayscale", {"p": cfg.grayscale}))
    if cfg.blur > 0:
        steps.append(("blur", {"kernel": blur_kernel(image_size), "sigma": tuple(cfg.blur_sigma), "p": cfg.blur}))
    if cfg.solarize > 0:
        steps.append(("solarize", {"p": cfg.solarize}))
    if cfg.noise_std > 0:
        steps.append(("noise", {"std": cfg.noise_std}))
    return steps


# the crop is one grid_sample for the whole batch with torchvision's pixel geometry (resized_crop.py): kornia's
# "resample" warp maps corner pixel centres (more zoom than torchvision), its "slice" mode resizes image by image
_KORNIA: dict[str, Any] = {
    "crop": EdgeAlignedResizedCrop,
    "hflip": lambda p: K.RandomHorizontalFlip(p=p),
    "affine": lambda degrees, translate, scale: K.RandomAffine(
        degrees=degrees, translate=translate, scale=scale, p=1.0
    ),
    "jitter": lambda p, **jitter: K.ColorJitter(**jitter, p=p),
    "grayscale": lambda p: K.RandomGrayscale(p=p),
    "blur": lambda kernel, sigma, p: K.RandomGaussianBlur((kernel, kernel), sigma=sigma, p=p),
    "solarize": lambda p: K.RandomSolarize(thresholds=0.0, additions=0.0, p=p),
    "noise": lambda std: GaussianNoise(std),
    "resize": lambda size: K.Resize(size, antialias=True),
}


def _torchvision() -> dict[str, Any]:
    import torchvision.transforms.v2 as v2

    return {
        "crop": lambda size, scale, ratio: v2.RandomResizedCrop(list(size), scale=scale, ratio=ratio, antialias=True),
        "resize": lambda size: v2.Resize(list(size), antialias=True),
        "hflip": lambda p: v2.RandomHorizontalFlip(p=p),
        "affine": lambda degrees, translate, scale: v2.RandomAffine(degrees, translate=translate, scale=scale),
        "jitter": lambda p, brightness, contrast, saturation, hue: v2.RandomApply(
            [v2.ColorJitter(brightness, contrast, saturation, hue)], p=p
        ),
        "grayscale": lambda p: v2.RandomGrayscale(p=p),
        "blur": lambda kernel, sigma, p: v2.RandomApply([v2.GaussianBlur(kernel, sigma=sigma)], p=p),
        "solarize": lambda p: v2.RandomSolarize(threshold=128, p=p),
    }


def build_augment(cfg: AugmentConfig, channels: int, image_size: tuple[int, int], resize: bool = False) -> Augment:
    """The batched (kornia) pipeline with output ``channels`` x ``image_size``. Without a crop the batch keeps its
    size unless ``resize`` (local views: smaller than the batch)."""
    steps = augment_steps(cfg, channels, image_size)
    return Augment([_KORNIA[op](**kw) for op, kw in steps if op in _KORNIA and (resize or op != "resize")])


def build_local_augment(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> Augment | None:
    """The batched pipeline of the local views (multi-crop) for global views of ``image_size``; None without any."""
    if cfg.local_views == 0:
        return None
    return build_augment(cfg.local_config(), channels, cfg.local_image_size(image_size), resize=True)


def build_view_augments(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> list[Augment]:
    """One pipeline per distinct view: [first] or [first, second] when ``second_view`` is set; view i uses
    pipeline ``i % len``."""
    n = 1 if cfg.second_view is None else 2
    return [build_augment(cfg.view_config(i), channels, image_size) for i in range(n)]


def build_pil_augment(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> Any:
    """The same pipeline per image with torchvision v2: PIL image (any size) -> uint8 (channels, *image_size).

    The crop (or a plain resize) comes first, so it works at the file's full resolution. Additive noise is not
    part of it (it stays in the batched pipeline).
    """
    import torchvision.transforms.v2 as v2

    table = _torchvision()
    ops = [table[op](**kw) for op, kw in augment_steps(cfg, channels, image_size) if op in table]
    return v2.Compose([v2.PILToTensor(), *ops])


class MultiViewTransform:
    """PIL image -> uint8 views (num_views, C, H, W); view i uses transform ``i % len(transforms)``. With
    ``local_views``: a pair (global views, local views (local_views, C, h, w) from ``local_transform``)."""

    def __init__(
        self, transforms: Sequence[Any], num_views: int, local_transform: Any = None, local_views: int = 0
    ) -> None:
        self.transforms, self.num_views = list(transforms), num_views
        self.local_transform, self.local_views = local_transform, local_views

    def __call__(self, image: Any) -> Tensor | tuple[Tensor, Tensor]:
        views = torch.stack([self.transforms[i % len(self.transforms)](image) for i in range(self.num_views)])
        if not self.local_views:
            return views
        return views, torch.stack([self.local_transform(image) for _ in range(self.local_views)])


def build_pil_views(
    cfg: AugmentConfig, channels: int, image_size: tuple[int, int], num_views: int
) -> MultiViewTransform:
    """The per-image multi-view transform for ``backend: pil``."""
    n = 1 if cfg.second_view is None else 2
    local = (
        build_pil_augment(cfg.local_config(), channels, cfg.local_image_size(image_size)) if cfg.local_views else None
    )
    return MultiViewTransform(
        [build_pil_augment(cfg.view_config(i), channels, image_size) for i in range(n)],
        num_views,
        local,
        cfg.local_views,
    )


def build_noise_only(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> list[Augment]:
    """For ``backend: pil``: the batched part left, additive noise per view (identity when noise_std is 0)."""
    n = 1 if cfg.second_view is None else 2
    return [
        build_augment(AugmentConfig(noise_std=cfg.view_config(i).noise_std), channels, image_size) for i in range(n)
    ]


def training_views(
    cfg: AugmentConfig, data: DataBundle, num_views: int
) -> tuple[ArrayDataset | FileDataset, list[Augment], Augment | None]:
    """The training set, the batched augmentations of each global view and of the local views (None without
    multi-crop), for ``cfg.backend``: ``batched`` keeps the dataset and augments on the device; ``pil`` (image
    folders only) gives the dataset per-image views and leaves only additive noise to the batch."""
    if cfg.backend != "pil":
        return (
            data.train,
            build_view_augments(cfg, data.channels, data.image_size),
            build_local_augment(cfg, data.channels, data.image_size),
        )
    if not isinstance(data.train, FileDataset):
        raise UserError(
            f"augment.backend=pil is for imagefolder data; data.source={data.source} is augmented in batches on "
            "the device"
        )
    views = build_pil_views(cfg, data.channels, data.image_size, num_views)
    noise = build_noise_only(cfg, data.channels, data.image_size)
    # local views take the first view's settings, so its noise-only pipeline serves them too
    return data.train.with_transform(views), noise, noise[0] if cfg.local_views else None
