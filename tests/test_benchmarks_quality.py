"""benchmarks/quality.py: each method runs on a CPU-sized backbone it can train (MAE keeps a ViT), and each
backbone used gets its own random-init reference row."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402
from ssl_transfer.backbones import build_backbone  # noqa: E402
from ssl_transfer.methods import METHODS, build_method  # noqa: E402
from ssl_transfer.recipe import load_recipe  # noqa: E402

SUBSET = ["data.source=npz", "data.path=../shared/datasets/cifar10_subset.npz"]


def test_every_methods_cifar_run_builds_on_its_small_backbone():
    """The CIFAR overrides used to force cnn_small on every method, which MAE refuses (it needs a ViT)."""
    ds = quality.DATASETS["cifar"]
    for m in METHODS.names():
        recipe = load_recipe(f"{m}_cifar10", [*SUBSET, *quality.small_backbone(ds, m)])
        cfg = recipe.method
        if hasattr(cfg, "teacher"):
            continue  # distil's teacher is a trained run; its student is cnn_small like the rest
        enc = build_backbone(recipe.backbone.name, (3, 32, 32), kwargs=recipe.backbone.kwargs)
        build_method(cfg, enc, (3, 32, 32))  # raises for a method that cannot use this backbone
        if METHODS.get(m).needs_vit:
            assert recipe.backbone.kwargs["depth"] == 4 and recipe.backbone.name.startswith("vit")
        else:
            assert recipe.backbone.name == "cnn_small"


def test_reference_rows_are_kept_per_backbone():
    d = {"methods": {"simclr": {"backbone": "cnn_small"}, "mae": {"backbone": "vit (depth 4)"}}, "reference": {}}
    assert quality.backbones_of(d, ["simclr", "mae", "byol"]) == {"cnn_small": "simclr", "vit (depth 4)": "mae"}
    quality.set_reference(d, {"backbone": "cnn_small", "knn_top1": 0.33})
    quality.set_reference(d, {"backbone": "vit (depth 4)", "knn_top1": 0.25})
    assert "reference" not in d and set(d["references"]) == {"cnn_small", "vit (depth 4)"}


def test_the_heading_names_every_batch_size_that_differs():
    rows = {m: {"batch_size": 256} for m in ("simclr", "byol", "moco")}
    assert quality.batch_label(rows) == "batch 256"
    rows["dino"] = {"batch_size": 128}
    assert quality.batch_label(rows) == "batch 256 (dino 128)"  # was the first row's batch only


def test_the_heading_names_every_precision_that_differs():
    """Rows trained on a CPU without native bf16 ran in float32: the heading gave the first row's precision for all."""
    rows = {m: {"precision": "bf16-mixed"} for m in ("simclr", "byol", "moco")}
    assert quality.precision_text(rows) == "precision bf16-mixed"
    rows.update(vicreg={"precision": "32-true"}, mae={"precision": "32-true"})
    assert quality.precision_text(rows) == "precision bf16-mixed (32-true: mae, vicreg)"
    assert quality.precision_text({"mae": {"precision": "32-true"}, **rows}) == (
        "precision bf16-mixed (32-true: mae, vicreg)"
    )


def _add_rows(store_path: str, method: str) -> None:
    quality.STORE = Path(store_path)
    for i in range(10):
        quality.update_store("cifar", lambda d, i=i: d["methods"].__setitem__(method, {"i": i}), seed=0)


def test_side_by_side_runs_keep_each_others_rows(tmp_path: Path, side_by_side):
    """Four processes fill one store at once (as the refresh's paired units do): every method's row survives."""
    store = tmp_path / "quality.json"
    side_by_side(_add_rows, [(str(store), m) for m in "abcd"])
    rows = quality.json.loads(store.read_text())["datasets"]["cifar"]["methods"]
    assert rows == {m: {"i": 9} for m in "abcd"}


def test_each_row_names_the_machine_it_ran_on(monkeypatch):
    """The 50k rows ran in many sessions on different CPUs; the heading used to name the last writer's for all."""

    def row(machine: str | None) -> dict:
        r = {
            "backbone": "cnn_small",
            "augment": "cifar",
            "epochs": 20,
            "epoch_seconds": 100.0,
            "images_per_s": 500.0,
            "knn_top1": 0.6,
            "linear_top1": 0.62,
            "batch_size": 256,
            "train_images": 50000,
            "test_images": 1000,
            "precision": "bf16-mixed",
            "git": "abc",
        }
        return {**r, "machine": machine} if machine else r

    ref = {"method": "random-init cnn_small (reference)", "backbone": "cnn_small", "knn_top1": 0.38, "linear_top1": 0.4}
    store = {
        "seed": 0,
        "datasets": {
            "cifar50k": {
                "methods": {"simclr": row("AMD EPYC"), "byol": row("Intel Xeon"), "moco": row(None)},
                "references": {"cnn_small": {**ref, "machine": "Intel Xeon"}},
            }
        },
    }
    written: dict[str, str] = {}
    monkeypatch.setattr(quality, "write_section", lambda name, body: written.setdefault(name, body))
    monkeypatch.setattr(quality, "plot_curves", lambda store: None)
    quality.render(store, "python benchmarks/quality.py")
    rows = {ln.split("|")[1].strip(): ln for ln in written["quality"].splitlines() if ln.startswith("| ")}
    assert rows["byol"].endswith("| A |") and rows["moco"].endswith("| ? |") and rows["simclr"].endswith("| B |")
    assert rows["random-init cnn_small (reference)"].endswith("| A |")
    assert "**A**: Intel Xeon; **B**: AMD EPYC; **?**: not recorded" in written["quality"]


def test_a_kept_run_evaluated_again_gives_its_rows_numbers_and_keeps_its_pretraining(tmp_path):
    import numpy as np

    from benchmarks import quality_reevaluate

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    x, y = rng.integers(0, 255, (300, 28, 28), dtype=np.uint8), np.arange(300) % 3
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    ds = quality.Dataset("tiny", "mnist", (f"data.path={path}", "data.batch_size=50", "optim.warmup_epochs=0"))
    row = {**quality.run_method(ds, "simclr", 1, tmp_path, seed=0), "git": "abc1234", "machine": "A"}
    again = quality_reevaluate.reevaluate(row, tmp_path / "tiny-simclr", seed=0, rev="def5678")
    assert (again["knn_top1"], again["linear_top1"]) == (row["knn_top1"], row["linear_top1"])
    assert again["git"] == "def5678" and again["pretrained_at"] == "abc1234" and again["machine"] == "A"
    assert {k: again[k] for k in ("epoch_seconds", "monitor", "pretrain_seconds")} == {
        k: row[k] for k in ("epoch_seconds", "monitor", "pretrain_seconds")
    }
