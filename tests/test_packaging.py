"""The dependency declarations agree: pyproject's floors, constraints/minimal.txt (the floors) and
constraints/ci.txt (the versions CI installs)."""

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    return pins


def _declared() -> dict[str, Version]:
    """pyproject's dependencies and dev extra (read as text: tomllib needs Python 3.11, we support 3.10)."""
    text = re.sub(r"#.*", "", (REPO / "pyproject.toml").read_text())
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    dev = re.search(r"^dev = \[(.*?)\]", text, re.S | re.M)
    assert deps and dev
    floors = {}
    for spec in re.findall(r'"([^"]+)"', deps.group(1) + dev.group(1)):
        req = Requirement(spec)
        (floor,) = [s.version for s in req.specifier if s.operator == ">="]
        floors[re.sub(r"[-_.]+", "-", req.name).lower()] = Version(floor)
    return floors


def test_minimal_constraints_are_the_floors():
    minimal, floors = _pins(REPO / "constraints" / "minimal.txt"), _declared()
    assert {n: v for n, v in minimal.items() if n in floors} == {n: v for n, v in floors.items() if n in minimal}
    assert set(floors) - set(minimal) <= {
        "pytest",
        "pytest-timeout",
        "ruff",
        "mypy",
        "packaging",
    }


def test_ci_constraints_pin_every_dependency_at_or_above_its_floor():
    ci, floors = _pins(REPO / "constraints" / "ci.txt"), _declared()
    unpinned = set(floors) - set(ci) - {"torch", "torchvision"}  # pinned by the set-up line itself
    assert not unpinned, f"constraints/ci.txt lacks {sorted(unpinned)}"
    below = {n: (str(ci[n]), str(v)) for n, v in floors.items() if n in ci and ci[n] < v}
    assert not below, f"pinned below pyproject's floor: {below}"
