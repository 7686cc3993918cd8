"""benchmarks/folder_throughput.py: each training budget is its own study in the store (a longer run does not
drop the short one's rows), and the table reports the per-seed ratios as well as the ratio of means."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import folder_throughput as ft  # noqa: E402

SETTINGS = {"n_train": 1000, "epochs": 2, "batch_size": 64, "workers": 2, "precision": "auto"}


def _run(ips: float, knn: float) -> dict:
    return {"images_per_s": ips, "knn": knn, "knn_init": 0.3, "precision": "bf16-mixed"}


def test_a_store_from_before_studies_becomes_one_study():
    old = {"git": "abc", "machine": "m", "settings": SETTINGS, "runs": {}, "cpus": "1"}
    old["runs"] = {"64/0/ours": _run(1.0, 0.3), "128/0/ours": _run(1.0, 0.3)}
    store = ft.studies(old)
    assert list(store["studies"]) == ["n1000-e2-b64-w2-auto"]
    sizes = store["studies"]["n1000-e2-b64-w2-auto"]["sizes"]
    assert set(sizes) == {"64", "128"} and sizes["64"]["git"] == "abc" and sizes["128"]["cpus"] == "1"
    assert ft.studies(store) is store and ft.studies(None) == {"studies": {}}


def test_a_new_commit_measures_its_size_afresh_and_keeps_the_other_sizes():
    about = {"git": "old", "machine": "m", "cpus": "1", "command": "python benchmarks/folder_throughput.py --sizes 64"}
    study = {"settings": SETTINGS, "runs": {}, "sizes": {}}
    ft.start_size(study, 64, about)
    study["runs"] = {"64/0/lightly-train": _run(10.0, 0.3), "64/0/ours": _run(20.0, 0.3)}
    ft.start_size(study, 64, dict(about))  # the same commit continues (later seeds, another session)
    assert len(study["runs"]) == 2
    new = {**about, "git": "new", "command": "python benchmarks/folder_throughput.py --sizes 128"}
    ft.start_size(study, 128, new)
    study["runs"].update({"128/0/lightly-train": _run(5.0, 0.3), "128/0/ours": _run(10.0, 0.3)})
    assert len(study["runs"]) == 4
    rows, _ = ft.study_rows(study)
    assert [(r[0], r[-1]) for r in rows] == [("64x64", "old"), ("128x128", "new")]
    ft.start_size(study, 64, new)  # 64 px at the new commit: its old runs go, 128 px stays
    assert set(study["runs"]) == {"128/0/lightly-train", "128/0/ours"}


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
    ((size, lt, ours, ratio, lt_knn, ours_knn, seeds, git),) = rows
    assert (size, lt, ours, seeds, git) == ("64x64", "20.0 †", "32.5 (bf16-mixed)", "2", "?")  # no rate_steps: sampled
    assert ratio == "**1.62x** (1.50-2.00)"
    assert lt_knn == "32.0 ± 2.8 (30.0)" and ours_knn == "34.0 ± 2.8 (30.0)"


def test_a_single_seed_knn_has_no_spread():
    """One seed has no standard deviation: the cell must not print ``± 0.0`` as if seeds agreed."""
    assert ft.knn_cell([_run(10.0, 0.321)]) == "32.1 (30.0)"


def test_a_study_renders_each_rows_commit_and_marks_sampled_rates(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    old = {"git": "abc1234", "machine": "m", "settings": SETTINGS, "cpus": "1", "command": "python x.py"}
    old["runs"] = {"64/0/lightly-train": _run(10.0, 0.3), "64/0/ours": _run(20.0, 0.3)}
    store = ft.studies({"studies": {"k": old}})
    ft.start_size(store["studies"]["k"], 128, {"git": "def5678", "machine": "m", "cpus": None, "command": "y"})
    store["studies"]["k"]["runs"].update(
        {"128/0/lightly-train": {**_run(5.0, 0.3), "rate_steps": 62}, "128/0/ours": _run(10.0, 0.3)}
    )
    ft.render(store)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| 64x64 | 10.0 † |" in text and text.count("| abc1234 |") == 1
    assert "| 128x128 | 5.0 |" in text and text.count("| def5678 |") == 1
    assert "Commands: `taskset -c 1 python x.py`; `y`" in text
    assert "†: LightlyTrain's rate from the one step" in text
    del store["studies"]["k"]["runs"]["64/0/lightly-train"]  # no sampled row left: no note about them
    ft.render(store)
    assert "†" not in (tmp_path / "RESULTS.md").read_text()


def test_lightly_train_rate_is_over_every_step_of_the_last_epoch_each_step_once(tmp_path):
    import json

    rows = [{"lr": 0.1, "step": 0}]  # rows without timing are ignored
    rows += [{"profiling/batch_time": 9.0, "epoch": 0, "step": s} for s in range(4)]  # an earlier epoch
    rows += [{"profiling/batch_time": 5.0, "profiling/data_time": 1.0, "epoch": 1, "step": s} for s in (4, 5)]
    # killed after step 5, resumed from the checkpoint of step 3: steps 4 and 5 are logged again
    rows += [{"profiling/batch_time": 1.5, "profiling/data_time": 0.5, "epoch": 1, "step": s} for s in (4, 5, 6, 7)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in rows))
    assert ft.lightly_train_images_per_s(metrics, batch_size=64) == (4 * 64 / (4 * 2.0), 4)


def test_lightly_train_logs_every_step_and_resumes_an_interrupted_run(tmp_path):
    import argparse

    args = argparse.Namespace(lightly_train="lt", epochs=10, batch_size=64, workers=2)
    run = tmp_path / "lightly-train-64-0"
    cmd = ft.lightly_train_command(run, tmp_path / "train", 64, 0, args)
    assert "trainer_args.log_every_n_steps=1" in cmd and "overwrite=true" in cmd
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    cmd = ft.lightly_train_command(run, tmp_path / "train", 64, 0, args)
    assert "resume_interrupted=true" in cmd and "overwrite=true" not in cmd


def test_lightly_trains_version_is_read_from_its_venv_and_a_missing_one_stops_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no LightlyTrain at .*make one: python -m venv"):
        ft.lightly_train_version(str(tmp_path / "nothing" / "lightly-train"))
    venv = tmp_path / "bin"
    venv.mkdir()
    (venv / "lightly-train").write_text("#!/bin/sh\n")
    (venv / "python").write_text("#!/bin/sh\necho 0.9.9\n")
    (venv / "python").chmod(0o755)
    assert ft.lightly_train_version(str(venv / "lightly-train")) == "0.9.9"


def test_the_section_names_the_lightly_train_version_of_its_runs(tmp_path, monkeypatch):
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    store = ft.studies({"studies": {}})
    study = store["studies"].setdefault("k", {"settings": SETTINGS, "runs": {}, "sizes": {}})
    about = {"git": "abc1234", "machine": "m", "lightly_train": "0.9.9", "cpus": "1", "command": "python x.py"}
    ft.start_size(study, 64, about)
    study["runs"] = {"64/0/lightly-train": {**_run(10.0, 0.3), "rate_steps": 62}, "64/0/ours": _run(20.0, 0.3)}
    ft.render(store)
    assert "m, lightly-train 0.9.9." in (tmp_path / "RESULTS.md").read_text()
