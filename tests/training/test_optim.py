import pytest
import torch
from torch import nn

from ssl_transfer.recipe import OptimConfig
from ssl_transfer.training.optim import build_optimizer, build_scheduler, lr_factor, warmup_steps


def test_warmup_then_cosine_to_floor():
    f = [lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up, peak at its last step
    assert f[10] == pytest.approx(1.0) and abs(f[55] - 0.55) < 0.02  # the cosine passes half-way mid-decay
    assert f[99] == pytest.approx(0.1) and all(a >= b for a, b in zip(f[10:], f[11:]))  # floor at the last step
    assert lr_factor(50, 100, 0, "constant", 0.0) == 1.0 and lr_factor(1, 100, 4, "constant", 0.0) == 0.5


@pytest.mark.parametrize("name,cls", [("adamw", "AdamW"), ("adam", "Adam"), ("sgd", "SGD"), ("lars", "LARS")])
def test_optimizers_and_no_decay_on_norm_and_bias(name, cls):
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = build_optimizer(model, OptimConfig(optimizer=name, weight_decay=0.05))
    assert type(opt).__name__ == cls
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}


def test_scheduler_steps_per_optimizer_step():
    model = nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, warmup_epochs=1, min_lr_ratio=0.0)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=20, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and lrs[-1] < 0.02


def test_lr_scales_linearly_with_the_global_batch(quiet):
    from ssl_transfer.train import pretrain
    from ssl_transfer.training.metrics_log import read_metrics

    base = {
        "name": "lr",
        "data": {"source": "digits", "limit_train": 256, "batch_size": 64},
        "trainer": {"max_epochs": 1},
        "optim": {"optimizer": "sgd", "lr": 0.06, "lr_batch_size": 128, "schedule": "constant"},
    }
    res = pretrain(base, quiet)
    lrs = [r["train/lr"] for r in read_metrics(res.run_dir / "metrics.jsonl") if "train/lr" in r]
    assert lrs and all(abs(lr - 0.03) < 1e-8 for lr in lrs)  # 0.06 x 64 / 128 (logged in float32)
    assert OptimConfig(lr=0.06).lr_batch_size is None


def test_fixed_lr_modules_keep_the_base_lr_while_the_rest_decays():
    from ssl_transfer.backbones import build_backbone
    from ssl_transfer.methods import METHODS, build_method

    m = build_method(METHODS.get("simsiam").config_cls(), build_backbone("cnn_tiny", (1, 8, 8)), (1, 8, 8))
    cfg = OptimConfig(optimizer="sgd", lr=0.1, weight_decay=1e-4, warmup_epochs=1)
    opt = build_optimizer(m, cfg)
    pred = {id(p) for p in m.prediction_head.parameters()}
    fixed = [g for g in opt.param_groups if g["fixed_lr"]]
    assert {id(p) for g in fixed for p in g["params"]} == pred
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in m.parameters() if p.requires_grad])
    assert {g["weight_decay"] for g in fixed} == {0.0, 1e-4}  # norms and biases still without decay
    sched = build_scheduler(opt, cfg, total_steps=10, steps_per_epoch=2)
    for _ in range(9):
        opt.step()
        sched.step()
    assert all(g["lr"] == pytest.approx(0.1) for g in fixed)
    assert all(g["lr"] < 0.01 for g in opt.param_groups if not g["fixed_lr"])
    plain = build_optimizer(
        build_method(
            METHODS.get("simsiam").config_cls(fix_predictor_lr=False), build_backbone("cnn_tiny", (1, 8, 8)), (1, 8, 8)
        ),
        cfg,
    )
    assert not any(g["fixed_lr"] for g in plain.param_groups)


def _lrs(cfg: OptimConfig, total_steps: int, steps_per_epoch: int) -> list[float]:
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_a_warmup_longer_than_the_run_is_cut_to_half_with_one_warning(caplog):
    # A recipe's 10 warm-up epochs in a 5-epoch run: before, the whole run was warm-up (peak never reached, no decay).
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        lrs = _lrs(OptimConfig(lr=1.0, warmup_epochs=10), total_steps=50, steps_per_epoch=10)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 24 and lrs[-1] < 0.01
    lines = [r.getMessage() for r in caplog.records if "warmup" in r.getMessage()]
    assert len(lines) == 1 and "optim.warmup_epochs=10" in lines[0] and "first half (25 steps)" in lines[0]


def test_a_warmup_of_half_the_run_or_more_warns_but_is_kept(caplog):
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        lrs = _lrs(OptimConfig(lr=1.0, warmup_epochs=3), total_steps=50, steps_per_epoch=10)
    assert lrs.index(max(lrs)) == 29
    assert sum("half of the run or more" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        _lrs(OptimConfig(lr=1.0, warmup_epochs=2), total_steps=50, steps_per_epoch=10)
    assert not caplog.records


def test_warmup_fraction_follows_the_run_and_excludes_warmup_epochs():
    assert warmup_steps(1000, 100, warmup_fraction=0.05) == 50 and warmup_steps(200, 100, warmup_fraction=0.05) == 10
    lrs = _lrs(OptimConfig(lr=1.0, warmup_fraction=0.1), total_steps=40, steps_per_epoch=10)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="set one of the two"):
        OptimConfig(warmup_epochs=1, warmup_fraction=0.1)


def test_finetune_schedule_follows_the_same_rule(caplog):
    from ssl_transfer.evaluation.finetune import finetune

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(64) % 2
    )
    enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        res = finetune(enc, 8, data, data, lambda x: x, 2, epochs=2, warmup_epochs=5, batch_size=32, min_steps=4)
    assert res["steps"] == 4
    assert any(
        "eval.finetune.warmup_epochs=5" in r.getMessage() and "first half (2 steps)" in r.getMessage()
        for r in caplog.records
    )


def test_lars_trust_coefficient_from_the_recipe_and_norms_not_adapted():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    opt = build_optimizer(
        model, OptimConfig(optimizer="lars", lr=1.0, momentum=0.0, weight_decay=1e-4, trust_coefficient=0.02)
    )
    assert {g["trust_coefficient"] for g in opt.param_groups} == {0.02}
    w = model[0].weight
    before = w.detach().clone()
    model(torch.randn(16, 4)).pow(2).sum().backward()
    opt.step()
    # the layer moves by lr x trust x |w| (the gradient's scale cancels out)
    assert (w.detach() - before).norm().item() == pytest.approx(0.02 * before.norm().item(), rel=0.02)
