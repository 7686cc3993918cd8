import kornia.augmentation as K
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from ssl_transfer.data.augment_spec import AugmentConfig
from ssl_transfer.data.resized_crop import EdgeAlignedResizedCrop
from ssl_transfer.data.views import build_augment


def _boxes(op: torch.nn.Module) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of each image's crop in the op's last call."""
    src = op._params["src"].round().long()
    return [(int(b[0, 1]), int(b[0, 0]), int(b[2, 1] - b[0, 1] + 1), int(b[2, 0] - b[0, 0] + 1)) for b in src]


@pytest.mark.parametrize(("image", "size"), [((32, 32), (32, 32)), ((24, 40), (24, 40)), ((32, 32), (16, 16))])
def test_batched_crop_resizes_each_box_as_torchvision_does(image, size):
    # the batched pipeline's crop must give the views torchvision's RandomResizedCrop gives for the same box (pixel
    # edges onto pixel edges); kornia's warp mapped corner pixel centres (up to 0.45 apart at small crops)
    torch.manual_seed(0)
    x = torch.rand(64, 3, *image)
    crop = build_augment(AugmentConfig(crop_scale=(0.08, 1.0)), 3, size, resize=True).ops[0]
    y = crop(x)
    assert y.shape == (64, 3, *size)
    for i, (top, left, h, w) in enumerate(_boxes(crop)):
        ref = TF.resized_crop(x[i], top, left, h, w, list(size), antialias=False)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_boxes_are_kornias_for_the_same_random_state():
    x = torch.rand(32, 3, 32, 32)
    ours = EdgeAlignedResizedCrop((32, 32), (0.08, 1.0), (3 / 4, 4 / 3))
    kornia = K.RandomResizedCrop((32, 32), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), cropping_mode="resample")
    torch.manual_seed(3)
    ours(x)
    torch.manual_seed(3)
    kornia(x)
    assert _boxes(ours) == _boxes(kornia)


def test_full_box_is_the_identity_and_dtype_is_kept():
    x = torch.rand(4, 1, 28, 28)
    op = EdgeAlignedResizedCrop((28, 28), (1.0, 1.0), (1.0, 1.0))
    torch.testing.assert_close(op(x), x, atol=1e-6, rtol=0)
    assert op(x.to(torch.bfloat16)).dtype == torch.bfloat16
