import pytest
import torch

from ssl_transfer.backbones import build_backbone
from ssl_transfer.methods import METHODS, build_method
from ssl_transfer.methods.autoencoder import AEConfig, ConvDecoder, DAEConfig


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 96, 96), (1, 20, 13)])
def test_decoder_reproduces_input_shape(shape):
    dec = ConvDecoder(64, shape)
    assert dec(torch.randn(2, 64)).shape == (2, *shape)


def digits_batch(n: int = 64) -> torch.Tensor:
    """A fixed batch of real 8x8 digits, normalised to zero mean and unit std."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None]
    return (x - x.mean()) / x.std()


@pytest.mark.parametrize("cfg", [AEConfig(), DAEConfig(), AEConfig(loss="l1")])
def test_loss_falls_on_a_fixed_batch(cfg):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    m = build_method(cfg, build_backbone("cnn_tiny", shape), shape)
    x = digits_batch()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        out = m.training_step([x])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_ae_loss_is_plain_mse_of_reconstruction():
    shape = (1, 8, 8)
    m = build_method(AEConfig(), build_backbone("cnn_tiny", shape), shape).eval()
    x = torch.randn(4, *shape)
    ref = ((m.decoder(m.encoder(x)) - x) ** 2).mean()
    assert torch.allclose(m.training_step([x])["loss"], ref)


def test_dae_corrupts_input_but_targets_clean_image():
    shape = (1, 16, 16)
    m = build_method(DAEConfig(noise_std=0.0, mask_ratio=0.5), build_backbone("cnn_tiny", shape), shape)
    x = torch.randn(64, *shape)
    xc = m.corrupt(x)
    frac_zero = float((xc == 0).float().mean())
    assert 0.4 < frac_zero < 0.6
    ae = build_method(AEConfig(), build_backbone("cnn_tiny", shape), shape)
    assert torch.equal(ae.corrupt(x), x)


def test_registry_names_and_visualize():
    assert {"ae", "dae"} <= set(METHODS.names())
    shape = (1, 8, 8)
    m = build_method(AEConfig(), build_backbone("cnn_tiny", shape), shape)
    grid = m.visualize(torch.randn(5, *shape))["reconstructions"]
    assert grid.shape == (10, *shape)


@pytest.mark.parametrize(("export", "dim"), [("mean", 16), ("features", None)])
def test_vae_exports_its_mean_or_the_pooled_features(export, dim, tmp_path):
    """``method.export``: the reloaded encoder outputs the posterior mean (latent_dim) or exactly the backbone's
    pooled features (its width), the mean head then left out."""
    from ssl_transfer.export import load_encoder
    from ssl_transfer.train import pretrain

    run_dir = pretrain(
        {
            "name": f"vae-{export}",
            "output_dir": str(tmp_path),
            "data": {"source": "digits", "limit_train": 64, "batch_size": 32},
            "backbone": {"name": "cnn_tiny"},
            "method": {"name": "vae", "latent_dim": 16, "export": export},
            "trainer": {"max_epochs": 1, "progress_bar": False},
            "logging": {"wandb": "disabled", "plots": False},
            "monitor": {"enabled": False},
        }
    ).run_dir
    enc = load_encoder(run_dir)
    x = torch.randn(5, 1, 8, 8)
    width = build_backbone("cnn_tiny", (1, 8, 8)).num_features
    with torch.no_grad():
        z = enc(x)
    assert z.shape == (5, dim or width) and enc.embed_dim == (dim or width)
    assert (enc.meta.get("head") is None) == (export == "features"), enc.meta.get("head")
