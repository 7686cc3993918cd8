"""What the online monitor costs: pretraining wall time with the monitor at every epoch vs off (issue 12).

    python benchmarks/monitor_overhead.py                      # CIFAR-10 subset, simclr, cnn_small, 5 epochs, 3 pairs

Runs of the bundled ``recipes/<method>_cifar10.yaml`` on ``../shared/datasets/cifar10_subset.npz`` (4,000 training
images; the monitor embeds 1,000 of the 1,000 test images before training and after every epoch), monitor on
(``every_n_epochs=1``) and off, alternating in one process so that both see the same machine; the overhead is
the median over pairs of (on - off) / off of ``pretrain()``'s wall time, which includes the monitor's
before-training pass. Also reported: the monitor's own median time per call (``monitor/time_s``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, git_rev, machine, markdown_table, print_section, save_json, write_section  # noqa: E402
from ssl_transfer.recipe import load_recipe  # noqa: E402
from ssl_transfer.train import pretrain  # noqa: E402
from ssl_transfer.training.metrics_log import read_metrics  # noqa: E402

STORE = Path(__file__).parent / "results" / "monitor_overhead.json"
SUBSET = "../shared/datasets/cifar10_subset.npz"


def one_run(method: str, epochs: int, monitor: bool, out: Path, i: int) -> tuple[float, list[float], float]:
    recipe = load_recipe(
        f"{method}_cifar10",
        [
            "data.source=npz",
            f"data.path={SUBSET}",
            "backbone.name=cnn_small",
            f"trainer.max_epochs={epochs}",
            f"monitor.enabled={'true' if monitor else 'false'}",
            "monitor.every_n_epochs=1",
            f"output_dir={out}",
            f"name={'on' if monitor else 'off'}{i}",
            "logging.wandb=disabled",
            "logging.plots=false",
            "trainer.progress_bar=false",
        ],
    )
    t0 = time.perf_counter()
    res = pretrain(recipe, overwrite=True)
    wall = time.perf_counter() - t0
    recs = read_metrics(res.run_dir / "metrics.jsonl")
    mon = [r["monitor/time_s"] for r in recs if "monitor/time_s" in r]
    epoch = statistics.median(r["train/epoch_time_s"] for r in recs if "train/epoch_time_s" in r)
    return wall, mon, epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            order = (True, False) if i % 2 == 0 else (False, True)  # alternate which goes first
            got = {m: one_run(args.method, args.epochs, m, Path(tmp), i) for m in order}
            (on, mon, on_epoch), (off, _, off_epoch) = got[True], got[False]
            pairs.append(
                {
                    "on_s": round(on, 2),
                    "off_s": round(off, 2),
                    "overhead": (on - off) / off,
                    "monitor_calls": len(mon),
                    "monitor_call_s": round(statistics.median(mon), 3),
                    "epoch_s_on": round(on_epoch, 2),
                    "epoch_s_off": round(off_epoch, 2),
                }
            )
            print(pairs[-1], flush=True)
    store = {
        "machine": machine(),
        "git": git_rev(),
        "method": args.method,
        "epochs": args.epochs,
        "pairs": pairs,
        "overhead_median": statistics.median(p["overhead"] for p in pairs),
    }
    save_json(STORE, store)
    if args.no_render:
        return
    rows = [
        [
            str(i),
            f"{p['off_s']:.1f}",
            f"{p['on_s']:.1f}",
            f"{100 * p['overhead']:+.1f}%",
            str(p["monitor_calls"]),
            f"{p['monitor_call_s']:.2f}",
            f"{p['epoch_s_off']:.2f}",
        ]
        for i, p in enumerate(pairs)
    ]
    table = markdown_table(
        [
            "pair",
            "monitor off: pretrain s",
            "monitor on: pretrain s",
            "overhead",
            "monitor calls",
            "s per monitor call (median)",
            "s per epoch (off)",
        ],
        rows,
    )
    write_section(
        "monitor_overhead",
        f"""## What the online monitor costs (issue 12)

`{args.method}`, `cnn_small`, CIFAR-10 subset (4,000 training images), {args.epochs} epochs, monitor at every epoch
(kNN, RankMe, std, alignment, uniformity on 1,000 held-out images, plus the before-training pass) vs off;
wall time of `pretrain()`, pairs alternating in one process on {store["machine"]} (git {store["git"]}).
**Median overhead: {100 * store["overhead_median"]:+.1f}%** (target: at most 5%).

Command: `{command_line("monitor_overhead.py", ap, args)}`

{table}
""",
    )
    print_section("monitor_overhead")


if __name__ == "__main__":
    main()
