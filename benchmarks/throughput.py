"""Pretraining throughput of our SimCLR against a reference loop written directly with lightly, side by side.

    python benchmarks/throughput.py                          # MNIST (cnn_tiny) and CIFAR-10 subset (cnn_small)
    python benchmarks/throughput.py --workloads mnist --seeds 0

Per workload, all in this one process, alternating per seed:

* ``lightly reference``: lightly's per-image PIL ``SimCLRTransform`` in a torch DataLoader (the faster of the
  ``--ref-workers`` counts, chosen by a short probe), the same backbone with lightly's ``SimCLRProjectionHead``,
  lightly's ``NTXentLoss``, two forward passes per step as in lightly's examples, float32.
* ``ours``: ``ssl_transfer.pretrain`` with its defaults (uint8 arrays in memory, batched kornia augmentation,
  channels_last, bf16 autocast where the device has native bf16, losses in float32), plus ``ours, float32``
  (``trainer.precision=32-true``) to separate the data pipeline's gain from bf16's.
* ``model-only ceiling``: forward, backward and optimizer step on fixed, already augmented views, with exactly
  the settings of the run it bounds (no data loading, no augmentation, no Lightning).

Both pipelines get the same backbone, projection head, loss and temperature, batch size, input size, data,
augmentation parameters, optimizer and schedule, and the same number of epochs. Images/s counts the steps after
the first ``--warmup`` of each run, epoch boundaries included (loader restarts, our checkpoint writes). After
training, every encoder goes through the same FAISS kNN (k=20, T=0.07) on the workload's test set.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, git_rev, machine, markdown_table, print_section, save_json, write_section  # noqa: E402
from ssl_transfer.backbones import build_backbone  # noqa: E402
from ssl_transfer.data import build_data  # noqa: E402
from ssl_transfer.evaluation import extract_features, knn_classify  # noqa: E402
from ssl_transfer.export import load_encoder  # noqa: E402
from ssl_transfer.methods import build_method  # noqa: E402
from ssl_transfer.recipe import Recipe, load_recipe  # noqa: E402
from ssl_transfer.train import pretrain  # noqa: E402
from ssl_transfer.training.optim import build_optimizer, build_scheduler  # noqa: E402
from ssl_transfer.training.performance import to_channels_last  # noqa: E402

STORE = Path(__file__).parent / "results" / "throughput.json"


@dataclass(frozen=True)
class Workload:
    """One dataset + backbone, and the augmentation both pipelines apply (ours as recipe fields, lightly's as
    SimCLRTransform arguments with the same meaning)."""

    name: str
    path: str
    backbone: str
    epochs: int
    ours_augment: dict
    lightly_augment: dict


WORKLOADS = {
    "mnist": Workload(
        "mnist",
        "../shared/datasets/mnist.npz",
        "cnn_tiny",
        1,
        # the digits preset without its affine shift/zoom, which SimCLRTransform has no equivalent for
        {
            "crop_scale": [0.5, 1.0],
            "rotate_degrees": 15.0,
            "color_jitter": 0.5,
            "jitter": [0.4, 0.4, 0.0, 0.0],
            "blur": 0.2,
        },
        {
            "min_scale": 0.5,
            "hf_prob": 0.0,
            "rr_prob": 1.0,
            "rr_degrees": 15.0,
            "cj_prob": 0.5,
            "cj_strength": 1.0,
            "cj_bright": 0.4,
            "cj_contrast": 0.4,
            "cj_sat": 0.0,
            "cj_hue": 0.0,
            "random_gray_scale": 0.0,
            "gaussian_blur": 0.2,
        },
    ),
    "cifar": Workload(
        "cifar",
        "../shared/datasets/cifar10_subset.npz",
        "cnn_small",
        10,
        {"preset": "cifar"},  # crop (0.08, 1), flip 0.5, jitter 0.8 x (0.4, 0.4, 0.2, 0.1), grayscale 0.2, no blur
        {
            "min_scale": 0.08,
            "hf_prob": 0.5,
            "cj_prob": 0.8,
            "cj_strength": 1.0,
            "cj_bright": 0.4,
            "cj_contrast": 0.4,
            "cj_sat": 0.2,
            "cj_hue": 0.1,
            "random_gray_scale": 0.2,
            "gaussian_blur": 0.0,
        },
    ),
}


def recipe_for(w: Workload, seed: int, out_dir: Path, name: str, extra: list[str]) -> Recipe:
    return load_recipe(
        {
            "name": name,
            "output_dir": str(out_dir),
            "seed": seed,
            "data": {"source": "npz", "path": w.path, "batch_size": 256},
            "backbone": {"name": w.backbone},
            "method": {"name": "simclr"},  # projection 512 -> 128 with BatchNorm, NT-Xent at T = 0.2
            "augment": w.ours_augment,
            "optim": {"lr": 2e-3, "warmup_epochs": 1},
            "trainer": {"max_epochs": w.epochs, "progress_bar": False},
            "logging": {"wandb": "disabled", "plots": False},
        },
        extra,
    )


class StepClock(pl.Callback):
    """perf_counter at the start of every training step, and once after the last one."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *_args) -> None:
        self.times.append(time.perf_counter())

    def on_train_end(self, *_args) -> None:
        self.times.append(time.perf_counter())


