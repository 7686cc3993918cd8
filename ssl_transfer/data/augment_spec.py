"""The ``augment`` recipe section: one augmentation spec (presets + per-field overrides + second-view changes).

Pydantic only: the recipe schema imports this without kornia or torch; ``ssl_transfer.data.views`` builds the
batched (kornia) and per-image (torchvision) pipelines from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from ssl_transfer.schema import StrictModel

Prob = Annotated[float, Field(ge=0, le=1)]
UnitPair = tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]]
PosPair = tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]

# Presets list only what differs from the all-off defaults of AugmentConfig.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # Handwritten digits: small rotations/shifts/zooms, no flips (a flipped 2 is not a 2), little colour.
    "digits": {
        "crop_scale": (0.5, 1.0),
        "rotate_degrees": 15.0,
        "translate": 0.1,
        "scale": (0.9, 1.1),
        "color_jitter": 0.5,
        "jitter": (0.4, 0.4, 0.0, 0.0),
        "blur": 0.2,
    },
    # SimCLR (Chen et al. 2020) ImageNet setting, as lightly's SimCLRTransform.
    "simclr": {
        "crop_scale": (0.08, 1.0),
        "hflip": 0.5,
        "color_jitter": 0.8,
        "jitter": (0.4, 0.4, 0.4, 0.1),
        "grayscale": 0.2,
        "blur": 0.5,
    },
    # BYOL (Grill et al. 2020): asymmetric views, blur always on the first, solarise only on the second.
    "byol": {
        "crop_scale": (0.08, 1.0),
        "hflip": 0.5,
        "color_jitter": 0.8,
        "jitter": (0.4, 0.4, 0.2, 0.1),
        "grayscale": 0.2,
        "blur": 1.0,
        "second_view": {"blur": 0.1, "solarize": 0.2},
    },
    # CIFAR-10 at 32 px (SimCLR paper's CIFAR setting, solo-learn's cifar configs): no blur.
    "cifar": {
        "crop_scale": (0.08, 1.0),
        "hflip": 0.5,
        "color_jitter": 0.8,
        "jitter": (0.4, 0.4, 0.2, 0.1),
        "grayscale": 0.2,
    },
}


LOCAL = ("local_views", "local_size", "local_crop_scale")


class AugmentConfig(StrictModel):
    """Augmentation pipeline, applied in this order: crop, flip, affine, colour jitter, grayscale, blur, solarise,
    noise.

    Colour ops that need RGB (saturation, hue, grayscale) are skipped for 1-channel images.
    """

    preset: str = Field("none", description="starting values: " + ", ".join(PRESETS))
    backend: Literal["batched", "pil"] = Field(
        "batched",
        description="batched: kornia on the training device after the batch moves there; pil: per image in DataLoader "
        "workers at the file's full resolution (imagefolder only), additive noise still batched",
    )
    crop_scale: UnitPair = Field((1.0, 1.0), description="RandomResizedCrop area range; (1, 1) = no crop")
    crop_ratio: PosPair = Field((3 / 4, 4 / 3), description="RandomResizedCrop aspect-ratio range")
    hflip: Prob = Field(0.0, description="probability of a horizontal flip")
    rotate_degrees: Annotated[float, Field(ge=0, le=180)] = Field(
        0.0, description="random rotation in [-d, d] degrees (affine)"
    )
    translate: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="max shift as a fraction of the size")
    scale: PosPair = Field((1.0, 1.0), description="affine zoom range")
    color_jitter: Prob = Field(0.0, description="probability of colour jitter")
    jitter: tuple[float, float, float, float] = Field(
        (0.4, 0.4, 0.2, 0.1), description="brightness, contrast, saturation, hue strengths"
    )
    grayscale: Prob = Field(0.0, description="probability of converting to grey (RGB only)")
    blur: Prob = Field(0.0, description="probability of a Gaussian blur (kernel 10% of the image side)")
    blur_sigma: PosPair = Field((0.1, 2.0), description="blur sigma range, in pixels")
    solarize: Prob = Field(0.0, description="probability of solarising (pixels above 0.5 inverted)")
    noise_std: Annotated[float, Field(ge=0)] = Field(0.0, description="additive Gaussian noise, in [0, 1] pixel units")
    second_view: dict[str, Any] | None = Field(
        None, description="fields that differ for the second view (asymmetric views, e.g. BYOL)"
    )
    local_views: Annotated[int, Field(ge=0, le=32)] = Field(
        0,
        description="multi-crop: small local views after the method's global ones (DINO, SwAV: 6 or more; 0 = off); "
        "they use the first view's settings with local_crop_scale and local_size",
    )
    local_size: Annotated[int, Field(gt=0)] | None = Field(
        None, description="side of the local views in pixels (default: half the image side, e.g. 16 for 32 px)"
    )
    local_crop_scale: UnitPair = Field(
        (0.05, 0.4), description="RandomResizedCrop area range of the local views (DINO: 0.05-0.4)"
    )

    @model_validator(mode="after")
    def _check_second_view(self) -> AugmentConfig:
        if self.second_view is not None:
            bad = set(self.second_view) - (set(type(self).model_fields) - {"preset", "second_view", "backend", *LOCAL})
            if bad:
                raise ValueError(
                    f"augment.second_view: unknown key {sorted(bad)[0]!r} "
                    "(allowed: any augment field but preset, backend and the local_* fields)"
                )
            try:
                self.view_config(1)
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                where = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"augment.second_view.{where}: {err['msg']} (got {err['input']!r})") from None
        return self

    def local_config(self) -> AugmentConfig:
        """The settings of the local views: the first view's, cropped at ``local_crop_scale``."""
        return self.model_copy(update={"crop_scale": self.local_crop_scale, "second_view": None})

    def local_image_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Output size (H, W) of the local views for global views of ``image_size``."""
        if self.local_size is not None:
            return (self.local_size, self.local_size)
        return (max(1, image_size[0] // 2), max(1, image_size[1] // 2))

    def view_config(self, i: int) -> AugmentConfig:
        """The settings for view ``i`` (0-based): the second view applies ``second_view`` on top."""
        if i == 0 or self.second_view is None:
            return self
        data = {**self.model_dump(exclude={"second_view", "preset", "backend", *LOCAL}), **self.second_view}
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
        from ssl_transfer.data.views import build_view_augments

        return not any(a.ops for a in build_view_augments(self, channels=3, image_size=(32, 32)))
