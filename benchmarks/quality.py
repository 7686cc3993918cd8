"""Every pretext method at a fixed epoch budget on MNIST, the CIFAR-10 subset and the 50k CIFAR-10 JPEGs: kNN and
linear-probe accuracy, time per epoch, and (50k) the online monitor's kNN after every epoch.

    python benchmarks/quality.py                                  # mnist and cifar (subset), all methods
    python benchmarks/quality.py --datasets cifar50k              # 50k JPEG training images, 1k exact test images
    python benchmarks/quality.py --datasets cifar --methods simclr,byol

``cifar50k`` trains on the 50,000 CIFAR-10 training JPEGs of ``../shared/datasets/cifar10_train_jpeg.tar.gz``
(extracted once to ``--data-dir``, decoded once into memory) and evaluates on the exact 1,000 test images of
``cifar10_subset.npz``, with each method's bundled ``recipes/<method>_cifar10.yaml`` at its own settings and
``cnn_small`` (a method that needs a ViT, MAE: the recipe's ViT with 4 blocks); only the epoch budget is set
(``--epochs-cifar50k``). Two-view methods should reach 60% kNN.

Each method runs its bundled recipe (``recipes/<method>_mnist.yaml``, ``recipes/<method>_cifar10.yaml`` pointed
at ``../shared/datasets/cifar10_subset.npz``) with only the budget changed (``--epochs-*``, warm-up 1 epoch on
MNIST and 2 on CIFAR; CIFAR uses ``cnn_small`` instead of the recipe's ``cnn_base``, or for a method that needs a
ViT the recipe's ViT with 4 blocks instead of 12), default trainer settings
(precision auto, channels_last), then the shared evaluator on the dataset's test split: FAISS kNN (cosine,
k=20, T=0.07) and a linear probe on frozen, standardised features (L-BFGS logistic regression, its L2 penalty
chosen on a 20% validation split). A randomly initialised encoder of each architecture used is a reference row.
Seconds per epoch is the median of the run's epochs (``train/epoch_time_s``; the first includes warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cifar_data import cifar10_overrides  # noqa: E402
from benchmarks.common import (
    TEACHER_METHOD,
    command_line,
    git_rev,
    machine,
    machine_tags,
    markdown_table,
    method_names,
    print_section,
    teacher_override,
    with_teacher_first,
    write_section,
)  # noqa: E402
from benchmarks.stores import update_json  # noqa: E402
from ssl_transfer.backbones import build_backbone  # noqa: E402
from ssl_transfer.data import build_data  # noqa: E402
from ssl_transfer.evaluation.protocol import evaluate  # noqa: E402
from ssl_transfer.methods import METHODS  # noqa: E402
from ssl_transfer.recipe import load_recipe  # noqa: E402
from ssl_transfer.train import headline, pretrain  # noqa: E402
from ssl_transfer.training.metrics_log import read_metrics  # noqa: E402

STORE = Path(__file__).parent / "results" / "quality.json"


@dataclass(frozen=True)
class Dataset:
    name: str
    recipe_suffix: str
    overrides: tuple[str, ...]


DATASETS = {
    "mnist": Dataset("mnist", "mnist", ("optim.warmup_epochs=1",)),
    "cifar": Dataset(
        "cifar",
        "cifar10",
        (
            "data.source=npz",
            "data.path=../shared/datasets/cifar10_subset.npz",
            "optim.warmup_epochs=2",
        ),
    ),
}


def scores(result: dict) -> dict:
    knn, lin = headline(result, "knn"), headline(result, "linear")
    return {"knn_top1": knn["top1"], "linear_top1": lin["top1"]}


def dataset(name: str, data_dir: Path) -> Dataset:
    if name == "cifar50k":  # the recipe's own warm-up (a fraction of the run) and settings; only the budget is set
        return Dataset("cifar50k", "cifar10", tuple(cifar10_overrides(data_dir)))
    return DATASETS[name]


def small_backbone(ds: Dataset, method: str) -> list[str]:
    """The CPU-sized backbone of a CIFAR run: ``cnn_small`` for the recipes' ``cnn_base``; for a method that
    needs a ViT (MAE), the recipe's ViT with 4 blocks (as the MNIST recipes and the parity benchmark). MNIST
    recipes are small already."""
    if ds.name == "mnist":
        return []
    return ["backbone.kwargs.depth=4"] if METHODS.get(method).needs_vit else ["backbone.name=cnn_small"]


def backbone_label(recipe) -> str:
    """``cnn_small``, or ``vit_tiny_patch16_224 (patch_size 4, global_pool avg, depth 4)``: a reference row's key."""
    kw = ", ".join(f"{k} {v}" for k, v in recipe.backbone.kwargs.items())
    return f"{recipe.backbone.name} ({kw})" if kw else recipe.backbone.name


