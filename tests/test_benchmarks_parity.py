"""The parity benchmark's reference loop follows the same lr curve as ours for every optimizer setting."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.parity import SPECS, reference_schedule, sgd_setting  # noqa: E402
from ssl_transfer.training.optim import lr_factor, warmup_steps  # noqa: E402


def _curve(o: dict, epochs: int, per_epoch: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = reference_schedule(opt, o, epochs, per_epoch)
    out = []
    for _ in range(epochs * per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


@pytest.mark.parametrize(
    "o",
    [
        {"schedule": "cosine", "warmup_epochs": 2},
        {"schedule": "cosine", "warmup_epochs": 0},
        {"schedule": "constant", "warmup_epochs": 1.5},
        {"schedule": "constant", "warmup_epochs": 0},
    ],
    ids=["cosine-warm", "cosine", "constant-warm", "constant"],
)
def test_reference_lr_curve_is_ours(o):
    epochs, per_epoch = 6, 10
    total = epochs * per_epoch
    warm = warmup_steps(total, per_epoch, o["warmup_epochs"])  # ours' warm-up length, as the trainer computes it
    ours = [lr_factor(s, total, warm, o["schedule"], 0.0) for s in range(total)]
    assert _curve(o, epochs, per_epoch) == pytest.approx(ours, abs=1e-9)
    if warm:  # the warm-up really ramps: first step small, peak reached at the end of it
        assert ours[0] == pytest.approx(1 / warm) and ours[warm - 1] == pytest.approx(1.0)


def test_every_spec_setting_is_one_our_recipe_accepts():
    from ssl_transfer.recipe import OptimConfig

    for spec in SPECS.values():
        OptimConfig(**(spec.optim or sgd_setting("benchmark", spec.batch or 64)))


def test_each_row_is_judged_against_its_own_backbones_random_encoder(monkeypatch):
    """MAE trains a ViT: its "ref - random" and "not clear" read the ViT's random-init kNN, not cnn_small's."""
    import benchmarks.parity as parity

    row = {
        "setting": {"epochs": 1, "batch": 8, "optim": sgd_setting("benchmark", 8)},
        "reference": [0.40, 0.41, 0.42],
        "ours": [0.41, 0.41, 0.41],
        "ref_seconds_each": [1.0],
        "ours_seconds_each": [1.0],
        "seeds_done": [0, 1, 2],
        "git": "abc1234",
        "command": "python benchmarks/parity.py",
    }
    store = {
        "machine": "test",
        "random_init": 0.30,  # cnn_small
        "methods": {"simclr": dict(row), "mae": {**row, "random_init": 0.45, "backbone": "vit_tiny_patch16_224"}},
    }
    written = {}
    monkeypatch.setattr(parity, "write_section", lambda name, body: written.setdefault(name, body))
    parity.render(store)
    lines = {ln.split("|")[1].strip(): ln for ln in written["parity"].splitlines() if ln.startswith("| ")}
    assert "+11.0 |" in lines["simclr"] and "not clear" not in lines["simclr"]
    assert "-4.0 (not clear)" in lines["mae"]
    assert "`vit_tiny_patch16_224` 45.00%" in written["parity"] and "`cnn_small` 30.00%" in written["parity"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_reference_and_ours_train_the_same_parameters(name, tmp_path):
    """Each spec configures our method (the recipe ``run_ours`` trains) as its reference: the same trainable tensors
    (shapes), so a spec that drifts from its reference (head widths, BatchNorm, a predictor) fails here before a
    3-seed run is spent on it."""
    import types

    from benchmarks.parity import our_recipe
    from ssl_transfer.backbones import build_backbone
    from ssl_transfer.methods import build_method

    spec, shape, mean, std = SPECS[name], (3, 32, 32), [0.5] * 3, [0.25] * 3
    kwargs = dict(spec.backbone[1])
    data = types.SimpleNamespace(input_shape=shape, mean=mean, std=std)
    ref = spec.reference(build_backbone(spec.backbone[0], shape, kwargs=kwargs), data)
    cfg = our_recipe(name, spec, 1, 64, 0, spec.optim or sgd_setting("benchmark", 64), tmp_path).method
    ours = build_method(cfg, build_backbone(spec.backbone[0], shape, kwargs=kwargs), shape, mean, std)

    def shapes(m: torch.nn.Module) -> list[tuple[int, ...]]:
        return sorted(tuple(p.shape) for p in m.parameters() if p.requires_grad)

    assert shapes(ours) == shapes(ref)


@pytest.mark.parametrize("name", ["simclr", "ae"])  # a transform (PIL views), none (plain tensors)
def test_reference_sees_the_images_in_our_trainers_order(name):
    """The comparison is paired: per seed, epoch e of the reference loop draws the same batches as our trainer."""
    from types import SimpleNamespace

    from benchmarks.parity import reference_loader
    from ssl_transfer.data.datasets import ArrayDataset
    from ssl_transfer.data.loading import make_train_loader

    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    data = SimpleNamespace(train=SimpleNamespace(images=images), mean=(0.5,) * 3, std=(0.25,) * 3, image_size=(8, 8))
    ours = make_train_loader(ArrayDataset(images, torch.zeros(40, dtype=torch.long)), 8, seed=3, num_workers=0)
    ref = reference_loader(SPECS[name], data, 8, seed=3)
    for epoch in range(2):
        ours.batch_sampler.set_epoch(epoch)
        assert list(ref.batch_sampler) == list(ours.batch_sampler)
    if SPECS[name].transform is None:  # and the batches hold those images
        ours.batch_sampler.set_epoch(2)
        m, s = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
        got = [x for x, _ in ref]
        want = [(images[i].float() / 255 - m) / s for i in ours.batch_sampler]
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def _entry(git: str) -> dict:
    return {
        "setting": {"epochs": 1, "batch": 8, "optim": {"optimizer": "adam"}},
        "reference": [0.4],
        "ours": [0.4],
        "seeds_done": [0],
        "ref_seconds_each": [1.0],
        "ours_seconds_each": [1.0],
        "git": git,
        "command": "x",
    }


def test_a_run_keeps_the_rows_other_processes_wrote(tmp_path, monkeypatch):
    """Two parity units run side by side in the refresh: each writes its own method's row and keeps every other
    row, those in the store when it started and those another process wrote while it ran."""
    import json
    from types import SimpleNamespace

    from benchmarks import parity
    from benchmarks.stores import update_json

    store = tmp_path / "parity.json"
    store.write_text(json.dumps({"machine": "m", "random_init": 0.3, "methods": {"ae": _entry("old")}}))
    monkeypatch.setattr(parity, "STORE", store)
    monkeypatch.setattr(parity, "load_recipe", lambda d: SimpleNamespace(data=None))
    monkeypatch.setattr(parity, "build_data", lambda cfg: None)
    monkeypatch.setattr(parity, "random_init_knn", lambda *a: 0.3)
    monkeypatch.setattr(parity, "run_reference", lambda *a: None)
    monkeypatch.setattr(parity, "knn_top1", lambda *a: 0.5)
    monkeypatch.setattr(parity, "git_rev", lambda: "new")

    def ours_while_another_process_writes(*a):
        update_json(store, lambda s: s["methods"].__setitem__("moco", _entry("new")))
        return SimpleNamespace(preprocess=None), "bf16-mixed"

    monkeypatch.setattr(parity, "run_ours", ours_while_another_process_writes)
    monkeypatch.setattr(sys, "argv", ["parity.py", "--methods", "dae", "--seeds", "0", "--no-render"])
    parity.main()
    methods = json.loads(store.read_text())["methods"]
    assert set(methods) == {"ae", "moco", "dae"}
    assert methods["dae"]["ours"] == [0.5] and methods["dae"]["git"] == "new" and methods["ae"]["git"] == "old"


def _render(monkeypatch, methods: dict) -> dict[str, str]:
    """Each table row of the parity section rendered from a store with ``methods``, by method name."""
    import benchmarks.parity as parity

    written: dict[str, str] = {}
    monkeypatch.setattr(parity, "write_section", lambda name, body: written.setdefault(name, body))
    parity.render({"random_init": 0.30, "methods": methods})
    rows = {ln.split("|")[1].strip(): ln for ln in written["parity"].splitlines() if ln.startswith("| ")}
    return {**rows, "_body": written["parity"]}


def _row(seeds: list[int], ref: list[float], ours: list[float], **more) -> dict:
    return {
        "setting": {"epochs": 1, "batch": 8, "optim": sgd_setting("benchmark", 8)},
        "reference": ref,
        "ours": ours,
        "ref_seconds_each": [1.0],
        "ours_seconds_each": [1.0],
        "seeds_done": seeds,
        "git": "abc1234",
        "command": "python benchmarks/parity.py",
        **more,
    }


def test_a_row_is_judged_only_when_every_seed_is_done(monkeypatch):
    """One seed has no spread: the rule cannot judge it ("± 0.00 ... yes" before); it reads pending."""
    rows = _render(
        monkeypatch,
        {
            "vae": _row([0], [0.347], [0.347], seeds_wanted=[0, 1, 2]),
            "ae": _row([0, 1], [0.40, 0.41], [0.40, 0.41], seeds_wanted=[0, 1, 2]),
            "simclr": _row([0, 1, 2], [0.40, 0.41, 0.42], [0.41, 0.41, 0.41], seeds_wanted=[0, 1, 2]),
            "triplet": _row([0, 1, 2], [0.433, 0.428, 0.425], [0.428, 0.406, 0.408]),  # no seeds_wanted: 0, 1, 2
        },
    )
    assert rows["vae"].endswith("| pending (1 of 3 seeds) |") and "34.70 (1 seed)" in rows["vae"]
    assert "± 0.00" not in rows["vae"]
    assert rows["ae"].endswith("| pending (2 of 3 seeds) |")
    assert rows["simclr"].endswith("| yes |") and rows["triplet"].endswith("| **no** |")


def test_each_row_names_the_machines_it_ran_on(monkeypatch):
    """Rows of one table ran in different sessions, on different CPUs: each row tags its own."""
    rows = _render(
        monkeypatch,
        {
            "ae": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=["Intel Xeon"]),
            "simclr": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=["AMD EPYC"]),
            "moco": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=["Intel Xeon", "AMD EPYC"]),
            "byol": _row([0, 1, 2], [0.4] * 3, [0.4] * 3),
        },
    )
    assert "| A | ? | yes |" in rows["ae"] and "| B | ? | yes |" in rows["simclr"]
    assert "| A, B | ? | yes |" in rows["moco"] and "| ? | ? | yes |" in rows["byol"]
    assert "**A**: Intel Xeon; **B**: AMD EPYC; **?**: not recorded" in rows["_body"]


def test_each_row_names_the_precision_ours_trained_in(monkeypatch):
    """Precision auto trains in float32 on a CPU without native bf16: the store kept one precision, the last run's,
    and the header gave it for every row (32-true above rows that ran in bf16-mixed)."""
    no_bf16 = "AMD EPYC, 2 cores visible, 1 torch threads, no native bf16; torch 2.14.1"
    bf16 = "Intel Xeon, 2 cores visible, 1 torch threads, native bf16; torch 2.14.1"
    rows = _render(
        monkeypatch,
        {
            "ae": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=[bf16], precision="bf16-mixed"),
            "mae": _row([0, 1, 2], [0.3] * 3, [0.3] * 3, machines=[no_bf16], precision="32-true"),
            "simclr": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=[no_bf16]),  # a row without its own record
            "moco": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=[bf16]),
            "byol": _row([0, 1, 2], [0.4] * 3, [0.4] * 3, machines=[bf16, no_bf16]),  # its seeds on both
        },
    )
    assert rows["ae"].endswith("| bf16-mixed | yes |") and rows["mae"].endswith("| 32-true | yes |")
    assert rows["simclr"].endswith("| 32-true | yes |") and rows["moco"].endswith("| bf16-mixed | yes |")
    assert rows["byol"].endswith("| ? | yes |")
    assert "ours in precision" not in rows["_body"]


def test_a_refresh_names_its_command_once(monkeypatch):
    import argparse

    from benchmarks.common import command_line, commands_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="all")

    def unit(methods: str) -> str:  # what a refresh unit's process records, through command_line itself
        return command_line("p.py", ap, ap.parse_args(["--methods", methods]))

    monkeypatch.setenv("REFRESH_COMMAND", "python benchmarks/refresh.py --data-dir D")
    units = [unit("ae"), unit("vae")]
    monkeypatch.delenv("REFRESH_COMMAND")
    text = commands_text([*units, unit("all")])
    assert text == (
        "`python benchmarks/p.py`; `python benchmarks/refresh.py --data-dir D`, one process per unit: "
        "`python benchmarks/p.py --methods ae`, `python benchmarks/p.py --methods vae`"
    )


def test_a_row_runs_its_specs_seeds_unless_the_command_line_names_them():
    from benchmarks.parity import DEFAULT_SEEDS, row_seeds

    assert row_seeds(SPECS["simclr"], None) == list(DEFAULT_SEEDS) == [0, 1, 2]
    assert row_seeds(SPECS["triplet"], None) == list(range(10))  # its runs swing too much for three
    assert row_seeds(SPECS["triplet"], [0]) == [0]
