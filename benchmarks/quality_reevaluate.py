"""Evaluate the runs ``quality.py --runs-dir`` kept again, without pretraining them again: the same kNN and linear
probe as ``quality.py`` on each kept encoder, with today's evaluation code.

    python benchmarks/quality_reevaluate.py --datasets cifar50k --methods simclr --runs-dir benchmarks/runs/quality

For a code change that touches only what turns an encoder into numbers (the linear probe): ``refresh.py`` runs this
instead of ``quality.py`` for a unit whose pretraining inputs (everything its key reads but the linear probe's code)
are the same as at the commit it last ran, so hours of pretraining are not repeated to recompute a probe. Each row
keeps what came from pretraining (times, images/s, the monitor's curve, the machine they were measured on) and
takes new kNN and linear accuracies; ``pretrained_at`` names the code commit of its pretraining, ``git`` the one of
its numbers. The random-init rows of the backbones used are computed again, as ``quality.py`` does at a new commit.
A missing run or row is an error that says to run ``quality.py`` instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, git_rev, machine, method_names, print_section  # noqa: E402
from benchmarks.quality import (  # noqa: E402
    STORE,
    backbones_of,
    dataset,
    random_init,
    render,
    scores,
    set_reference,
    update_store,
)
from ssl_transfer.evaluation.protocol import evaluate  # noqa: E402
from ssl_transfer.recipe import load_recipe  # noqa: E402


def reevaluate(row: dict, run_dir: Path, seed: int, rev: str) -> dict:
    """``row`` (a method's stored row) with the kNN and linear accuracies of the encoder kept in ``run_dir``,
    evaluated as ``quality.run_method`` does, on the data of the run's saved recipe."""
    recipe = load_recipe(run_dir / "recipe.yaml")
    result = evaluate(run_dir, recipe.data, protocols=["knn", "linear"], seeds=[seed])
    return {**row, **scores(result), "git": rev, "pretrained_at": row.get("pretrained_at", row["git"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="cifar50k")
    ap.add_argument("--methods", required=True)
    ap.add_argument("--runs-dir", required=True, help="where quality.py --runs-dir kept the runs")
    ap.add_argument("--data-dir", default="benchmarks/runs/cifar10_jpeg", help="as quality.py's (cifar50k's images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs-cifar50k", type=int, help="as quality.py's: the kept runs must have this budget")
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args()
    methods = method_names(args.methods)
    rev, host = git_rev(), machine()
    for name in args.datasets.split(","):
        ds = dataset(name, Path(args.data_dir))
        stored = json.loads(STORE.read_text()) if STORE.exists() else {}
        rows = stored.get("datasets", {}).get(name, {}).get("methods", {})
        for m in methods:
            run_dir = Path(args.runs_dir) / f"{ds.name}-{m}"
            kept = all((run_dir / f).is_file() for f in ("encoder.safetensors", "recipe.yaml"))
            if m not in rows or not kept:
                raise SystemExit(
                    f"quality_reevaluate: no kept run of {m} on {name} ({run_dir}) or no row in {STORE.name}; "
                    "run quality.py for it (refresh.py --no-reuse)"
                )
            if args.epochs_cifar50k is not None and name == "cifar50k" and rows[m]["epochs"] != args.epochs_cifar50k:
                raise SystemExit(
                    f"quality_reevaluate: the kept {m} run on {name} has {rows[m]['epochs']} epochs, not "
                    f"{args.epochs_cifar50k}; run quality.py for it"
                )
            r = reevaluate(rows[m], run_dir, args.seed, rev)
            update_store(name, lambda d, m=m, r=r: d["methods"].__setitem__(m, r), seed=args.seed)
            print(f"[{name}] {m:12s} kNN {100 * r['knn_top1']:.2f}%  linear {100 * r['linear_top1']:.2f}%", flush=True)
        stored = json.loads(STORE.read_text())["datasets"][name]
        for label, m in backbones_of(stored, methods).items():  # one random-init row per backbone used
            if stored.get("references", {}).get(label, {}).get("git") != rev:
                ref = {**random_init(ds, m, args.seed), "git": rev, "machine": host}
                update_store(name, lambda d, ref=ref: set_reference(d, ref), seed=args.seed)
    if not args.no_render:
        render(json.loads(STORE.read_text()), command_line("quality_reevaluate.py", ap, args))
        print_section("quality")


if __name__ == "__main__":
    main()
