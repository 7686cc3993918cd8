"""The linear probe before and after, and against scikit-learn, on the same frozen features (issue 17).

    python benchmarks/linear_probe.py --case mnist=RUN_DIR --case cifar=RUN_DIR --case cifar50k=RUN_DIR \\
        --case cifar50k-to-mnist=RUN_DIR

Each case is NAME=ENCODER with NAME one of: mnist (60k/10k), cifar (the 4k/1k subset), cifar50k (the 50k CIFAR-10
training JPEGs, exact 1k test images; ``--data-dir`` as in quality.py) and cifar50k-to-mnist (transfer: the encoder
evaluated on MNIST, resized and channel-adapted as the evaluator does). Features are extracted once per case;
then, on the same standardised features:

- **before**: the probe up to commit 10f71be, kept here as the reference: minibatch AdamW, cosine, 100 epochs,
  lr x weight decay grid (1e-3, 1e-2, 1e-1) x (0, 1e-4, 1e-2) on a stratified 20% validation split, best refit;
- **after**: ``ssl_transfer.evaluation.linear.linear_probe`` (full-batch L-BFGS logistic regression, L2 sweep);
- **scikit-learn**: ``LogisticRegression(C=1, solver="lbfgs", max_iter=1000)``.

Times are wall-clock seconds for the whole probe (sweep included), side by side in one process.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cifar_data import cifar10_overrides  # noqa: E402
from benchmarks.common import git_rev, machine, markdown_table, print_section, save_json, write_section  # noqa: E402
from ssl_transfer.data import build_data  # noqa: E402
from ssl_transfer.evaluation.encoders import resolve_encoder  # noqa: E402
from ssl_transfer.evaluation.features import extract_features  # noqa: E402
from ssl_transfer.evaluation.linear import linear_probe  # noqa: E402
from ssl_transfer.evaluation.subsets import stratified_split  # noqa: E402
from ssl_transfer.recipe import DataConfig  # noqa: E402

STORE = Path(__file__).parent / "results" / "linear_probe.json"
SUBSET = "../shared/datasets/cifar10_subset.npz"


def data_config(case: str, data_dir: Path) -> DataConfig:
    if case in ("mnist", "cifar50k-to-mnist"):
        return DataConfig(source="npz", path="../shared/datasets/mnist.npz")
    if case == "cifar":
        return DataConfig(source="npz", path=SUBSET)
    if case == "cifar50k":
        kv = dict(o.split("=", 1) for o in cifar10_overrides(data_dir))
        return DataConfig(
            source=kv["data.source"], root=kv["data.root"], test_root=kv["data.test_root"], in_memory=True
        )
    raise SystemExit(f"unknown case {case!r}: mnist, cifar, cifar50k, cifar50k-to-mnist")


def adamw_grid_probe(x: Tensor, y: Tensor, xt: Tensor, yt: Tensor, epochs: int = 100, seed: int = 0) -> float:
    """Top-1 of the previous probe (see the module docstring) on standardised features."""

    def train(xs: Tensor, ys: Tensor, lr: float, wd: float) -> nn.Linear:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        clf = nn.Linear(xs.shape[1], k)
        opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=wd)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(xs) / 256))
        for _ in range(epochs):
            perm = torch.randperm(len(xs), generator=g)
            for i in range(0, len(xs), 256):
                b = perm[i : i + 256]
                loss = F.cross_entropy(clf(xs[b]), ys[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        return clf

    def acc(clf: nn.Linear, xs: Tensor, ys: Tensor) -> float:
        with torch.no_grad():
            return float((clf(xs).argmax(1) == ys).float().mean())

    k = int(max(y.max(), yt.max())) + 1
    tr, va = stratified_split(torch.arange(len(y)), y, 0.2, seed)
    grid = list(itertools.product((1e-3, 1e-2, 1e-1), (0.0, 1e-4, 1e-2)))
    best = max(grid, key=lambda p: acc(train(x[tr], y[tr], *p), x[va], y[va]))
    return acc(train(x, y, *best), xt, yt)


def sklearn_probe(x: Tensor, y: Tensor, xt: Tensor, yt: Tensor) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(x.numpy(), y.numpy())
    return float((clf.predict(xt.numpy()) == yt.numpy()).mean())


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def run_case(case: str, encoder: str, data_dir: Path, skip_before: bool) -> dict:
    cfg = data_config(case, data_dir)
    bundle = build_data(cfg)
    enc = resolve_encoder(encoder, bundle.input_shape, bundle.mean, bundle.std)
    t0 = time.perf_counter()
    (f, y), (ft, yt) = [
        extract_features(enc.backbone, ds, preprocess=enc.preprocess) for ds in (bundle.train, bundle.test)
    ]
    feat_s = time.perf_counter() - t0
    mu, sd = f.mean(0), f.std(0).clamp_min(1e-6)
    xs, xts = (f - mu) / sd, (ft - mu) / sd
    after, after_s = timed(linear_probe, f, y, ft, yt)
    sk, sk_s = timed(sklearn_probe, xs, y, xts, yt)
    row = {
        "case": case,
        "encoder": str(encoder),
        "n_train": len(y),
        "n_test": len(yt),
        "dim": f.shape[1],
        "feature_s": round(feat_s, 1),
        "after": after["top1"],
        "after_s": round(after_s, 2),
        "after_l2": after["l2"],
        "after_range": after["l2_range"],
        "after_extended": after["range_extended"],
        "sklearn": sk,
        "sklearn_s": round(sk_s, 2),
    }
    if not skip_before:
        before, before_s = timed(adamw_grid_probe, xs, y, xts, yt)
        row.update(before=before, before_s=round(before_s, 1))
    return row


def render(store: dict, command: str) -> None:
    rows = []
    for r in store["rows"]:
        before = f"{100 * r['before']:.2f} / {r['before_s']:.0f} s" if "before" in r else "-"
        rows.append(
            [
                r["case"],
                f"{r['n_train']:,} / {r['n_test']:,} x {r['dim']}",
                before,
                f"{100 * r['after']:.2f} / {r['after_s']:.1f} s",
                f"{100 * r['sklearn']:.2f} / {r['sklearn_s']:.1f} s",
                f"{100 * (r['after'] - r['sklearn']):+.2f}",
                f"{r['sklearn_s'] / r['after_s']:.1f}x",
                f"{r['after_l2']:.0e} in [{r['after_range'][0]:.0e}, {r['after_range'][1]:.0e}]"
                + (f", extended {r['after_extended']}" if r["after_extended"] else ""),
            ]
        )
    table = markdown_table(
        [
            "case",
            "train / test x dim",
            "before: AdamW grid top-1 % / time",
            "after: L-BFGS sweep top-1 % / time",
            "sklearn C=1 top-1 % / time",
            "after - sklearn (pt)",
            "after speed-up vs sklearn",
            "chosen l2 (range)",
        ],
        rows,
    )
    body = f"""## Linear probe: before and after, and against scikit-learn (issue 17)

