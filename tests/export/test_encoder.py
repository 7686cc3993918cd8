import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ssl_transfer.backbones import build_backbone
from ssl_transfer.errors import UserError
from ssl_transfer.export import encoder_meta, load_encoder, save_encoder


def saved(tmp_path: Path, name="cnn_tiny", shape=(1, 12, 12)):
    torch.manual_seed(0)
    bb = build_backbone(name, shape)
    with torch.no_grad():  # make BN running stats non-trivial so that they must round-trip too
        bb.train()(torch.randn(16, *shape) * 3 + 1)
    meta = encoder_meta(name, {}, bb.embed_dim, shape, [0.3] * shape[0], [0.2] * shape[0], method="ae")
    save_encoder(bb, tmp_path / "encoder.safetensors", meta)
    return bb.eval()


def test_round_trip_embeddings_are_identical(tmp_path: Path):
    bb = saved(tmp_path)
    enc = load_encoder(tmp_path / "encoder.json")
    x = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    ref = bb((x.float() / 255 - 0.3) / 0.2)
    assert torch.equal(enc.embed(x), ref.detach())


def test_preprocess_accepts_uint8_float_and_pil(tmp_path: Path):
    saved(tmp_path, shape=(3, 12, 12))
    enc = load_encoder(tmp_path)
    x = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    a = enc.embed(x)
    b = enc.embed(x.float() / 255)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in x]
    c = enc.embed(pil)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)
    big = enc.preprocess(torch.randint(0, 256, (1, 1, 40, 30), dtype=torch.uint8))
    assert big.shape == (1, 3, 12, 12)  # gray -> RGB, resized to the training size


@pytest.mark.parametrize("src,dst", [(3, 1), (1, 3)])
def test_channel_conversion_is_the_same_on_the_uint8_float_and_pil_paths(tmp_path: Path, src: int, dst: int):
    """kNN/linear feed uint8, fine-tuning floats, `embed` PIL images: one encoder must see one image."""
    saved(tmp_path, shape=(dst, 12, 12))
    pre = load_encoder(tmp_path).preprocess
    x = torch.zeros(1, src, 12, 12, dtype=torch.uint8)
    x[:, 0] = 255  # pure red (3 -> 1) or white (1 -> 3)
    from_uint8, from_float = pre(x), pre(x.float() / 255)
    pil = Image.fromarray(x[0].permute(1, 2, 0).squeeze(-1).numpy())
    from_pil = pre([pil])
    assert from_uint8.shape == (1, dst, 12, 12)
    assert torch.allclose(from_uint8, from_float, atol=1 / 255 / 0.2) and torch.allclose(
        from_uint8, from_pil, atol=1 / 255 / 0.2
    )
    if dst == 1:  # luminance (0.299 R), not the channel mean (1/3)
        assert from_float[0, 0, 0, 0].item() == pytest.approx((76 / 255 - 0.3) / 0.2, abs=1 / 255 / 0.2)


def test_loading_is_strict(tmp_path: Path):
    """Weights that do not match the backbone the metadata names, or a truncated file: one line naming both."""
    saved(tmp_path)
    save_file({"bogus": torch.zeros(1)}, tmp_path / "encoder.safetensors")
    with pytest.raises(
        UserError, match=r"does not hold the weights of backbone .* missing .* 1 unexpected \(e.g. \['bogus'\]\)"
    ) as e:
        load_encoder(tmp_path)
    assert "\n" not in str(e.value)
    saved(tmp_path)
    data = (tmp_path / "encoder.safetensors").read_bytes()
    (tmp_path / "encoder.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_encoder(tmp_path)


def test_missing_encoder_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="no encoder"):
        load_encoder(tmp_path)


def test_metadata_has_everything_to_rebuild(tmp_path: Path):
    saved(tmp_path)
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["backbone"]["name"] == "cnn_tiny" and meta["input"]["mean"] == [0.3] and meta["embed_dim"] == 64
    assert {"torch", "timm", "python"} <= set(meta["versions"])
