import subprocess
import sys

import pytest
import torch

from ssl_transfer.backbone_names import SMALL_CNN_WIDTHS
from ssl_transfer.backbones import BackboneError, build_backbone


@pytest.mark.parametrize("name", list(SMALL_CNN_WIDTHS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 17, 23)])
def test_small_cnns_embed_any_small_shape(name, shape):
    m = build_backbone(name, shape)
    out = m(torch.randn(3, *shape))
    assert out.shape == (3, m.embed_dim) and torch.isfinite(out).all()


def test_small_cnn_widths_are_distinct():
    dims = [build_backbone(n, (1, 8, 8)).embed_dim for n in ("cnn_tiny", "cnn_small", "cnn_base")]
    assert dims == [64, 128, 256]


def test_every_backbone_comes_from_timm_with_its_name_and_groups():
    # The small CNNs were built outside timm (a second registry), so the timm export guessed their name from the
    # conv widths and the LLRD blocks branched on the class. Now timm builds every backbone: its pretrained_cfg
    # names the architecture and its group_matcher gives the blocks.
    from timm.models import group_parameters

    for name, shape in [("cnn_tiny", (1, 8, 8)), ("resnet18_cifar", (3, 32, 32))]:
        m = build_backbone(name, shape)
        model = getattr(m, "model", m)
        assert model.pretrained_cfg["architecture"] == name
        groups = group_parameters(model, model.group_matcher(coarse=True))
        assert sum(len(v) for v in groups.values()) == len(list(model.parameters())) and len(groups) >= 3
    assert "model" not in dict(build_backbone("cnn_tiny", (1, 8, 8)).named_children())  # keys stay stages.*


@pytest.mark.parametrize(
    "name,shape", [("resnet18", (3, 32, 32)), ("resnet18", (1, 28, 28)), ("vit_tiny_patch16_224", (3, 32, 32))]
)
def test_timm_backbones_through_public_api(name, shape):
    m = build_backbone(name, shape)
    assert m.embed_dim == m.model.num_features
    assert m(torch.randn(2, *shape)).shape == (2, m.embed_dim)


def test_timm_kwargs_pass_through_and_bad_kwargs_fail_clearly():
    m = build_backbone("resnet18", (3, 32, 32), kwargs={"drop_path_rate": 0.1})
    assert m.embed_dim == 512
    with pytest.raises(BackboneError, match="rejected"):
        build_backbone("resnet18", (3, 32, 32), kwargs={"no_such_arg": 1})


def test_unknown_and_incompatible_backbones():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet1'"):
        build_backbone("resnet1", (3, 32, 32))
    with pytest.raises(BackboneError, match="takes no kwargs"):
        build_backbone("cnn_small", (1, 8, 8), kwargs={"x": 1})
    with pytest.raises(BackboneError, match="cannot take"):
        build_backbone("vit_tiny_patch16_224", (3, 8, 8), kwargs={"img_size": 224})


def test_our_timm_models_resolve_without_the_import_hook():
    # On a GPU image timm was imported without our registration having run (the import hook did not fire there),
    # so backbone.name=resnet18_cifar failed as unknown; the callers that need our models now import them.
    code = (
        "import sys, ssl_transfer\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_AfterTimmImport']\n"
        "import timm\n"
        "from ssl_transfer.backbones import build_backbone, check_backbone_name\n"
        "check_backbone_name('resnet18_cifar')\n"
        "print(build_backbone('resnet18_cifar', (3, 32, 32)).embed_dim)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["512"]
