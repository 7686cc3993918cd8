"""The CIFAR-10 protocol recipes against lightly's own CIFAR-10 benchmark loop at an equal budget (for a GPU).

    python benchmarks/protocol_reference.py --data-dir /tmp/cifar --epochs 15            # simclr
    python benchmarks/protocol_reference.py --data-dir /tmp/cifar --epochs 15 --only ours

The reference is the method's model in lightly's ``cifar10_benchmark.py`` (docs/source/getting_started/benchmarks),
trained in a plain loop: lightly's ``ResNetGenerator('resnet-18')`` (3x3 stem, no max-pool), its heads and loss,
SGD lr 0.06 x batch/128 with momentum 0.9 and weight decay 5e-4, cosine annealing over the run's epochs (stepped
per epoch), SimCLR's augmentations without blur (``SimCLRTransform(input_size=32, cj_strength=0.5,
gaussian_blur=0)``) in DataLoader workers, batch 512, bf16 autocast and channels_last on CUDA. Ours is
``protocols/cifar10_<method>_resnet18`` with the same epochs. Both train on the 50,000 CIFAR-10 JPEGs of
``../shared/datasets`` and both encoders go through the same FAISS kNN (k=200, T=0.1, the benchmark's) on the exact
1,000 test images. One seed per call; the result is printed and added to ``benchmarks/results/protocol.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightly.loss import NTXentLoss
from lightly.models import ResNetGenerator
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cifar_data import cifar10_overrides  # noqa: E402
from benchmarks.common import git_rev, machine, save_json  # noqa: E402
from benchmarks.throughput import PilViews  # noqa: E402
from ssl_transfer.data import build_data  # noqa: E402
from ssl_transfer.evaluation import extract_features, knn_classify  # noqa: E402
from ssl_transfer.export import load_encoder  # noqa: E402
from ssl_transfer.recipe import load_recipe  # noqa: E402
from ssl_transfer.train import pretrain  # noqa: E402

STORE = Path(__file__).parent / "results" / "protocol.json"
BATCH = 512


class LightlySimCLR(nn.Module):
    """lightly's CIFAR-10 benchmark SimCLRModel: ResNetGenerator('resnet-18') + SimCLRProjectionHead(512, 512, 128),
    NTXentLoss() (temperature 0.5). As in the benchmark, the backbone is the generator's children but the last, so
    the stem's ReLU (applied in ResNet.forward) is left out."""

    def __init__(self) -> None:
        super().__init__()
        resnet = ResNetGenerator("resnet-18")
        self.backbone = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.projection_head = SimCLRProjectionHead(512, 512, 128)
        self.criterion = NTXentLoss()

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        z0 = self.projection_head(self.backbone(x0))
        z1 = self.projection_head(self.backbone(x1))
        return self.criterion(z0.float(), z1.float())


REFERENCES = {"simclr": LightlySimCLR}


def knn(encoder: nn.Module, data, preprocess=None) -> float:
    kw = {"preprocess": preprocess} if preprocess is not None else {"mean": data.mean, "std": data.std}
    ftr, ytr = extract_features(encoder, data.train, **kw)
    fte, yte = extract_features(encoder, data.test, **kw)
    return knn_classify(ftr, ytr, fte, yte, k=200, temperature=0.1)["top1"]


def run_reference(method: str, data, epochs: int, seed: int) -> tuple[nn.Module, float]:
    """Train lightly's benchmark model in a plain loop; (backbone, seconds)."""
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = REFERENCES[method]().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.06 * BATCH / 128, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    norm = {"mean": data.mean, "std": data.std}
    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0, normalize=norm)
    views = PilViews(data.train.images, transform)
    loader = torch.utils.data.DataLoader(
        views,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=min(16, os.cpu_count() or 1),
        persistent_workers=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        for x0, x1 in loader:
            x0, x1 = (x.to(device, non_blocking=True).to(memory_format=torch.channels_last) for x in (x0, x1))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model.loss(x0, x1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        print(f"reference epoch {epoch + 1}/{epochs}, loss {loss.item():.4f}", flush=True)
    return model.backbone, time.perf_counter() - t0


def run_ours(method: str, overrides: list[str], epochs: int, seed: int, out_dir: Path) -> tuple[nn.Module, float]:
    recipe = load_recipe(
        f"protocols/cifar10_{method}_resnet18",
        [
            *overrides,
            f"trainer.max_epochs={epochs}",
            f"seed={seed}",
            f"output_dir={out_dir}",
            "logging.wandb=disabled",
            "logging.plots=false",
        ],
    )
    t0 = time.perf_counter()
    res = pretrain(recipe, overwrite=True)
    return load_encoder(res.run_dir), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="folder for the extracted CIFAR-10 images (made on first use)")
    ap.add_argument("--method", default="simclr", choices=sorted(REFERENCES))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["ours", "reference"], help="run one side only")
    ap.add_argument("--limit-train", type=int, help="first N training images only (smoke runs)")
    args = ap.parse_args()
    overrides = cifar10_overrides(args.data_dir)
    if args.limit_train:
        overrides.append(f"data.limit_train={args.limit_train}")
    data = build_data(load_recipe(f"protocols/cifar10_{args.method}_resnet18", overrides).data)
    row = {"method": args.method, "epochs": args.epochs, "seed": args.seed, "train_images": len(data.train)}
    row.update(git=git_rev(), machine=machine())
    if args.only != "reference":
        with tempfile.TemporaryDirectory() as tmp:
            enc, row["ours_seconds"] = run_ours(args.method, overrides, args.epochs, args.seed, Path(tmp))
            row["ours_knn"] = knn(enc, data, enc.preprocess)
        print(f"ours: kNN {100 * row['ours_knn']:.2f}% ({row['ours_seconds']:.0f} s)", flush=True)
    if args.only != "ours":
        backbone, row["reference_seconds"] = run_reference(args.method, data, args.epochs, args.seed)
        row["reference_knn"] = knn(backbone, data)
        print(f"reference: kNN {100 * row['reference_knn']:.2f}% ({row['reference_seconds']:.0f} s)", flush=True)
    store = __import__("json").loads(STORE.read_text()) if STORE.exists() else {"runs": []}
    store["runs"].append(row)
    save_json(STORE, store)


if __name__ == "__main__":
    main()
