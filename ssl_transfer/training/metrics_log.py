"""metrics.jsonl: one JSON object per logging call, always written, readable with pandas.read_json(lines=True)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only


class JsonlLogger(Logger):
    """Appends ``{"step": ..., "epoch": ..., "<metric>": value, "time": unix}`` lines to ``path``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The resolved recipe is saved as recipe.yaml; nothing to add here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        rec: dict[str, Any] = {"step": step}
        for k, v in metrics.items():
            rec[k] = int(v) if k == "epoch" else float(v)
        rec["time"] = round(time.time(), 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file, in order."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def truncate_after(path: str | Path, step: int) -> None:
    """Drop records logged after ``step`` (used when resuming from a checkpoint taken at ``step``)."""
    p = Path(path)
    if p.is_file():
        kept = [r for r in read_metrics(p) if r.get("step") is None or r["step"] <= step]
        p.write_text("".join(json.dumps(r) + "\n" for r in kept))
