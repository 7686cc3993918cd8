"""The backbones we define, by name (no torch, no timm: ``ssl-transfer list backbones`` and the recipe read them at
once). Built in :mod:`ssl_transfer.backbones` and registered with timm in :mod:`ssl_transfer.timm_models`."""

# small CNNs: channel widths of the three stages (embed_dim = the last)
SMALL_CNN_WIDTHS: dict[str, tuple[int, int, int]] = {
    "cnn_tiny": (16, 32, 64),
    "cnn_small": (32, 64, 128),
    "cnn_base": (64, 128, 256),
}
# timm's ResNets with the CIFAR stem (3x3 stride-1 convolution, no max-pool): name -> embed_dim
CIFAR_RESNETS: dict[str, int] = {"resnet18_cifar": 512, "resnet50_cifar": 2048}
