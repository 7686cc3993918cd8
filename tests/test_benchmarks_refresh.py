"""benchmarks/refresh.py: units run in order, paired ones side by side, finished ones are not run again."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import refresh  # noqa: E402


def _unit(name: str, log: Path, seconds: float = 0.0, paired: bool = False, code: int = 0) -> refresh.Unit:
    script = (
        "import sys, time; "
        f"open({str(log)!r}, 'a').write(f'start {name} {{time.time()}}\\n'); time.sleep({seconds}); "
        f"open({str(log)!r}, 'a').write(f'end {name} {{time.time()}}\\n'); sys.exit({code})"
    )
    return refresh.Unit(name, [sys.executable, "-c", script], paired=paired)


def _events(log: Path) -> list[tuple[str, str, float]]:
    return [(k, n, float(t)) for k, n, t in (line.split() for line in log.read_text().splitlines())]


def test_paired_units_overlap_and_others_run_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    units = [
        _unit("a", log, 0.3),
        _unit("p1", log, 4.0, paired=True),
        _unit("p2", log, 4.0, paired=True),
        _unit("b", log),
    ]
    refresh.run(units, {"git": "x", "done": {}})
    ev = _events(log)
    order = [n for k, n, _ in ev if k == "start"]
    assert order[0] == "a" and set(order[1:3]) == {"p1", "p2"} and order[3] == "b"  # the pair may start either way
    t = {(k, n): s for k, n, s in ev}
    assert t[("start", "p2")] < t[("end", "p1")] and t[("start", "p1")] < t[("end", "p2")]  # side by side
    assert t[("start", "p1")] >= t[("end", "a")] and t[("start", "b")] >= max(t[("end", "p1")], t[("end", "p2")])


def test_done_units_are_skipped_and_a_new_code_commit_starts_over(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    state = refresh.load_state("abc1234")
    refresh.run([_unit("a", log)], state)
    state = refresh.load_state("abc1234")
    assert set(state["done"]) == {"a"}
    refresh.run([_unit("a", log), _unit("b", log)], state)
    assert [n for k, n, _ in _events(log) if k == "start"] == ["a", "b"]
    assert refresh.load_state("def5678")["done"] == {}


def test_a_failing_unit_stops_the_refresh_and_names_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    state = refresh.load_state("abc1234")
    with pytest.raises(SystemExit, match="broken failed"):
        refresh.run([_unit("ok", log), _unit("broken", log, code=3), _unit("after", log)], state)
    assert set(refresh.load_state("abc1234")["done"]) == {"ok"}
    assert "after" not in log.read_text()


def test_every_registered_method_has_its_units():
    from benchmarks.parity import NO_REFERENCE
    from ssl_transfer.methods import METHODS

    names = {u.name for u in refresh.units("/tmp/cifar")}
    for m in METHODS.names():
        assert {f"mnist_knn:{m}", f"quality:cifar50k:{m}"} <= names
        assert (f"parity:{m}" in names) == (m not in NO_REFERENCE)


def test_stamp_names_the_commit_once_under_the_title(tmp_path, monkeypatch):
    from benchmarks import common

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- a:start -->\ntable\n<!-- a:end -->\n")
    monkeypatch.setattr(common, "RESULTS", results)
    refresh.stamp("abc1234")
    refresh.stamp("def5678")
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n<!-- refresh:start -->\n")
    assert text.count("refresh:start") == 1 and "def5678" in text and "abc1234" not in text
    assert text.rstrip().endswith("<!-- a:end -->")


def test_a_units_section_names_the_refresh_command(monkeypatch):
    import argparse

    from benchmarks.common import command_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="a,b")
    args = ap.parse_args(["--methods", "b"])
    monkeypatch.delenv("REFRESH_COMMAND", raising=False)
    assert command_line("quality.py", ap, args) == "python benchmarks/quality.py --methods b"
    monkeypatch.setenv("REFRESH_COMMAND", "python benchmarks/refresh.py --data-dir D")
    assert command_line("quality.py", ap, args) == (
        "python benchmarks/refresh.py --data-dir D (one process per unit; the last here: "
        "python benchmarks/quality.py --methods b)"
    )
