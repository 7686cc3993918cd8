"""benchmarks/stores.py and RESULTS.md sections: benchmarks that run side by side (the refresh pairs them) never
drop each other's sections or rows, and a section is written verbatim."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402


def _write_sections(results: str, key: str) -> None:
    common.RESULTS = Path(results)
    for i in range(15):
        common.write_section(key, f"## {key}\n\nversion {i}")


def test_sections_written_side_by_side_all_survive(tmp_path: Path, side_by_side):
    results = tmp_path / "RESULTS.md"
    side_by_side(_write_sections, [(str(results), k) for k in "abcd"])
    text = results.read_text()
    for k in "abcd":
        assert f"<!-- {k}:start -->\n## {k}\n\nversion 14\n<!-- {k}:end -->" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_section_is_written_verbatim(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    common.write_section("x", "first")
    body = r"regex \d+ and a path C:\new\table"
    common.write_section("x", body)  # replacing an existing block: backslashes are not escapes
    assert body in (tmp_path / "RESULTS.md").read_text()


@pytest.mark.parametrize("native", [True, False])
def test_the_machine_says_whether_its_cpu_has_native_bf16(monkeypatch, native):
    """Precision auto trains in bf16 only where the CPU has it (2-4x faster): two EPYCs read the same before."""
    import torch

    from ssl_transfer.training import performance

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(performance, "cpu_has_native_bf16", lambda: native)
    device = common.machine().split("; ")[0]
    assert device.endswith(", native bf16" if native else ", no native bf16")
