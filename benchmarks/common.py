"""Shared helpers for benchmark scripts: machine description and RESULTS.md sections."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from benchmarks.stores import update_text

RESULTS = Path(__file__).parent / "RESULTS.md"


def machine() -> str:
    """CPU model and count and whether it computes bf16 natively (where precision ``auto`` trains in bf16-mixed,
    else in float32, 2-4x slower), or the GPU name; plus the versions of torch and the libraries results depend on."""
    import torch

    from ssl_transfer.training.performance import cpu_has_native_bf16

    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    else:
        model = ""
        try:
            model = next(
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            )
        except (OSError, StopIteration):
            model = platform.processor()
        pin = pinned_cpus()
        cores = f"{os.cpu_count()} cores visible" + (f", pinned to {len(pin)}" if pin else "")
        bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
        dev = f"{model}, {cores}, {torch.get_num_threads()} torch threads, {bf16}"
    return f"{dev}; {package_versions()}"


def pinned_cpus() -> list[int] | None:
    """The CPUs this process is pinned to (as ``taskset -c`` sets them), or None when it may use all of them."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cpus if cpus and len(cpus) < (os.cpu_count() or 0) else None


def package_versions() -> str:
    """Versions of the packages a result depends on: ``torch 2.14.1, torchvision 0.29.1, timm 1.0.31, ...``."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "torchvision", "timm", "lightly", "pytorch-lightning", "kornia", "faiss-cpu", "numpy"]
    found = []
    for n in names:
        try:
            found.append(f"{n.removesuffix('-cpu')} {version(n)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


# What a benchmark number cannot depend on (globs: ``*`` spans folders): the results themselves, tests, prose, and
# the files no benchmark reads (git's ignore list, the CI script, the minimal-versions test job's pins).
NOT_CODE_GLOBS = (
    "benchmarks/results/*",
    "benchmarks/*.png",
    "*.md",
    "tests/*",
    ".gitignore",
    ".ci/*",
    "constraints/minimal.txt",
)
NOT_CODE = tuple(f":!{g}" for g in NOT_CODE_GLOBS)  # as git pathspecs


def is_code(path: str) -> bool:
    """Whether a number can depend on the file at ``path`` (relative to the repository root)."""
    return not any(fnmatch.fnmatch(path, g) for g in NOT_CODE_GLOBS)


def code_files(commit: str) -> dict[str, str]:
    """``path -> blob id`` of every file at ``commit`` that a number can depend on (:func:`is_code`)."""
    out = subprocess.run(
        ["git", "ls-tree", "-r", "--full-tree", commit], capture_output=True, text=True, check=True
    ).stdout
    files = {}
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        if is_code(path):
            files[path] = meta.split()[2]
    return files


def git_rev() -> str:
    """The code commit: the last commit that changed anything a number can depend on (package, recipes, benchmark
    scripts, pins; not tests, Markdown, results or CI files), with ``-dirty`` when that code differs from it. Runs
    made at different commits that touched only tests or prose name the same code commit."""
    try:
        rev = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", ".", *NOT_CODE], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}-dirty" if changed else rev or "unknown"


def load_json(path: Path) -> dict | None:
    """A results store, or None when there is none yet."""
    return json.loads(path.read_text()) if path.exists() else None


def save_json(path: Path, obj: object) -> None:
    """Write a results store (indented JSON), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def write_section(key: str, body: str, first: bool = False) -> None:
    """Replace the block between ``<!-- key:start -->`` and ``<!-- key:end -->`` in RESULTS.md, or add it: at the
    end, or under the title with ``first``."""
    block = f"<!-- {key}:start -->\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)

    def put(text: str | None) -> str:
        text = text or "# Benchmark results\n\nEach section names the command that produced it.\n"
        if pattern.search(text):
            return pattern.sub(lambda _: block, text)  # the block verbatim (a backslash in it is no escape)
        if first:
            title, rest = text.split("\n", 1)
            return f"{title}\n\n{block}\n{rest}"
        return text.rstrip() + "\n\n" + block + "\n"

    update_text(RESULTS, put)  # under a lock: two benchmarks side by side never drop each other's sections


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def command_line(
    script: str, parser: argparse.ArgumentParser, args: argparse.Namespace, skip: tuple[str, ...] = ("no_render",)
) -> str:
    """The command that reproduces a run: ``python benchmarks/<script>`` plus every option not left at its default.
    Run as one unit of ``benchmarks/refresh.py`` (which sets ``REFRESH_COMMAND``), a section is the work of many
    such processes: the refresh command reproduces it, and the unit's own command follows."""
    opts = "".join(
        f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in vars(args).items()
        if k not in skip and v != parser.get_default(k)
    )
    own = f"python benchmarks/{script}{opts}"
    refresh = os.environ.get("REFRESH_COMMAND")
    return f"{refresh}{_UNIT_OF}{own})" if refresh else own


