"""The console script, run as a user would (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_transfer.cli import main


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssl_transfer", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("sub", [[], ["pretrain"], ["run"], ["list"]])
def test_help(sub):
    r = cli(*sub, "-h")
    assert r.returncode == 0 and "usage: ssl-transfer" in r.stdout


def test_list_everything():
    r = cli("list", "methods")
    assert r.returncode == 0 and r.stdout.split()[0] == "ae" and "dae" in r.stdout
    assert "cnn_small" in cli("list", "backbones").stdout
    out = cli("list", "datasets").stdout
    assert all(s in out for s in ["digits", "npz", "mnist", "fashion_mnist", "cifar10", "stl10", "imagefolder"])
    assert "quickstart" in cli("list", "recipes").stdout


@pytest.mark.parametrize(
    "override,expected",
    [
        ("optim.lrr=0.1", "ssl-transfer: error: optim.lrr: unknown key (did you mean 'lr'?"),
        ("optim.lr=-0.1", "ssl-transfer: error: optim.lr: must be greater than 0 (got -0.1)"),
    ],
)
def test_bad_recipe_is_one_line_exit_2(tmp_path: Path, override, expected):
    r = cli("pretrain", "quickstart", override, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(expected)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_print_recipe_with_override_after_flag(capsys):
    assert main(["pretrain", "quickstart", "--print-recipe", "trainer.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "max_epochs: 2" in out and "name: quickstart" in out


def test_unknown_flag_still_fails(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "quickstart", "--bogus"])


def test_evaluate_command_on_a_run_dir(tmp_path: Path):
    from ssl_transfer.train import pretrain

    res = pretrain(
        {
            "name": "c",
            "output_dir": str(tmp_path),
            "data": {"limit_train": 300, "batch_size": 100},
            "trainer": {"max_epochs": 1, "progress_bar": False},
            "logging": {"wandb": "disabled"},
        }
    )
    r = cli("evaluate", str(res.run_dir), "--protocols", "knn,linear", "--labels-per-class", "5,all", "--seeds", "0,1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| knn |" in r.stdout and (res.run_dir / "eval" / "eval.json").is_file()
    # piped: one line per finished cell, (5 labels/class x 2 seeds + all labels) x (knn, linear)
    cells = [line for line in r.stderr.splitlines() if line.startswith("eval ")]
    assert [c.split(":")[0] for c in cells] == [f"eval {i}/6" for i in range(1, 7)], r.stderr[-2000:]
    assert all("top-1" in c and "\r" not in c for c in cells) and "5 labels/class, seed 1" in r.stderr
    bad = cli("evaluate", str(res.run_dir), "--labels-per-class", "five")
    assert bad.returncode == 2 and "--labels-per-class" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_piped_output_of_run_quickstart_is_short_and_readable(tmp_path: Path):
    """No Lightning banners or model-summary table; one line per epoch (loss, img/s, data wait, monitored kNN)."""
    cmd = [
        sys.executable,
        "-m",
        "ssl_transfer",
        "run",
        "quickstart",
        f"output_dir={tmp_path}",
        "logging.wandb=disabled",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stdout + out.stderr).splitlines()
    assert len(lines) < 40, "\n".join(lines)
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == 15 and all("img/s" in ln and "data wait" in ln and "monitored kNN" in ln for ln in epochs)
    text = "\n".join(lines)
    for noise in ("GPU available", "Total params", "model summary", "LeafSpec", "Tip:", "it/s"):
        assert noise not in text
    quiet = [*cmd[:3], "-q", *cmd[3:], "name=q", "trainer.max_epochs=1"]  # one epoch shows whether -q prints it
    quiet = subprocess.run(quiet, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and not any(ln.startswith("epoch ") for ln in quiet.stdout.splitlines())


def test_help_starts_without_torch_and_timm_still_finds_our_models():
    """`ssl-transfer -h` imports neither torch nor timm (it starts in well under a second); the small CNNs are
    registered with timm whenever timm is imported, before or after the package."""
    code = (
        "import sys, ssl_transfer.cli as c; c.build_parser(); "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, sorted(sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    for order in ("import ssl_transfer, timm", "import timm, ssl_transfer"):
        code = f"{order}; m = timm.create_model('cnn_tiny', num_classes=0); assert type(m).__name__ == 'TimmSmallCNN'"
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-1000:]