def run_method(ds: Dataset, method: str, epochs: int, out_dir: Path, seed: int) -> dict:
    overrides = [
        *ds.overrides,
        *small_backbone(ds, method),
        f"trainer.max_epochs={epochs}",
        f"output_dir={out_dir}",
        f"name={ds.name}-{method}",
        f"seed={seed}",
        "logging.wandb=disabled",
        "logging.plots=false",
        "trainer.progress_bar=false",
        *teacher_override(method, out_dir / f"{ds.name}-{TEACHER_METHOD}"),
    ]
    recipe = load_recipe(f"{method}_{ds.recipe_suffix}", overrides)
    t0 = time.perf_counter()
    res = pretrain(recipe, overwrite=True)
    seconds = time.perf_counter() - t0
    records = read_metrics(res.run_dir / "metrics.jsonl")
    epoch_times = [r["train/epoch_time_s"] for r in records if "train/epoch_time_s" in r]
    ips = [r["train/images_per_s"] for r in records if "train/images_per_s" in r]
    result = evaluate(res.run_dir, recipe.data, protocols=["knn", "linear"], seeds=[seed])
    curve = [
        {"epoch": r["epoch"] + 1, "knn_top1": r["monitor/knn_top1"], "effective_rank": r["monitor/effective_rank"]}
        for r in records
        if "monitor/knn_top1" in r
    ]
    return {
        "method": method,
        "backbone": backbone_label(recipe),
        "augment": recipe.augment.preset,
        "epochs": epochs,
        "batch_size": recipe.data.batch_size,
        "train_images": len(res.data.train),
        "test_images": len(res.data.test),
        "precision": res.precision,
        "pretrain_seconds": round(seconds, 1),
        "epoch_seconds": round(statistics.median(epoch_times), 2),
        "images_per_s": round(statistics.median(ips), 1),
        "num_views": METHODS.get(method).num_views,
        "monitor": curve,
        **scores(result),
    }


def random_init(ds: Dataset, method: str, seed: int) -> dict:
    """kNN and linear probe of a randomly initialised encoder: the backbone ``method`` runs with on ``ds``."""
    recipe = load_recipe(f"{method}_{ds.recipe_suffix}", [*ds.overrides, *small_backbone(ds, method)])
    torch.manual_seed(seed)
    enc = build_backbone(recipe.backbone.name, build_data(recipe.data).input_shape, kwargs=recipe.backbone.kwargs)
    label = backbone_label(recipe)
    return {
        "method": f"random-init {label} (reference)",
        "backbone": label,
        **scores(evaluate(enc, recipe.data, protocols=["knn", "linear"], seeds=[seed])),
    }


def backbones_of(d: dict, methods: list[str]) -> dict[str, str]:
    """backbone label -> one of ``methods`` (as stored in a dataset's entry ``d``) that ran with it."""
    out: dict[str, str] = {}
    for m in methods:
        if m in d["methods"]:
            out.setdefault(d["methods"][m]["backbone"], m)
    return out


def set_reference(d: dict, ref: dict) -> None:
    """Store a random-init row under its backbone (and drop the single row older stores kept)."""
    d.pop("reference", None)
    d.setdefault("references", {})[ref["backbone"]] = ref


def batch_label(methods: dict[str, dict]) -> str:
    """The batch size of a dataset's rows: ``batch 256``, or ``batch 256 (dino 128)`` for the recipes that differ
    from the most common one."""
    sizes = {m: r["batch_size"] for m, r in methods.items()}
    common = max(sorted(set(sizes.values())), key=list(sizes.values()).count)
    others = ", ".join(f"{m} {b}" for m, b in sizes.items() if b != common)
    return f"batch {common}" + (f" ({others})" if others else "")