Same frozen features per case (extracted once), standardised with the training mean/std; top-1 on the test split.
Before: minibatch AdamW, 100 epochs, lr x wd grid of 9 on a 20% validation split, best refit (the probe up to
10f71be). After: full-batch L-BFGS logistic regression (`ssl_transfer/evaluation/linear.py`), L2 penalty swept
over 1e-7..1e-1 on the same split (extended once at an edge), best refit. scikit-learn: `LogisticRegression(C=1,
lbfgs, max_iter=1000)` on all training features (no sweep). Times: whole probe, wall clock, side by side in one
process on {store["machine"]} (git {store["git"]}).

Command: `{command}`

{table}
"""
    write_section("linear_probe", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", required=True, help="NAME=ENCODER (run dir or encoder file)")
    ap.add_argument("--data-dir", default="benchmarks/runs/cifar10_jpeg")
    ap.add_argument("--skip-before", action="store_true", help="leave out the slow previous probe")
    args = ap.parse_args()
    rows = []
    for spec in args.case:
        case, encoder = spec.split("=", 1)
        r = run_case(case, encoder, Path(args.data_dir), args.skip_before)
        rows.append(r)
        print(r, flush=True)
    store = {"machine": machine(), "git": git_rev(), "rows": rows}
    save_json(STORE, store)
    cmd = (
        "python benchmarks/linear_probe.py "
        + " ".join(f"--case {c}" for c in args.case)
        + (f" --data-dir {args.data_dir}" if args.data_dir != ap.get_default("data_dir") else "")
        + (" --skip-before" if args.skip_before else "")
    )
    render(store, cmd)
    print_section("linear_probe")


if __name__ == "__main__":
    main()
