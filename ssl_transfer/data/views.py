"""Augmentations as batched tensor ops (kornia), run on the training device after the batch is moved there.

A recipe's ``augment`` section names a preset and may override any of its fields. Every op works on float
images in [0, 1] of shape (B, C, H, W) and samples its parameters per image.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Sequence

import kornia.augmentation as K
import torch
from pydantic import Field, ValidationError, model_validator
from torch import Tensor, nn

from ssl_transfer.schema import StrictModel

Prob = Annotated[float, Field(ge=0, le=1)]
UnitPair = tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]]
PosPair = tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]

# Presets list only what differs from the all-off defaults of AugmentConfig.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # Handwritten digits: small rotations/shifts/zooms, no flips (a flipped 2 is not a 2), little colour.
    "digits": {"crop_scale": (0.5, 1.0), "rotate_degrees": 15.0, "translate": 0.1, "scale": (0.9, 1.1), "color_jitter": 0.5, "jitter": (0.4, 0.4, 0.0, 0.0), "blur": 0.2},
    # SimCLR (Chen et al. 2020) ImageNet setting, as lightly's SimCLRTransform.
    "simclr": {"crop_scale": (0.08, 1.0), "hflip": 0.5, "color_jitter": 0.8, "jitter": (0.4, 0.4, 0.4, 0.1), "grayscale": 0.2, "blur": 0.5},
    # BYOL (Grill et al. 2020): asymmetric views, blur always on the first, solarise only on the second.
    "byol": {"crop_scale": (0.08, 1.0), "hflip": 0.5, "color_jitter": 0.8, "jitter": (0.4, 0.4, 0.2, 0.1), "grayscale": 0.2,
             "blur": 1.0, "second_view": {"blur": 0.1, "solarize": 0.2}},
    # CIFAR-10 at 32 px (SimCLR paper's CIFAR setting, solo-learn's cifar configs): no blur.
    "cifar": {"crop_scale": (0.08, 1.0), "hflip": 0.5, "color_jitter": 0.8, "jitter": (0.4, 0.4, 0.2, 0.1), "grayscale": 0.2},
}


class AugmentConfig(StrictModel):
    """Augmentation pipeline, applied in this order: crop, flip, affine, colour jitter, grayscale, blur, solarise, noise.

    Colour ops that need RGB (saturation, hue, grayscale) are skipped for 1-channel images.
    """

    preset: str = Field("none", description="starting values: " + ", ".join(PRESETS))
    backend: Literal["batched", "pil"] = Field(
        "batched",
        description="batched: kornia on the training device after the batch moves there; pil: per image in DataLoader "
        "workers at the file's full resolution (imagefolder only), additive noise still batched",
    )
    crop_scale: UnitPair = Field((1.0, 1.0), description="RandomResizedCrop area range; (1, 1) = no crop")
    crop_ratio: PosPair = (3 / 4, 4 / 3)
    hflip: Prob = 0.0
    rotate_degrees: Annotated[float, Field(ge=0, le=180)] = 0.0
    translate: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="max shift as a fraction of the size")
    scale: PosPair = Field((1.0, 1.0), description="affine zoom range")
    color_jitter: Prob = Field(0.0, description="probability of colour jitter")
    jitter: tuple[float, float, float, float] = Field((0.4, 0.4, 0.2, 0.1), description="brightness, contrast, saturation, hue strengths")
    grayscale: Prob = 0.0
    blur: Prob = 0.0
    blur_sigma: PosPair = (0.1, 2.0)
    solarize: Prob = 0.0
    noise_std: Annotated[float, Field(ge=0)] = Field(0.0, description="additive Gaussian noise, in [0, 1] pixel units")
    second_view: dict[str, Any] | None = Field(None, description="fields that differ for the second view (asymmetric views, e.g. BYOL)")

    @model_validator(mode="after")
    def _check_second_view(self) -> "AugmentConfig":
        if self.second_view is not None:
            bad = set(self.second_view) - (set(type(self).model_fields) - {"preset", "second_view", "backend"})
            if bad:
                raise ValueError(f"augment.second_view: unknown key {sorted(bad)[0]!r} (allowed: any augment field but preset, backend)")
            try:
                self.view_config(1)
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"augment.second_view.{where}: {err['msg']} (got {err['input']!r})") from None
        return self

    def view_config(self, i: int) -> "AugmentConfig":
        """The settings for view ``i`` (0-based): the second view applies ``second_view`` on top."""
        if i == 0 or self.second_view is None:
            return self
        data = {**self.model_dump(exclude={"second_view", "preset", "backend"}), **self.second_view}
        return AugmentConfig.model_validate(data)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "none")
        if preset not in PRESETS:
            raise ValueError(f"augment.preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return {**PRESETS[preset], **data}

    def is_identity(self) -> bool:
        """True when no op is enabled for any view (the pipelines return their input)."""
        return not any(a.ops for a in build_view_augments(self, channels=3, image_size=(32, 32)))


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


def build_augment(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> Augment:
    """Turn an AugmentConfig into the batched pipeline for images of ``channels`` x ``image_size``."""
    rgb = channels == 3
    ops: list[nn.Module] = []
    if tuple(cfg.crop_scale) != (1.0, 1.0):
        # one batched warp for all crops ("resample"); kornia's default "slice" crops and resizes image by image
        # (2-3x slower on CPU for 28-32 px batches; crops are upsampled, so neither needs antialiasing)
        ops.append(K.RandomResizedCrop(image_size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, cropping_mode="resample"))
    if cfg.hflip > 0:
        ops.append(K.RandomHorizontalFlip(p=cfg.hflip))
    if cfg.rotate_degrees > 0 or cfg.translate > 0 or tuple(cfg.scale) != (1.0, 1.0):
        ops.append(
            K.RandomAffine(
                degrees=cfg.rotate_degrees,
                translate=(cfg.translate, cfg.translate) if cfg.translate > 0 else None,
                scale=cfg.scale if tuple(cfg.scale) != (1.0, 1.0) else None,
                p=1.0,
            )
        )
    b, c, s, h = cfg.jitter
    if not rgb:
        s, h = 0.0, 0.0
    if cfg.color_jitter > 0 and any(v > 0 for v in (b, c, s, h)):
        ops.append(K.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h, p=cfg.color_jitter))
    if rgb and cfg.grayscale > 0:
        ops.append(K.RandomGrayscale(p=cfg.grayscale))
    if cfg.blur > 0:
        k = blur_kernel(image_size)
        ops.append(K.RandomGaussianBlur((k, k), sigma=cfg.blur_sigma, p=cfg.blur))
    if cfg.solarize > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.solarize))
    if cfg.noise_std > 0:
        ops.append(GaussianNoise(cfg.noise_std))
    return Augment(ops)


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

    size = list(image_size)
    ops: list[Any] = [v2.PILToTensor()]
    if tuple(cfg.crop_scale) != (1.0, 1.0):
        ops.append(v2.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True))
    else:
        ops.append(v2.Resize(size, antialias=True))
    if cfg.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=cfg.hflip))
    if cfg.rotate_degrees > 0 or cfg.translate > 0 or tuple(cfg.scale) != (1.0, 1.0):
        ops.append(v2.RandomAffine(cfg.rotate_degrees, translate=(cfg.translate, cfg.translate) if cfg.translate > 0 else None,
                                   scale=cfg.scale if tuple(cfg.scale) != (1.0, 1.0) else None))
    b, c, s, h = cfg.jitter
    if channels == 1:
        s, h = 0.0, 0.0
    if cfg.color_jitter > 0 and any(v > 0 for v in (b, c, s, h)):
        ops.append(v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=cfg.color_jitter))
    if channels == 3 and cfg.grayscale > 0:
        ops.append(v2.RandomGrayscale(p=cfg.grayscale))
    if cfg.blur > 0:
        k = blur_kernel(image_size)
        ops.append(v2.RandomApply([v2.GaussianBlur(k, sigma=cfg.blur_sigma)], p=cfg.blur))
    if cfg.solarize > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=cfg.solarize))
    return v2.Compose(ops)


class MultiViewTransform:
    """PIL image -> uint8 views (num_views, C, H, W); view i uses transform ``i % len(transforms)``."""

    def __init__(self, transforms: Sequence[Any], num_views: int) -> None:
        self.transforms, self.num_views = list(transforms), num_views

    def __call__(self, image: Any) -> Tensor:
        return torch.stack([self.transforms[i % len(self.transforms)](image) for i in range(self.num_views)])


def build_pil_views(cfg: AugmentConfig, channels: int, image_size: tuple[int, int], num_views: int) -> MultiViewTransform:
    """The per-image multi-view transform for ``backend: pil``."""
    n = 1 if cfg.second_view is None else 2
    return MultiViewTransform([build_pil_augment(cfg.view_config(i), channels, image_size) for i in range(n)], num_views)


def build_noise_only(cfg: AugmentConfig, channels: int, image_size: tuple[int, int]) -> list[Augment]:
    """For ``backend: pil``: the batched part left, additive noise per view (identity when noise_std is 0)."""
    n = 1 if cfg.second_view is None else 2
    return [build_augment(AugmentConfig(noise_std=cfg.view_config(i).noise_std), channels, image_size) for i in range(n)]
