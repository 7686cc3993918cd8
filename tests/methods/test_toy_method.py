"""Adding a method is one file: a toy method dropped into a copy of the package shows up in ``list methods``,
the registry that tests and benchmarks enumerate, the recipe schema, and trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_transfer

TOY = '''"""Toy: pull two views' embeddings together (a test's one-file method)."""

from typing import Literal

from pydantic import Field
from torch import Tensor

from ssl_transfer.methods.base import MethodConfig, PretextMethod
from ssl_transfer.methods.registry import METHODS


class ToyConfig(MethodConfig):
    name: Literal["toy"] = Field("toy", description="the registered method")


@METHODS.register("toy")
class Toy(PretextMethod):
    """Pull the two views' embeddings together (test only)."""

    config_cls = ToyConfig
    num_views = 2

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.forward_views(self.encoder, views)
        return {"loss": (z0 - z1).pow(2).mean()}
'''


@pytest.mark.slow
def test_a_new_method_is_one_file(tmp_path: Path):
    pkg = tmp_path / "ssl_transfer"
    shutil.copytree(Path(ssl_transfer.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "methods" / "toy.py").write_text(TOY)
    repo = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "from ssl_transfer.cli import main\n"
        "main(['list', 'methods'])\n"
        "from benchmarks.common import method_names\n"
        "from ssl_transfer.methods import METHODS\n"
        "from ssl_transfer.train import pretrain\n"
        "assert method_names('toy') == ['toy'] and 'toy' in METHODS.names()\n"
        f"res = pretrain({{'name': 't', 'output_dir': {str(tmp_path / 'runs')!r}, 'method': {{'name': 'toy'}},"
        " 'data': {'limit_train': 64, 'batch_size': 32}, 'trainer': {'max_epochs': 1, 'progress_bar': False},"
        " 'logging': {'wandb': 'disabled', 'plots': False}, 'monitor': {'enabled': False}})\n"
        "print('trained', res.run_dir.name)\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{repo}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [os.path.abspath(sys.executable), "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert any(line.startswith("toy ") for line in out.stdout.splitlines()), out.stdout
    assert "trained t" in out.stdout