def dataset_rows(d: dict) -> list[tuple[str | int, dict]]:
    """A dataset entry's rows in table order: each method as registered, then the random-init rows (by index)."""
    refs = list(d.get("references", {}).values()) or ([d["reference"]] if "reference" in d else [])
    out: list[tuple[str | int, dict]] = [(m, d["methods"][m]) for m in METHODS.names() if m in d["methods"]]
    return out + list(enumerate(refs))


def precision_text(methods: dict[str, dict]) -> str:
    """The training precision of a dataset's rows: ``precision bf16-mixed``, or ``precision bf16-mixed (32-true:
    mae, vae)`` where rows ran at another (precision ``auto``: float32 on a CPU without native bf16)."""
    order = {m: i for i, m in enumerate(METHODS.names())}
    by = {m: methods[m].get("precision", "?") for m in sorted(methods, key=lambda m: order.get(m, len(order)))}
    common = max(sorted(set(by.values())), key=list(by.values()).count)
    others: dict[str, list[str]] = {}
    for m, p in by.items():
        if p != common:
            others.setdefault(p, []).append(m)
    rest = "; ".join(f"{p}: {', '.join(ms)}" for p, ms in sorted(others.items()))
    return f"precision {common}" + (f" ({rest})" if rest else "")


def render(store: dict, command: str) -> None:
    parts = []
    every = [r for d in store["datasets"].values() for _, r in dataset_rows(d)]
    tags, legend = machine_tags([[r["machine"]] if r.get("machine") else [] for r in every])
    tag_of = {id(r): t for r, t in zip(every, tags)}
    for name, d in store["datasets"].items():
        rows = []
        main = statistics.mode(r["backbone"] for r in d["methods"].values())  # the backbone most rows share
        for m, r in dataset_rows(d):
            if not isinstance(m, str):
                rows.append(
                    [r["method"], "-", "-", "-", "-", f"{100 * r['knn_top1']:.2f}", f"{100 * r['linear_top1']:.2f}", ""]
                )
            else:
                curve = " ".join(f"{100 * c['knn_top1']:.0f}" for c in r.get("monitor", []))
                rows.append(
                    [
                        m if r["backbone"] == main else f"{m} ({r['backbone']})",
                        r["augment"],
                        str(r["epochs"]),
                        f"{r['epoch_seconds']:.1f}",
                        f"{r['images_per_s']:.0f}",
                        f"{100 * r['knn_top1']:.2f}",
                        f"{100 * r['linear_top1']:.2f}",
                        curve or "-",
                    ]
                )
            rows[-1].append(tag_of[id(r)])
        first = next(iter(d["methods"].values()))
        table = markdown_table(
            [
                "method",
                "augment",
                "epochs",
                "s/epoch",
                "img/s",
                "kNN top-1 %",
                "linear top-1 %",
                "monitored kNN % (before training, then each epoch)",
                "machine",
            ],
            rows,
        )
        revs = sorted({r.get("git", store.get("legacy_git", "?")) for r in d["methods"].values()})
        heading = (
            f"### {name}: {main}, {first['train_images']:,} training / {first['test_images']:,} test "
            f"images, {batch_label(d['methods'])}, {precision_text(d['methods'])} (git {', '.join(revs)})"
        )
        parts.append(f"""{heading}

{table}
""")
    body = f"""## Every method at a fixed epoch budget: kNN and linear probe, time per epoch (issues 6, 12)

Machines (the machine column): {legend}.

Seed {store["seed"]}; each dataset's rows name the commit that produced them. Bundled recipes with only the budget
changed (see `benchmarks/quality.py`: MNIST `recipes/<method>_mnist.yaml`; CIFAR-10 subset
`recipes/<method>_cifar10.yaml` on `../shared/datasets/cifar10_subset.npz` with `cnn_small` (MAE: its ViT with 4
blocks, against a random ViT of its own); cifar50k: the 50,000
training JPEGs, decoded once into memory, tested on the subset's exact 1,000 test images, recipes at their own
warm-up); default trainer settings, so precision `auto`: bf16-mixed on a CPU with native bf16, float32 (32-true)
on one without, 2-4x slower per epoch (each heading names its rows' precision; the machines say which CPU).
The last column is the online monitor's two-fold kNN within 1,000 held-out images (before training, then each
epoch): its bank is 500 images, so it reads below the final kNN whose bank is the whole training set. kNN: FAISS,
cosine, k=20, T=0.07. Linear: L2-regularised logistic regression (L-BFGS) on frozen standardised features, the
penalty chosen on a 20% validation split. s/epoch and
img/s: median over the run's epochs. Single-view methods (ae, dae, vae) push half as many images through the
encoder per step as the two-view ones.

Command: `{command}`

{chr(10).join(parts)}
"""
    write_section("quality", body)
    plot_curves(store)


