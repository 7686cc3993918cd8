"""Each pretext method on the full MNIST training set with a small CNN, then FAISS kNN (k=20, T=0.07, cosine,
weighted) on the MNIST test set; wall time of pretraining on this machine.

    python benchmarks/mnist_knn.py                      # all methods, their recipes' epochs
    python benchmarks/mnist_knn.py --methods simclr,vae  # re-run some; others keep their stored results

Results are kept in benchmarks/results/mnist_knn.json (one entry per method) and rendered into RESULTS.md,
with two reference rows: kNN on raw pixels, and on a randomly initialised encoder of the same architecture.
Targets (issue 3): >= 95% for SimCLR/MoCo/BYOL/SimSiam/Barlow Twins/VICReg, >= 90% for AE/DAE/VAE/Siamese/Triplet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    TEACHER_METHOD,
    command_line,
    git_rev,
    machine,
    machine_tags,
    markdown_table,
    method_names,
    save_json,
    teacher_override,
    with_teacher_first,
    write_section,
)
from ssl_transfer.backbones import build_backbone  # noqa: E402
from ssl_transfer.data import build_data  # noqa: E402
from ssl_transfer.evaluation import extract_features, knn_classify  # noqa: E402
from ssl_transfer.methods import METHODS  # noqa: E402
from ssl_transfer.recipe import load_recipe  # noqa: E402
from ssl_transfer.train import evaluate_run, headline, pretrain  # noqa: E402

FAMILY_95 = {"simclr", "moco", "byol", "simsiam", "barlowtwins", "vicreg"}
ORDER = METHODS.names()
STORE = Path(__file__).parent / "results" / "mnist_knn.json"


def run_method(name: str, extra: list[str], out_dir: Path) -> dict:
    overrides = [
        f"output_dir={out_dir}",
        f"name=bench-{name}",
        "logging.wandb=disabled",
        "trainer.progress_bar=false",
        *teacher_override(name, out_dir / f"bench-{TEACHER_METHOD}"),
        *extra,
    ]
    recipe = load_recipe(f"{name}_mnist", overrides)
    t0 = time.perf_counter()
    res = pretrain(recipe, overwrite=True)
    seconds = time.perf_counter() - t0
    knn = headline(evaluate_run(res.run_dir, recipe), "knn")
    return {
        "method": name,
        "backbone": recipe.backbone.name,
        "epochs": recipe.trainer.max_epochs,
        "batch_size": recipe.data.batch_size,
        "augment": recipe.augment.preset,
        "train_images": len(res.data.train),
        "pretrain_seconds": round(seconds, 1),
        "top1": knn["top1"],
        "top5": knn["top5"],
        "target": 0.95 if name in FAMILY_95 else 0.90,
        "overrides": extra,
    }


def references(path: str) -> list[dict]:
    """kNN on raw pixels and on a random-init cnn_tiny: what the SSL numbers must be read against."""
    data = build_data(load_recipe({"data": {"source": "npz", "path": path}}).data)
    flat = lambda ds: (ds.images.flatten(1).float() / 255.0, ds.labels)  # noqa: E731
    rows = []
    (xtr, ytr), (xte, yte) = flat(data.train), flat(data.test)
    rows.append(
        {"method": "raw pixels (reference)", **knn_classify(xtr - xtr.mean(0), ytr, xte - xtr.mean(0), yte, 20, 0.07)}
    )
    torch.manual_seed(0)
    enc = build_backbone("cnn_tiny", data.input_shape)
    ftr, _ = extract_features(enc, data.train, data.mean, data.std)
    fte, _ = extract_features(enc, data.test, data.mean, data.std)
    rows.append({"method": "random-init cnn_tiny (reference)", **knn_classify(ftr, ytr, fte, yte, 20, 0.07)})
    return rows


def render(store: dict, command: str) -> None:
    """Write the RESULTS.md section: one row per method, then the references; each row names the machine (a tag in
    the machine column) and the heading the commits its rows ran at."""
    methods = [store["methods"][m] for m in ORDER if m in store["methods"]]
    refs = store.get("references", [])
    every = methods + refs
    tags, legend = machine_tags([[r["machine"]] if r.get("machine") else [] for r in every])
    revs = sorted({r.get("git", "not recorded") for r in every})
    rows = []
    for r in methods:
        name = r["method"]
        ok = "yes" if r["top1"] >= r["target"] else "**no**"
        per_epoch = r["pretrain_seconds"] / r["epochs"]
        rows.append(
            [
                name,
                r["backbone"],
                r["augment"],
                str(r["epochs"]),
                f"{100 * r['top1']:.2f}",
                f"{100 * r['top5']:.2f}",
                f"{100 * r['target']:.0f}",
                ok,
                f"{r['pretrain_seconds'] / 60:.1f}",
                f"{per_epoch:.0f}",
            ]
        )
    for r in refs:
        rows.append(
            [r["method"], "-", "-", "-", f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}", "-", "-", "-", "-"]
        )
    for row, tag in zip(rows, tags):
        row.append(tag)
    table = markdown_table(
        [
            "method",
            "backbone",
            "augment",
            "epochs",
            "kNN top-1 %",
            "top-5 %",
            "target %",
            "meets",
            "pretrain min",
            "s/epoch",
            "machine",
        ],
        rows,
    )
    body = f"""## MNIST: kNN accuracy of each pretext method (issue 3)

