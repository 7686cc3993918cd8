"""benchmarks/folder_throughput.py: each training budget is its own study in the store (a longer run does not
drop the short one's rows), and the table reports the per-seed ratios as well as the ratio of means."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import folder_throughput as ft  # noqa: E402

SETTINGS = {"n_train": 1000, "epochs": 2, "batch_size": 64, "workers": 2, "precision": "auto"}


def _run(ips: float, knn: float) -> dict:
    return {"images_per_s": ips, "knn": knn, "knn_init": 0.3, "precision": "bf16-mixed"}


def test_a_store_from_before_studies_becomes_one_study():
    old = {"git": "abc", "machine": "m", "settings": SETTINGS, "runs": {}, "cpus": "1"}
    store = ft.studies(old)
    assert list(store["studies"]) == ["n1000-e2-b64-w2-auto"]
    assert store["studies"]["n1000-e2-b64-w2-auto"]["git"] == "abc"
    assert ft.studies(store) is store and ft.studies(None) == {"studies": {}}


def test_rows_pair_each_seed_and_report_the_lowest_per_seed_ratio():
    runs = {
        "64/0/lightly-train": _run(10.0, 0.30),
        "64/0/ours": _run(20.0, 0.32),
        "64/1/lightly-train": _run(30.0, 0.34),
        "64/1/ours": _run(45.0, 0.36),
        "64/2/lightly-train": _run(99.0, 0.5),  # ours has no seed 2 yet: left out of both sides
    }
    rows, worst = ft.study_rows({"runs": runs})
    assert worst == 1.5
    ((size, lt, ours, ratio, lt_knn, ours_knn, seeds),) = rows
    assert (size, lt, ours, seeds) == ("64x64", "20.0", "32.5 (bf16-mixed)", "2")
    assert ratio == "**1.62x** (1.50-2.00)"
    assert lt_knn == "32.0 ± 2.8 (30.0)" and ours_knn == "34.0 ± 2.8 (30.0)"
