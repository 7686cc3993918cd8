"""benchmarks/mnist_knn.py: each row records the machine and commit it ran at, and the section names them per row
(the store used to keep one machine line per table, so a refresh of four rows relabelled all thirteen)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import mnist_knn  # noqa: E402


def _row(name: str, top1: float, **where: str) -> dict:
    return {
        "method": name,
        "backbone": "cnn_tiny",
        "epochs": 5,
        "batch_size": 256,
        "augment": "digits",
        "train_images": 60000,
        "pretrain_seconds": 200.0,
        "top1": top1,
        "top5": 0.99,
        "target": 0.95,
        "overrides": [],
        **where,
    }


def _ref(name: str, **where: str) -> dict:
    return {"method": f"{name} (reference)", "top1": 0.66, "top5": 0.94, **where}


def _section(monkeypatch, store: dict) -> dict[str, str]:
    written: dict[str, str] = {}
    monkeypatch.setattr(mnist_knn, "write_section", lambda key, body: written.__setitem__(key, body))
    mnist_knn.render(store, "python benchmarks/mnist_knn.py")
    return written


def test_each_row_names_the_machine_and_commit_it_ran_at(monkeypatch):
    store = {
        "methods": {
            "simclr": _row("simclr", 0.98, machine="AMD EPYC", git="new1234"),
            "byol": _row("byol", 0.96, machine="Intel Xeon", git="old5678"),
            "moco": _row("moco", 0.97),  # from before rows named their machine
        },
        "references": [_ref("raw pixels", machine="AMD EPYC", git="new1234")],
    }
    body = _section(monkeypatch, store)["mnist_knn"]
    rows = {ln.split("|")[1].strip(): ln for ln in body.splitlines() if ln.startswith("| ")}
    assert rows["byol"].endswith("| A |") and rows["simclr"].endswith("| B |") and rows["moco"].endswith("| ? |")
    assert rows["raw pixels (reference)"].endswith("| B |")
    assert "**A**: Intel Xeon; **B**: AMD EPYC; **?**: not recorded" in body
    assert "(git new1234, not recorded, old5678)" in body


def test_a_run_stamps_the_rows_it_writes_and_keeps_the_others(tmp_path, monkeypatch):
    store_path = tmp_path / "mnist_knn.json"
    old = {
        "methods": {"byol": _row("byol", 0.96, machine="Intel Xeon", git="old5678")},
        "references": [_ref("raw pixels", machine="Intel Xeon", git="old5678")],
    }
    store_path.write_text(json.dumps(old))
    monkeypatch.setattr(mnist_knn, "STORE", store_path)
    monkeypatch.setattr(mnist_knn, "git_rev", lambda: "new1234")
    monkeypatch.setattr(mnist_knn, "machine", lambda: "AMD EPYC")
    monkeypatch.setattr(mnist_knn, "run_method", lambda name, extra, out: _row(name, 0.98))
    monkeypatch.setattr(mnist_knn, "references", lambda path: [_ref("raw pixels")])
    monkeypatch.setattr(sys, "argv", ["mnist_knn.py", "--methods", "simclr", "--no-render", "--out", str(tmp_path)])
    mnist_knn.main()
    store = json.loads(store_path.read_text())
    assert (store["methods"]["byol"]["machine"], store["methods"]["byol"]["git"]) == ("Intel Xeon", "old5678")
    assert (store["methods"]["simclr"]["machine"], store["methods"]["simclr"]["git"]) == ("AMD EPYC", "new1234")
    assert [(r["machine"], r["git"]) for r in store["references"]] == [("AMD EPYC", "new1234")]
    assert "machine" not in store and "git" not in store
