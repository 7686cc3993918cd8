"""Label efficiency on MNIST: a pretrained encoder (kNN, linear probe, fine-tuning) against the same
architecture trained from scratch, with N labels per class, several seeds (mean ± std).

    python benchmarks/label_efficiency.py --encoder benchmarks/runs/bench-simclr --labels 1,10,100 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_rev, machine, write_section  # noqa: E402
from ssl_transfer.evaluation.protocol import evaluate  # noqa: E402
from ssl_transfer.evaluation.report import summary_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="benchmarks/runs/bench-simclr")
    ap.add_argument("--labels", default="1,10,100")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    labels = [int(x) for x in args.labels.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    out = Path("benchmarks/results/label_efficiency")
    t0 = time.perf_counter()
    result = evaluate(
        args.encoder,
        {"source": "npz", "path": "../shared/datasets/mnist.npz"},
        protocols=["knn", "linear", "finetune", "scratch"],
        labels_per_class=labels,
        seeds=seeds,
        finetune={"strategies": ["full"], "epochs": 20},
        out_dir=out,
    )
    minutes = (time.perf_counter() - t0) / 60
    shutil.copy(out / "label_efficiency.png", Path("benchmarks") / "label_efficiency_mnist.png")
    table = summary_table(result)
    print(table)
    write_section(
        "label_efficiency",
        f"""## Label efficiency on MNIST: SSL encoder vs scratch (issue 4)

Encoder `{args.encoder}` (pretrained without labels on the 60k MNIST training images); N labelled training images
per class drawn per seed (seeds {seeds}); top-1 on the 10,000 test images, mean ± std over seeds. kNN k=20 T=0.07;
linear probe (L-BFGS logistic regression, L2 penalty chosen on a validation split); fine-tune `full` and `scratch`
(same architecture, re-initialised): AdamW lr 1e-3, cosine, max(20 epochs, 300 steps), batch 128. {machine()} (git
{git_rev()}); {minutes:.1f} min in all.

Command: `python benchmarks/label_efficiency.py --encoder {args.encoder} --labels {args.labels} --seeds {args.seeds}`

{table}

![label efficiency](label_efficiency_mnist.png)
""",
    )


if __name__ == "__main__":
    main()