_UNIT_OF = " (one process per unit; the last here: "  # joins a refresh's command and its unit's in command_line


def commands_text(commands: list[str]) -> str:
    """The commands behind a section's rows, each once, in backticks: the units of one refresh
    (:func:`command_line` under ``REFRESH_COMMAND``) as that refresh command followed by each unit's own."""
    refreshes: dict[str, list[str]] = {}
    plain = []
    for c in dict.fromkeys(commands):
        if _UNIT_OF in c and c.endswith(")"):
            refresh, own = c[:-1].split(_UNIT_OF, 1)
            refreshes.setdefault(refresh, []).append(own)
        else:
            plain.append(c)
    parts = [f"`{c}`" for c in plain]
    parts += [f"`{r}`, one process per unit: " + ", ".join(f"`{o}`" for o in owns) for r, owns in refreshes.items()]
    return "; ".join(parts)


def machine_tags(machines: list[list[str]]) -> tuple[list[str], str]:
    """Short tags for the machines each row ran on (``A``, ``B``, ... in order of first appearance; ``A, B`` for a
    row whose runs spread over two) and the legend that spells the tags out. A row that recorded no machine (from
    before rows named theirs) gets ``?``."""
    order = list(dict.fromkeys(m for ms in machines for m in ms))
    tag = {m: chr(ord("A") + i) for i, m in enumerate(order)}
    legend = "; ".join(f"**{tag[m]}**: {m}" for m in order)
    if any(not ms for ms in machines):
        legend += ("; " if legend else "") + "**?**: not recorded (a row from before rows named their machine)"
    return [", ".join(tag[m] for m in ms) or "?" for ms in machines], legend


def section_text(key: str) -> str | None:
    """The RESULTS.md block written under ``key``, or None where RESULTS.md has none."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    start = f"<!-- {key}:start -->"
    return text.split(start, 1)[1].split(f"<!-- {key}:end -->")[0] if start in text else None


def print_section(key: str) -> None:
    """Print the RESULTS.md block written under ``key``."""
    print(section_text(key))


def method_names(arg: str) -> list[str]:
    """Comma-separated method names, each checked against the registry (unknown names fail loudly)."""
    from ssl_transfer.methods import METHODS

    names = [m for m in arg.split(",") if m]
    for m in names:
        METHODS.get(m)
    return names


TEACHER_METHOD = "simclr"  # a distilling method's teacher: the same benchmark's run of this method


def distils(method: str) -> bool:
    """True when ``method`` learns from a trained teacher (its config has a ``teacher`` field)."""
    from ssl_transfer.methods import METHODS

    return "teacher" in METHODS.get(method).config_cls.model_fields


def teacher_override(method: str, teacher_run: Path) -> list[str]:
    """The recipe override that points a distilling method at ``teacher_run``; none for other methods. The teacher
    run must exist: benchmarks train ``TEACHER_METHOD`` first (:func:`with_teacher_first`)."""
    if not distils(method):
        return []
    if not (teacher_run / "encoder.safetensors").is_file():
        raise SystemExit(f"{method} distils {TEACHER_METHOD}'s run, but there is none at {teacher_run}: run it first")
    return [f"method.teacher={teacher_run}"]


def with_teacher_first(methods: list[str], teacher_run: Path) -> list[str]:
    """``methods`` in run order: ``TEACHER_METHOD`` before any method that distils it, added when its run is
    missing."""
    if not any(distils(m) for m in methods):
        return methods
    rest = [m for m in methods if m != TEACHER_METHOD]
    if TEACHER_METHOD in methods or not (teacher_run / "encoder.safetensors").is_file():
        return [TEACHER_METHOD, *rest]
    return rest