Full MNIST training set (60,000 images) from `../shared/datasets/mnist.npz`, each method's bundled recipe
(`recipes/<method>_mnist.yaml`: batch 256, AdamW lr 2e-3, 1 warm-up epoch, cosine), then FAISS kNN on the
10,000 test images: cosine similarity, k=20, votes weighted exp(sim/0.07). Pretraining wall time on the
machine of each row (git {", ".join(revs)}). Machines (the machine column): {legend}.

Command: `{command}`

{table}

{store.get("note", "")}

The reference rows put the targets in context: on MNIST, kNN on raw pixels is already strong, so the targets
test that pretraining does not destroy that information, not that it learns digits from nothing.
"""
    write_section("mnist_knn", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(ORDER))
    ap.add_argument(
        "--override", action="append", default=[], help="recipe override for every method, e.g. trainer.max_epochs=2"
    )
    ap.add_argument("--out", default="benchmarks/runs")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite the RESULTS.md section from the stored results")
    ap.add_argument("--note", help="a remark on this run to print under the table (stored with the results)")
    args = ap.parse_args()
    methods = method_names(args.methods)
    store = json.loads(STORE.read_text()) if STORE.exists() else {"methods": {}}
    if args.note is not None:
        store["note"] = args.note
    if args.render_only:
        save_json(STORE, store)
        render(store, store.get("command", "python benchmarks/mnist_knn.py"))
        return
    rev, host = git_rev(), machine()  # one process, one machine: every row it writes names both
    if not store.get("references") or any(r.get("git") != rev for r in store["references"]):
        store["references"] = [{**r, "git": rev, "machine": host} for r in references("../shared/datasets/mnist.npz")]
    for m in with_teacher_first(methods, Path(args.out) / f"bench-{TEACHER_METHOD}"):
        r = {**run_method(m, args.override, Path(args.out)), "git": rev, "machine": host}
        store["methods"][m] = r
        print(f"{m:12s} top-1 {100 * r['top1']:.2f}%  ({r['pretrain_seconds']:.0f}s, {r['epochs']} epochs)", flush=True)
        save_json(STORE, store)
    if not args.no_render:
        cmd = command_line("mnist_knn.py", ap, args, skip=("no_render", "note"))
        store["command"] = cmd
        save_json(STORE, store)
        render(store, cmd)
        print(Path("benchmarks/RESULTS.md").read_text())


if __name__ == "__main__":
    main()