def plot_curves(store: dict) -> None:
    """benchmarks/quality_<dataset>_knn.png: the monitor's kNN against epoch, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, d in store["datasets"].items():
        curves = {m: r["monitor"] for m, r in d["methods"].items() if r.get("monitor")}
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for m, c in curves.items():
            ax.plot([p["epoch"] for p in c], [100 * p["knn_top1"] for p in c], "o-", ms=3, label=m)
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel("monitored kNN top-1 % (two-fold, held-out)")
        ax.set_title(f"{name}: representation quality while training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(Path(__file__).parent / f"quality_{name}_knn.png", dpi=110)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mnist,cifar")
    ap.add_argument("--methods", default=",".join(METHODS.names()))
    ap.add_argument("--epochs-mnist", type=int, default=2)
    ap.add_argument("--epochs-cifar", type=int, default=20)
    ap.add_argument("--epochs-cifar50k", type=int, default=20)
    ap.add_argument(
        "--data-dir", default="benchmarks/runs/cifar10_jpeg", help="where cifar50k's images are extracted (git-ignored)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--runs-dir", help="keep the runs (encoders, metrics) in RUNS_DIR/<dataset>-<method>; default: dropped"
    )
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument(
        "--reference", action="store_true", help="recompute the random-init row even when the store has one"
    )
    args = ap.parse_args()
    methods = method_names(args.methods)
    rev, host = git_rev(), machine()  # one process, one machine
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.runs_dir or tmp)
        for name in args.datasets.split(","):
            ds = dataset(name, Path(args.data_dir))
            epochs = {"mnist": args.epochs_mnist, "cifar": args.epochs_cifar, "cifar50k": args.epochs_cifar50k}[name]
            for m in with_teacher_first(methods, out_dir / f"{ds.name}-{TEACHER_METHOD}"):
                r = {**run_method(ds, m, epochs, out_dir, args.seed), "git": rev, "machine": host}
                update_store(name, lambda d, m=m, r=r: d["methods"].__setitem__(m, r), seed=args.seed)
                print(
                    f"[{name}] {m:12s} kNN {100 * r['knn_top1']:.2f}%  linear {100 * r['linear_top1']:.2f}%  "
                    f"{r['epoch_seconds']:.1f} s/epoch  {r['images_per_s']:.0f} img/s",
                    flush=True,
                )
            stored = json.loads(STORE.read_text())["datasets"][name]
            for label, m in backbones_of(stored, methods).items():  # one random-init row per backbone used
                if stored.get("references", {}).get(label, {}).get("git") != rev or args.reference:
                    ref = {**random_init(ds, m, args.seed), "git": rev, "machine": host}
                    update_store(name, lambda d, ref=ref: set_reference(d, ref), seed=args.seed)
    if not args.no_render:
        render(json.loads(STORE.read_text()), command_line("quality.py", ap, args))
        print_section("quality")


def update_store(dataset_name: str, change, seed: int) -> None:
    """Apply ``change`` to the dataset's entry of the store, re-read and written back under the store's lock
    (:func:`benchmarks.stores.update_json`): several processes may fill one store side by side."""

    def apply(store: dict) -> None:
        store.setdefault("datasets", {})
        store.update(git=git_rev(), seed=seed)
        change(store["datasets"].setdefault(dataset_name, {"methods": {}}))

    update_json(STORE, apply)


if __name__ == "__main__":
    main()