def images_per_s(times: list[float], batch: int, warmup: int) -> float:
    """Images per second over the steps after the first ``warmup`` (``times``: one stamp per step start + end)."""
    t = times[warmup:]
    return batch * (len(t) - 1) / (t[-1] - t[0])


class PilViews(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) arrays served as PIL images through a per-image transform, as a user of lightly writes it."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform
        self.mode = "L" if images.shape[1] == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        a = self.images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(a[..., 0] if self.mode == "L" else a, mode=self.mode)
        return self.transform(img)


class LightlySimCLR(nn.Module):
    """lightly's SimCLR example model: backbone + SimCLRProjectionHead."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.embed_dim, 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))


def lightly_loader(w: Workload, data, seed: int, workers: int) -> torch.utils.data.DataLoader:
    transform = SimCLRTransform(
        input_size=data.image_size[0], normalize={"mean": data.mean, "std": data.std}, **w.lightly_augment
    )
    return torch.utils.data.DataLoader(
        PilViews(data.train.images, transform),
        batch_size=256,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def run_reference(
    w: Workload, data, recipe: Recipe, workers: int, max_steps: int | None = None
) -> tuple[nn.Module, list[float]]:
    """lightly's SimCLR training loop; returns the backbone and the step clock."""
    torch.manual_seed(recipe.seed)
    model = LightlySimCLR(build_backbone(w.backbone, data.input_shape))
    criterion = NTXentLoss(temperature=0.2)
    loader = lightly_loader(w, data, recipe.seed, workers)
    optimizer = build_optimizer(model, recipe.optim)
    total = w.epochs * len(loader) if max_steps is None else max_steps
    scheduler = build_scheduler(optimizer, recipe.optim, total, len(loader))
    times: list[float] = []
    step = 0
    model.train()
    while step < total:
        for x0, x1 in loader:
            times.append(time.perf_counter())
            z0, z1 = model(x0), model(x1)
            loss = criterion(z0, z1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= total:
                break
    times.append(time.perf_counter())
    return model.backbone, times


def model_only(w: Workload, data, recipe: Recipe, steps: int, reference: bool, precision: str = "32-true") -> float:
    """Images/s of forward + backward + optimizer step on fixed normalised views: our method in ``precision``
    (the one its run trained in) with the recipe's memory format, or (``reference``) the lightly model in
    float32 with two passes."""
    torch.manual_seed(0)
    backbone = build_backbone(w.backbone, data.input_shape)
    views = [torch.randn(256, *data.input_shape) for _ in range(2)]
    if reference:
        model = LightlySimCLR(backbone)
        criterion = NTXentLoss(temperature=0.2)
        step_fn = lambda: criterion(model(views[0]), model(views[1]))  # noqa: E731
        autocast = False
    else:
        model = build_method(recipe.method, backbone, data.input_shape, data.mean, data.std)
        if recipe.trainer.channels_last:
            to_channels_last(model)
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        step_fn = lambda: model.training_step(views)["loss"]  # noqa: E731
        autocast = precision == "bf16-mixed"
    optimizer = build_optimizer(model, recipe.optim)
    times = []
    for _ in range(steps + 3):
        times.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = step_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    times.append(time.perf_counter())
    return images_per_s(times, 256, 3)


def knn_top1(encoder: nn.Module, data, preprocess=None) -> float:
    kw = {"preprocess": preprocess} if preprocess is not None else {"mean": data.mean, "std": data.std}
    ftr, ytr = extract_features(encoder, data.train, **kw)
    fte, yte = extract_features(encoder, data.test, **kw)
    return knn_classify(ftr, ytr, fte, yte, k=20, temperature=0.07)["top1"]


def run_workload(
    w: Workload, seeds: list[int], ref_workers: list[int], warmup: int, ceiling_steps: int, out_dir: Path
) -> dict:
    base = recipe_for(w, 0, out_dir, "probe", [])
    data = build_data(base.data)
    steps_per_epoch = len(data.train) // 256
    probe_steps = min(30, steps_per_epoch * w.epochs)
    probe = {}
    for n in ref_workers:  # the reference gets its best worker count on this machine
        _, t = run_reference(w, data, base, n, max_steps=probe_steps)
        probe[n] = images_per_s(t, 256, min(warmup, probe_steps - 2))
        print(f"[{w.name}] probe: lightly reference, {n} workers: {probe[n]:.0f} img/s", flush=True)
    workers = max(probe, key=probe.get)
    variants = {"ours": [], "ours, float32": ["trainer.precision=32-true"]}
    runs: dict[str, list[dict]] = {"lightly reference": [], **{k: [] for k in variants}}
    for seed in seeds:  # each pipeline's model-only ceiling is timed right after its run (machines drift)
        recipe = recipe_for(w, seed, out_dir, "ref", [])
        backbone, t = run_reference(w, data, recipe, workers)
        runs["lightly reference"].append(
            {
                "seed": seed,
                "images_per_s": images_per_s(t, 256, warmup),
                "knn_top1": knn_top1(backbone, data),
                "ceiling": model_only(w, data, recipe, ceiling_steps, reference=True),
            }
        )
        print(f"[{w.name}] seed {seed} lightly reference: {runs['lightly reference'][-1]}", flush=True)
        for label, extra in variants.items():
            recipe = recipe_for(w, seed, out_dir, f"ours-{len(extra)}", extra)
            clock = StepClock()
            res = pretrain(recipe, overwrite=True, callbacks=[clock])
            enc = load_encoder(res.run_dir)
            runs[label].append(
                {
                    "seed": seed,
                    "images_per_s": images_per_s(clock.times, 256, warmup),
                    "knn_top1": knn_top1(enc, data, enc.preprocess),
                    "precision": res.precision,
                    "ceiling": model_only(w, data, recipe, ceiling_steps, reference=False, precision=res.precision),
                }
            )
            print(f"[{w.name}] seed {seed} {label}: {runs[label][-1]}", flush=True)
    return {
        "workload": w.name,
        "data": w.path,
        "backbone": w.backbone,
        "epochs": w.epochs,
        "steps_per_epoch": steps_per_epoch,
        "input_shape": list(data.input_shape),
        "train_images": len(data.train),
        "test_images": len(data.test),
        "precision_ours": runs["ours"][0]["precision"],
        "ref_workers": workers,
        "ref_probe": {str(k): v for k, v in probe.items()},
        "runs": runs,
    }


def render(store: dict, command: str) -> None:
    parts = []
    summary_rows = []
    for w in store["workloads"]:
        ref = w["runs"]["lightly reference"]
        ref_ips = statistics.mean(r["images_per_s"] for r in ref)
        ref_knn = statistics.mean(r["knn_top1"] for r in ref)
        ref_sd = statistics.stdev(r["knn_top1"] for r in ref) if len(ref) > 1 else 0.0
        rows = []
        for label, runs in w["runs"].items():
            ips = statistics.mean(r["images_per_s"] for r in runs)
            knn = statistics.mean(r["knn_top1"] for r in runs)
            ceiling = statistics.mean(r["ceiling"] for r in runs)
            rows.append(
                [
                    label,
                    f"{ips:.0f}",
                    f"{ips / ref_ips:.2f}x",
                    f"{ceiling:.0f}",
                    f"{100 * ips / ceiling:.0f}%",
                    " / ".join(f"{100 * r['knn_top1']:.2f}" for r in runs),
                    f"{100 * knn:.2f}",
                    f"{100 * (knn - ref_knn):+.2f}",
                ]
            )
            if label == "ours":
                summary_rows.append(
                    [
                        w["workload"],
                        w["backbone"],
                        f"{ips / ref_ips:.2f}x",
                        f"{100 * ips / ceiling:.0f}%",
                        f"{100 * (knn - ref_knn):+.2f}",
                        f"{100 * ref_sd:.2f}",
                    ]
                )
        table = markdown_table(
            [
                "pipeline",
                "img/s",
                "vs lightly",
                "model-only img/s",
                "of ceiling",
                "kNN top-1 % per seed",
                "mean",
                "vs lightly (pt)",
            ],
            rows,
        )
        probe = ", ".join(f"{k} workers {v:.0f} img/s" for k, v in w["ref_probe"].items())
        shape = "x".join(map(str, w["input_shape"]))
        heading = (
            f"### {w['workload']}: {w['backbone']}, {shape}, {w['train_images']:,} training images, "
            f"{w['epochs']} epoch(s) of {w['steps_per_epoch']} steps, batch 256"
        )
        parts.append(f"""{heading}

{table}

Our precision: {w["precision_ours"]}. Reference DataLoader workers: {w["ref_workers"]} (probe: {probe}).
kNN on the {w["test_images"]:,} test images.
""")
    summary = markdown_table(
        [
            "workload",
            "backbone",
            "ours vs lightly img/s",
            "ours of its ceiling",
            "kNN ours - lightly (pt)",
            "lightly kNN seed sd (pt)",
        ],
        summary_rows,
    )
    body = f"""## Pretraining throughput: ours vs a lightly reference loop (issue 6)

Side by side in one process on {store["machine"]} (git {store["git"]}), seeds {store["seeds"]}.
The reference is lightly's SimCLR example loop: per-image PIL `SimCLRTransform` in a DataLoader, lightly's
`SimCLRProjectionHead` and `NTXentLoss`, two forward passes per step, float32. Both sides share backbone,
projection head (512 -> 128, BatchNorm), NT-Xent at T=0.2, batch 256, input size, data, augmentation parameters,
AdamW (lr 2e-3, 1 warm-up epoch, cosine) and epochs. Images/s: steps after the first {store["warmup"]} of each
run, epoch boundaries included. Model-only: forward + backward + AdamW on fixed views with that row's
settings (ours: channels_last, its precision, one pass per view; reference: float32, two passes). kNN: FAISS,
cosine, k=20, T=0.07, same evaluator for all encoders.

Command: `{command}`

{summary}

{chr(10).join(parts)}
"""
    write_section("throughput", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="mnist,cifar")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ref-workers", default="0,2", help="DataLoader worker counts to probe for the reference")
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of each run's images/s")
    ap.add_argument("--ceiling-steps", type=int, default=30, help="steps timed for each model-only ceiling")
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    store = {"machine": machine(), "git": git_rev(), "seeds": seeds, "warmup": args.warmup, "workloads": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            store["workloads"].append(
                run_workload(
                    WORKLOADS[name],
                    seeds,
                    [int(n) for n in args.ref_workers.split(",")],
                    args.warmup,
                    args.ceiling_steps,
                    Path(tmp),
                )
            )
    save_json(STORE, store)
    if not args.no_render:
        render(store, command_line("throughput.py", ap, args))
        print_section("throughput")


if __name__ == "__main__":
    main()
