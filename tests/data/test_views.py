import pytest
import torch

from ssl_transfer.data.augment_spec import PRESETS, AugmentConfig
from ssl_transfer.data.views import build_augment


def test_none_preset_is_identity():
    aug = build_augment(AugmentConfig(), 3, (16, 16))
    x = torch.rand(4, 3, 16, 16)
    assert len(aug.ops) == 0 and torch.equal(aug(x), x) and AugmentConfig().is_identity()


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_shape_range_and_vary_per_image(preset, channels):
    cfg = AugmentConfig(preset=preset)
    aug = build_augment(cfg, channels, (28, 28))
    x = torch.rand(1, channels, 28, 28).expand(8, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    y = aug(x)
    # kornia's blur kernel sums to 1 within float32 rounding: a pixel of 1.0 may come out 2e-7 above it
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 + 1e-6
    if preset != "none":
        assert not torch.allclose(y[0], y[1]), "parameters must be drawn per image"
        assert not torch.allclose(aug(x), y), "a new draw per call"


def test_rgb_only_ops_skipped_for_gray():
    cfg = AugmentConfig(preset="simclr")
    names_rgb = [type(m).__name__ for m in build_augment(cfg, 3, (32, 32)).ops]
    names_gray = [type(m).__name__ for m in build_augment(cfg, 1, (32, 32)).ops]
    assert "RandomGrayscale" in names_rgb and "RandomGrayscale" not in names_gray


def test_noise_op():
    aug = build_augment(AugmentConfig(noise_std=0.1), 1, (8, 8))
    x = torch.full((64, 1, 8, 8), 0.5)
    assert abs(float((aug(x) - x).std()) - 0.1) < 0.01


def test_second_view_overrides_only_its_fields():
    from ssl_transfer.data.views import build_view_augments

    cfg = AugmentConfig(preset="byol")
    assert cfg.view_config(0).blur == 1.0 and cfg.view_config(0).solarize == 0.0
    assert cfg.view_config(1).blur == 0.1 and cfg.view_config(1).solarize == 0.2 and cfg.view_config(1).hflip == 0.5
    first, second = build_view_augments(cfg, 3, (32, 32))
    assert "RandomSolarize" not in [type(m).__name__ for m in first.ops]
    assert "RandomSolarize" in [type(m).__name__ for m in second.ops]
    assert len(build_view_augments(AugmentConfig(preset="simclr"), 3, (32, 32))) == 1


def test_second_view_rejects_unknown_fields():
    from ssl_transfer.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="augment.second_view: unknown key 'blurr'"):
        load_recipe({"augment": {"second_view": {"blurr": 0.1}}})
    with pytest.raises(
        RecipeError, match=r"augment.second_view.blur: Input should be less than or equal to 1 \(got 2.0\)"
    ):
        load_recipe({"augment": {"second_view": {"blur": 2.0}}})


def test_pil_backend_matches_batched_semantics_per_image():
    from PIL import Image

    from ssl_transfer.data.views import build_pil_views

    cfg = AugmentConfig(preset="byol")
    t = build_pil_views(cfg, 3, (24, 24), num_views=2)
    img = Image.new("RGB", (100, 80), (200, 30, 90))  # full resolution in, training size out
    torch.manual_seed(0)
    views = t(img)
    assert views.shape == (2, 3, 24, 24) and views.dtype == torch.uint8
    none = build_pil_views(AugmentConfig(), 1, (10, 10), num_views=1)(img.convert("L"))
    assert none.shape == (1, 1, 10, 10) and int(none.float().std()) == 0  # a uniform image stays uniform


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_both_backends_build_the_same_steps_from_one_spec(preset, channels):
    from ssl_transfer.data.views import augment_steps, build_pil_augment

    cfg = AugmentConfig(preset=preset, rotate_degrees=10.0, solarize=0.1, noise_std=0.05)
    steps = [op for op, _ in augment_steps(cfg, channels, (32, 32))]
    kornia = [type(m).__name__ for m in build_augment(cfg, channels, (32, 32)).ops]
    pil = [type(t).__name__ for t in build_pil_augment(cfg, channels, (32, 32)).transforms[1:]]  # after PILToTensor
    batched_ops = [op for op in steps if op != "resize"]  # the batch arrives at its size
    per_image_ops = [op for op in steps if op != "noise"]  # noise is added on the device
    assert len(kornia) == len(batched_ops) and len(pil) == len(per_image_ops)
    names = {"crop": "RandomResizedCrop", "hflip": "RandomHorizontalFlip", "affine": "RandomAffine"}
    for op, k in zip(batched_ops, kornia):
        assert {**names, "crop": "EdgeAlignedResizedCrop"}.get(op, k) == k
    for op, p in zip(per_image_ops, pil):
        assert names.get(op, p) == p
