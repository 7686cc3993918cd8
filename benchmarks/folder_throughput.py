"""Pretraining from an image folder of JPEGs: ours vs LightlyTrain's SimCLR, same folder, backbone, batch, epochs.

The folder: ``--n-train`` CIFAR-10 training JPEGs (equal per class) and the exact 1,000 test images, upsampled once
(bicubic) to each size and saved as JPEG (quality 90) in a temporary folder. Both sides train a ResNet-18
(torchvision's on LightlyTrain's side, timm's identical one on ours, with torchvision's initialisation:
``zero_init_last=False``) with SimCLR (2048-128 projection with
BatchNorm, temperature 0.1, SGD lr 0.3 x batch/256, momentum 0.9, weight decay 1e-4, warm-up over a tenth of
the run, cosine: LightlyTrain's defaults) for ``--epochs`` epochs, with their own default
pipelines: LightlyTrain decodes and augments each image in DataLoader workers (PIL, float32 on CPU); ours lists the
folder, decodes in workers (JPEG draft mode), augments batched on the device, and trains at its automatic precision
(bf16 on CPUs with native bf16), with both views in one forward pass as LightlyTrain does. Images/s: the steps of
the last epoch (LightlyTrain: the sum of its ``profiling/batch_time`` and ``profiling/data_time`` over every step,
logged at each step with ``trainer_args.log_every_n_steps=1``; ours: ``train/epoch_time_s``). kNN: the same
evaluator for both encoders (FAISS, cosine, k=20, T=0.07; bank: the training folder; queries: the 1,000 test images
at the same size), after training and, for scale, at random initialisation (same seed, each side's backbone and
normalisation). LightlyTrain runs in its own virtual environment (AGPL: never imported here). A run a session's end
interrupts resumes from its checkpoint on the next call (both sides); the store records finished runs only.

    python -m venv /tmp/ltvenv && /tmp/ltvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly-train
    python benchmarks/folder_throughput.py --data-dir /tmp/cifar --lightly-train /tmp/ltvenv/bin/lightly-train
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cifar_data import CLASSES, cifar10_folders  # noqa: E402
from benchmarks.common import (  # noqa: E402
    command_line,
    git_rev,
    load_json,
    machine,
    markdown_table,
    pinned_cpus,
    print_section,
    save_json,
    write_section,
)

STORE = Path(__file__).parent / "results" / "folder_throughput.json"
BACKBONE_LT, BACKBONE_OURS = "torchvision/resnet18", "resnet18"
# timm zero-initialises each block's last BatchNorm; torchvision (LightlyTrain's model) does not: without this the
# two start from different random features (kNN 23.6 vs 29.6 at 64 px before any training)
OURS_KWARGS = {"zero_init_last": False}


def make_folder(data_dir: Path, work: Path, size: int, n_train: int) -> tuple[Path, Path]:
    """``work/<size>px-<n_train>/train/<class>/*.jpg`` (n_train/10 per class) and ``.../test/<class>/*.jpg``."""
    from PIL import Image

    train_src, test_src = cifar10_folders(data_dir)
    out = work / f"{size}px-{n_train}"
    if (out / "done").exists():
        return out / "train", out / "test"
    for split, src, per_class in (("train", train_src, n_train // len(CLASSES)), ("test", test_src, None)):
        for c in CLASSES:
            files = sorted((src / c).iterdir())[:per_class]
            (out / split / c).mkdir(parents=True, exist_ok=True)
            for f in files:
                with Image.open(f) as im:
                    big = im.convert("RGB").resize((size, size), Image.BICUBIC)
                big.save(out / split / c / f"{f.stem}.jpg", quality=90)
    (out / "done").touch()
    return out / "train", out / "test"


def run_ours(train: Path, test: Path, size: int, seed: int, args: argparse.Namespace, out: Path) -> dict:
    import torch

    from ssl_transfer.backbones import build_backbone
    from ssl_transfer.evaluation.encoders import wrap_module
    from ssl_transfer.train import last_checkpoint, pretrain
    from ssl_transfer.training.metrics_log import read_metrics

    recipe = {
        "name": f"ours-{size}-{seed}",
        "output_dir": str(out),
        "seed": seed,
        "data": {
            "source": "imagefolder",
            "root": str(train),
            "test_root": str(test),
            "image_size": size,
            "batch_size": args.batch_size,
            "num_workers": args.workers,
        },
        "backbone": {"name": BACKBONE_OURS, "kwargs": OURS_KWARGS},
        "method": {"name": "simclr", "proj_hidden_dim": 2048, "proj_out_dim": 128, "temperature": 0.1},
        # LightlyTrain's SimCLR views: the simclr preset with ImageNet-strength colour jitter (0.8, 0.8, 0.8, 0.2)
        "augment": {"preset": "simclr", "jitter": [0.8, 0.8, 0.8, 0.2]},
        # LightlyTrain's SimCLR optimizer: SGD lr 0.3 x batch/256, momentum 0.9, weight decay 1e-4, linear warm-up
        # over a tenth of the run (at most 10 epochs), then cosine to 0 per step
        "optim": {
            "optimizer": "sgd",
            "lr": 0.3,
            "lr_batch_size": 256,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "warmup_epochs": min(10.0, args.epochs / 10),
            "schedule": "cosine",
        },
        # both views in one pass, one BatchNorm batch over them: what LightlyTrain's SimCLR does
        "trainer": {
            "max_epochs": args.epochs,
            "progress_bar": False,
            "precision": args.precision,
            "joint_views": True,
        },
        "logging": {"wandb": "disabled", "plots": False},
        "monitor": {"enabled": False},
    }
    resume = last_checkpoint(out / recipe["name"]).exists()  # interrupted by a session's end
    res = pretrain(recipe, resume=True) if resume else pretrain(recipe, overwrite=True)
    epochs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "train/images_per_s" in r]
    torch.manual_seed(seed)
    init = build_backbone(BACKBONE_OURS, res.data.input_shape, kwargs=OURS_KWARGS)
    return {
        "images_per_s": float(epochs[-1]["train/images_per_s"]),
        "knn": _knn(res.run_dir, res.data),
        "knn_init": _knn(wrap_module(init, res.data.input_shape, res.data.mean, res.data.std), res.data),
        "precision": res.precision,
    }


def lightly_train_command(run: Path, train: Path, size: int, seed: int, args: argparse.Namespace) -> list[str]:
    """The ``lightly-train pretrain`` command line of one run; it resumes the run in ``run`` when a session's end
    interrupted it (a checkpoint there, the run not in the store)."""
    resume = (run / "checkpoints" / "last.ckpt").exists()  # LightlyTrain's layout
    return [
        args.lightly_train,
        "pretrain",
        f"out={run}",
        f"data={train}",
        f"model={BACKBONE_LT}",
        "method=simclr",
        f"epochs={args.epochs}",
        f"batch_size={args.batch_size}",
        f"num_workers={args.workers}",
        f"seed={seed}",
        "resume_interrupted=true" if resume else "overwrite=true",
        "accelerator=cpu",
        "devices=1",
        f"transform_args.image_size=[{size},{size}]",
        "method_args.temperature=0.1",
        "loggers.tensorboard=null",
        "loggers.jsonl.flush_logs_every_n_steps=1",
        # every step's timing in metrics.jsonl (LightlyTrain logs every 50th step by default: one sample an epoch
        # here, too few for a rate)
        "trainer_args.log_every_n_steps=1",
    ]


LIGHTLY_TRAIN = "/tmp/ltvenv/bin/lightly-train"  # the default executable, in LightlyTrain's own environment
LIGHTLY_TRAIN_SETUP = (
    "python -m venv /tmp/ltvenv && /tmp/ltvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 lightly-train "
    "(its own environment: AGPL, never imported here)"
)


def lightly_train_version(executable: str) -> str:
    """The version of LightlyTrain installed beside ``executable`` (its virtual environment's ``python``); a missing
    executable stops the benchmark with one line before any work."""
    python = Path(executable).parent / "python"
    if not Path(executable).is_file() or not python.is_file():
        raise SystemExit(
            f"folder_throughput.py: no LightlyTrain at {executable} (--lightly-train: the lightly-train executable of "
            f"a virtual environment); make one: {LIGHTLY_TRAIN_SETUP}"
        )
    code = "import importlib.metadata as m; print(m.version('lightly-train'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def run_lightly_train(train: Path, test: Path, size: int, seed: int, args: argparse.Namespace, out: Path) -> dict:
    import torch
    import torchvision

    from ssl_transfer.data import build_data
    from ssl_transfer.evaluation.encoders import IMAGENET_MEAN, IMAGENET_STD, wrap_module
    from ssl_transfer.recipe import load_recipe

    run = out / f"lightly-train-{size}-{seed}"
    cmd = lightly_train_command(run, train, size, seed, args)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lightly-train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    images_per_s, rate_steps = lightly_train_images_per_s(run / "metrics.jsonl", args.batch_size)

    def resnet18() -> torch.nn.Module:
        model = torchvision.models.resnet18()
        model.fc = torch.nn.Identity()
        return model

    torch.manual_seed(seed)
    init = resnet18()
    model = resnet18()
    state = torch.load(run / "exported_models" / "exported_last.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=False)
    folder = {"source": "imagefolder", "root": str(train), "test_root": str(test), "image_size": size}
    data = build_data(load_recipe({"data": folder}).data)
    # LightlyTrain normalises with ImageNet statistics: its encoder is evaluated with them
    return {
        "images_per_s": images_per_s,
        "rate_steps": rate_steps,
        "knn": _knn(wrap_module(model, data.input_shape, IMAGENET_MEAN, IMAGENET_STD), data),
        "knn_init": _knn(wrap_module(init, data.input_shape, IMAGENET_MEAN, IMAGENET_STD), data),
        "precision": "32-true",
    }


def lightly_train_images_per_s(metrics: Path, batch_size: int) -> tuple[float, int]:
    """Images/s over the last epoch of a LightlyTrain run, and how many steps it is measured over: its steps'
    ``profiling/batch_time`` (the step) plus ``profiling/data_time`` (the wait for the batch before it, the epoch's
    loader start included), one row a step; a step logged twice (before and after a resume) counts once, the later
    row."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = {r["step"]: r for r in rows if "profiling/batch_time" in r}
    if not steps:
        raise RuntimeError(f"{metrics}: no profiling/batch_time rows (is trainer_args.log_every_n_steps=1 set?)")
    last_epoch = max(r["epoch"] for r in steps.values())
    last = [r for r in steps.values() if r["epoch"] == last_epoch]
    seconds = sum(r["profiling/batch_time"] + r.get("profiling/data_time", 0.0) for r in last)
    return len(last) * batch_size / seconds, len(last)


def _knn(encoder: Any, data: Any) -> float:
    """kNN top-1 (0-1) of ``encoder`` (a run dir or a wrapped module) on ``data``: one evaluator for both sides."""
    from ssl_transfer.evaluation.protocol import evaluate

    result = evaluate(encoder, data, protocols=["knn"])
    return float(next(r["top1"] for r in result["rows"] if r["protocol"] == "knn"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="/tmp/cifar", help="the 50k CIFAR-10 JPEGs (benchmarks/cifar_data.py)")
    ap.add_argument("--lightly-train", default=LIGHTLY_TRAIN)
    ap.add_argument("--sizes", default="64,128,224")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--precision", default="auto", help="ours: trainer.precision")
    ap.add_argument("--work", default=None, help="folder for the upsampled images and runs (default: temporary)")
    args = ap.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])  # git_rev() names the code commit of this checkout
    work = Path(args.work or tempfile.mkdtemp(prefix="folder_throughput-"))
    store = studies(load_json(STORE))
    key = study_key(_settings(args))
    study = store["studies"].setdefault(key, {"settings": _settings(args), "runs": {}, "sizes": {}})
    about = {
        "git": git_rev(),
        "machine": machine(),
        "lightly_train": lightly_train_version(args.lightly_train),
        "cpus": _pin(),
        "command": command_line("folder_throughput.py", ap, args, skip=("work", "lightly_train")),
    }
    runs_dir = work / "runs" / f"{key}-{about['git']}"  # a run resumes only within its study and commit
    for size in [int(s) for s in args.sizes.split(",")]:
        start_size(study, size, about)
        train, test = make_folder(Path(args.data_dir), work, size, args.n_train)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for side, fn in (("lightly-train", run_lightly_train), ("ours", run_ours)):
                run_key = f"{size}/{seed}/{side}"
                if run_key in study["runs"]:
                    continue
                t0 = time.perf_counter()
                study["runs"][run_key] = {**fn(train, test, size, seed, args, runs_dir), "wall_s": 0.0}
                study["runs"][run_key]["wall_s"] = time.perf_counter() - t0
                print(run_key, study["runs"][run_key], flush=True)
                save_json(STORE, store)
    render(store)


def study_key(settings: dict) -> str:
    """One study per training budget: ``n4000-e10-b64-w2-auto``."""
    return "n{n_train}-e{epochs}-b{batch_size}-w{workers}-{precision}".format(**settings)


def start_size(study: dict, size: int, about: dict) -> None:
    """Before measuring ``size`` at ``about["git"]``: its runs from another code commit are dropped (one size's
    runs come from one commit; the other sizes keep theirs), and ``about`` becomes the size's record."""
    if study["sizes"].get(str(size), {}).get("git") != about["git"]:
        study["runs"] = {k: v for k, v in study["runs"].items() if not k.startswith(f"{size}/")}
    study["sizes"][str(size)] = about


def studies(store: dict | None) -> dict:
    """The store as ``{"studies": {study_key: study}}``, each study ``{"settings", "runs", "sizes"}`` where
    ``sizes[size]`` names the code commit, machine, CPU pin and command of that size's runs (one commit per size:
    another commit measures a size afresh and keeps the others). Older stores are converted: one study at the top
    level (no command recorded: it ran at the defaults of its time) becomes the only study, and a study with one
    commit for all its runs gives it to each of its sizes."""
    if not store:
        return {"studies": {}}
    if "studies" not in store:
        old = {"command": "python benchmarks/folder_throughput.py", **store}
        store = {"studies": {study_key(old["settings"]): old}}
    for study in store["studies"].values():
        if "sizes" not in study:
            about = {k: study.pop(k, None) for k in ("git", "machine", "cpus", "command")}
            study["sizes"] = {k.split("/")[0]: dict(about) for k in study["runs"]}
    return store


def _pin() -> str | None:
    """``pinned_cpus()`` as a ``taskset -c`` list, or None."""
    pin = pinned_cpus()
    return ",".join(map(str, pin)) if pin else None


def _settings(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("n_train", "epochs", "batch_size", "workers", "precision")}


def knn_cell(runs: list[dict]) -> str:
    """``mean ± sd (mean at random init)`` of the runs' kNN, in %; one run has no sd: ``value (init)``."""
    knn = [100 * r["knn"] for r in runs]
    init = [100 * r["knn_init"] for r in runs if "knn_init" in r]
    out = f"{statistics.mean(knn):.1f}" + (f" ± {statistics.stdev(knn):.1f}" if len(knn) > 1 else "")
    return out + (f" ({statistics.mean(init):.1f})" if init else "")


def study_rows(study: dict) -> tuple[list[list[str]], float | None]:
    """One table row per image size of ``study`` (sizes that both sides ran) and its lowest per-seed ratio."""
    rows, worst = [], None
    for size in sorted({int(k.split("/")[0]) for k in study["runs"]}):
        per = {
            side: {
                k.split("/")[1]: v for k, v in study["runs"].items() if k.startswith(f"{size}/") and k.endswith(side)
            }
            for side in ("lightly-train", "ours")
        }
        seeds = sorted(set(per["ours"]) & set(per["lightly-train"]))
        if not seeds:
            continue
        ips = {s: statistics.mean(per[s][x]["images_per_s"] for x in seeds) for s in per}
        ratios = [per["ours"][x]["images_per_s"] / per["lightly-train"][x]["images_per_s"] for x in seeds]
        worst = min(ratios) if worst is None else min(worst, *ratios)

        about = study.get("sizes", {}).get(str(size), {})
        sampled = any("rate_steps" not in per["lightly-train"][x] for x in seeds)  # before every step was logged
        rows.append(
            [
                f"{size}x{size}",
                f"{ips['lightly-train']:.1f}" + (" †" if sampled else ""),
                f"{ips['ours']:.1f} ({per['ours'][seeds[0]]['precision']})",
                f"**{ips['ours'] / ips['lightly-train']:.2f}x** ({min(ratios):.2f}-{max(ratios):.2f})",
                knn_cell([per["lightly-train"][x] for x in seeds]),
                knn_cell([per["ours"][x] for x in seeds]),
                str(len(seeds)),
                str(about.get("git", "?")),
            ]
        )
    return rows, worst


SAMPLED_NOTE = """\
†: LightlyTrain's rate from the one step per epoch it logs by default (every 50th step, or once an epoch when an
epoch is shorter), read before its every step was logged (`trainer_args.log_every_n_steps=1`): a sample, not the
epoch's rate; such rows are to be measured again.
"""


def render(store: dict) -> None:
    """RESULTS.md's section: one table per study (training budget), the longest budget first."""
    header = [
        "image size",
        "LightlyTrain img/s",
        "ours img/s (precision)",
        "ours / LightlyTrain (per seed)",
        "LightlyTrain kNN % (random init)",
        "ours kNN % (random init)",
        "seeds",
        "git",
    ]
    parts = []
    ordered = sorted(store["studies"].values(), key=lambda t: -t["settings"]["n_train"] * t["settings"]["epochs"])
    for study in ordered:
        rows, worst = study_rows(study)
        if not rows:
            continue
        s = study["settings"]
        abouts = list({json.dumps(a, sort_keys=True): a for a in study["sizes"].values()}.values())
        machines = "; ".join(
            dict.fromkeys(
                a["machine"] + (f", lightly-train {a['lightly_train']}" if a.get("lightly_train") else "")
                for a in abouts
            )
        )
        commands = "; ".join(
            f"`{'taskset -c ' + a['cpus'] + ' ' if a.get('cpus') else ''}{a['command']}`" for a in abouts
        )
        parts.append(
            f"""### {s["n_train"]:,} images x {s["epochs"]} epochs

{s["n_train"]:,} CIFAR-10 training JPEGs upsampled to each size, batch {s["batch_size"]}, {s["epochs"]} epochs,
{s["workers"]} DataLoader workers; lowest per-seed ratio **{worst:.2f}x**. {machines}. Each row's runs come
from the code commit in its git column.

Command{"s" if len(abouts) > 1 else ""}: {commands}

{markdown_table(header, rows)}
"""
        )
    body = "\n".join(parts)
    dagger = SAMPLED_NOTE if " † |" in body else ""  # only while a row still shows a sampled rate
    write_section(
        "folder_throughput",
        f"""## Pretraining from a JPEG folder: ours vs LightlyTrain (issue 15)

SimCLR, ResNet-18, CIFAR-10 training JPEGs upsampled to each size (and the 1,000 test images for kNN), each
side's default pipeline and precision (LightlyTrain: float32 on CPU). Images/s over the last epoch's steps (the
ratio of the seeds' means, in brackets the range of per-seed ratios); kNN with one evaluator for both (k=20),
after training and (in brackets) of the same seed's random initialisation. Target: ours >= 1.5x at equal kNN.
{dagger}
{body}""",
    )
    print_section("folder_throughput")


if __name__ == "__main__":
    main()
