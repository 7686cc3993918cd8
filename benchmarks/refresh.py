"""Refresh every CPU table of RESULTS.md from one code commit, across as many sessions as it takes.

    python benchmarks/refresh.py --data-dir /tmp/cifar          # run what this code commit has not run yet
    python benchmarks/refresh.py --status                       # what is done, what is left
    python benchmarks/refresh.py --data-dir /tmp/cifar --only "quality:cifar50k:vae,parity:*"  # some units only

The code commit is the last commit that changed anything a number can depend on (``benchmarks.common.git_rev``:
everything but tests, Markdown and results), and the tree must be clean. Work is split into units (one benchmark
command, or one method of the long ones). A finished unit is recorded in ``benchmarks/results/refresh.json`` with
the commit it ran at and the key of its inputs (:func:`unit_key`: its command line and the content of every code
file it can read: of the package the files its scripts can import (:func:`package_closure`; not the command line),
less the files that belong to other methods, the recipe files it loads (:attr:`Unit.recipes`: parity none, the
MNIST units the MNIST ones), and of ``benchmarks/`` only its script and what that imports, less other methods'
entries in its per-method tables; Python files by their syntax tree less docstrings, help texts and the functions
that only report (:data:`REPORTING`), :func:`code_id`). At a later code commit a unit whose key is unchanged would
compute from the same code (up to comments, docstrings, help, formatting and reporting), so it stays done; the
others run again. At the end of each refresh every section whose renderer is left out of the keys is written again
from its store (:func:`rerender`; ``--render`` does only that), so a change to a table's layout never leaves a stale
table. A unit that reports no linear-probe number leaves the probe's code out of its key. A 50k quality unit whose
key changed only by the probe's code (its pretraining key is that of its last run) evaluates the runs it kept again
(``benchmarks/quality_reevaluate.py``) instead of pretraining for an hour, where those runs are still here;
``--no-reuse`` runs it in full. A unit stopped by the end of a session (or a kill) keeps what it finished: a parity
unit its finished seeds, a folder comparison its cut run (which resumes); a quality or kNN unit starts over. The
quality benchmark's 50k units and the parity units run two at a time with one thread each (faster on 2 cores than
one process with two; ``--jobs 1 --threads 2``: one at a time on both, for a unit a session cannot hold on one).
Two refresh processes with disjoint ``--only`` lists (``--jobs 1`` each, e.g. one started on a core another has
just freed) keep each other's records: a unit's record merges what the other wrote since, and a unit the other
recorded meanwhile is not run again. Units that read runs other units keep under ``benchmarks/runs`` (not in git:
a fresh clone has none) name them; where such a run holds no encoder, the unit that makes it runs again first.
When every unit is done, the top of RESULTS.md names the code commit once. The GPU protocol table is not part of it:
it needs a GPU (``benchmarks/protocol_reference.py``). The folder comparisons with LightlyTrain (the last units, one
core pinned) run its ``lightly-train`` from its own virtual environment (``--lightly-train``; AGPL, never imported):
a refresh that has them left and no such executable says how to make one before it runs anything.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    TEACHER_METHOD,
    code_files,
    distils,
    git_rev,
    is_code,
    load_json,
    save_json,
    section_text,
    write_section,
)
from benchmarks.folder_throughput import LIGHTLY_TRAIN, LIGHTLY_TRAIN_SETUP  # noqa: E402
from benchmarks.parity import NO_REFERENCE  # noqa: E402
from ssl_transfer.methods import METHODS  # noqa: E402
from ssl_transfer.training.performance import cpu_has_native_bf16  # noqa: E402

STATE = Path(__file__).parent / "results" / "refresh.json"
RUNS = "benchmarks/runs"


@dataclass(frozen=True)
class Unit:
    name: str
    argv: list[str]
    paired: bool = False  # may run beside another paired unit, one thread each
    env: dict[str, str] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None  # the methods whose files it reads; None: every method's
    prefix: tuple[str, ...] = ()  # run under this command (``taskset -c 1``: a timing pinned to one core)
    needs: tuple[tuple[str, str], ...] = ()  # (path, how to make it): files it runs, checked before any unit runs
    reports_linear: bool = True  # False: it reports no linear-probe number, so LINEAR_PROBE_FILES are out of its key
    # argv that recomputes its numbers from the runs it keeps, without pretraining again: run instead of argv when
    # only LINEAR_PROBE_FILES changed since it last ran (its pretraining key is unchanged, :func:`reusable`)
    reevaluate: tuple[str, ...] = ()
    # (run folder, the unit that keeps it there): runs of other units it reads (benchmarks/runs is not in git, so a
    # fresh clone has none); the maker runs again first when the folder holds no encoder, :func:`with_makers`
    reads: tuple[tuple[str, str], ...] = ()
    # the recipe files it (or a unit whose runs it reads) loads, as fnmatch patterns (``recipes/*_mnist.yaml``), of
    # those its methods' files leave in; None: all of them. A unit that builds its recipes in code reads none, so
    # a change to MAE's MNIST recipe redoes MAE's MNIST units, not its parity or CIFAR runs
    recipes: tuple[str, ...] | None = None
    keeps: tuple[str, ...] = ()  # the run folders its ``reevaluate`` reads (it keeps them under benchmarks/runs)


def method_inputs(m: str) -> tuple[str, ...]:
    """The methods whose files a unit of ``m`` reads: ``m``, and the teacher it distils."""
    return (m, TEACHER_METHOD) if distils(m) else (m,)


EPOCHS_50K = 20  # the stated budget of the 50k CIFAR-10 quality runs (issue 12)
# The folder comparisons with LightlyTrain (issue 15): (training images, epochs, image sizes) of each table, each
# size one unit, timed on one pinned core as the tables were measured. The longer budget runs at 64 px only: at
# 128 px its 6 runs took 2 h at 231c4f6 and would take about 7 h on an EPYC without native bf16 (LightlyTrain's
# first run there: 10 s per step), more than a session holds, and a cut run starts over; the 1,000-image budget
# measures 128 and 224 px.
FOLDER_STUDIES = ((4000, 10, (64,)), (1000, 2, (64, 128, 224)))
PIN = ("taskset", "-c", "1")
# The methods whose files the units that pretrain or read no method of their own depend on: SimCLR (throughput,
# the monitor's overhead and the folder comparisons train it; label efficiency, the kNN comparison and the linear
# probe read encoders it made, the probe also VICReg's); the folder start-up reads none. Without them such a unit's
# key would read every method's recipes, so that a change to one method's recipe redid the timing tables.
SIMCLR = ("simclr",)
MNIST_RECIPES = ("recipes/*_mnist.yaml",)  # what quality.py --datasets mnist and mnist_knn.py load
CIFAR_RECIPES = ("recipes/*_cifar10.yaml",)  # what quality.py --datasets cifar / cifar50k and monitor_overhead load
BENCH_SIMCLR = f"{RUNS}/bench-simclr"  # the MNIST encoder the 5-epoch kNN table keeps
MNIST_SIMCLR = ((BENCH_SIMCLR, "mnist_knn:simclr"),)


def run_50k(m: str) -> str:
    """The run folder ``quality:cifar50k:<m>`` keeps (its encoder is the linear probe's CIFAR encoder for one m)."""
    return f"{RUNS}/quality/cifar50k-{m}"


def units(data_dir: str, lightly_train: str = LIGHTLY_TRAIN) -> list[Unit]:
    """Every unit of a refresh, in the order they run: the riskiest first (parity, whose rule a method can fail,
    so that a fix resets as little finished work as possible), then the longest (50k CIFAR-10), then the rest;
    later units read encoders that earlier ones keep under ``benchmarks/runs``."""
    methods = METHODS.names()
    py = [sys.executable]
    by_cost = sorted(methods, key=lambda m: -METHODS.get(m).num_views)  # two-view methods first
    out = [
        Unit(
            f"parity:{m}",
            [*py, "benchmarks/parity.py", "--methods", m, "--keep"],
            paired=True,
            env={"OMP_NUM_THREADS": "1"},
            methods=method_inputs(m),
            reports_linear=False,
            recipes=(),  # parity.py builds both sides' settings in code (its specs)
        )
        for m in methods
        if m not in NO_REFERENCE
    ]

    def args_50k(m: str) -> list[str]:
        return ["--datasets", "cifar50k", "--epochs-cifar50k", str(EPOCHS_50K), "--methods", m]

    keep = ["--data-dir", data_dir, "--runs-dir", f"{RUNS}/quality"]
    out += [
        Unit(
            f"quality:cifar50k:{m}",
            [*py, "benchmarks/quality.py", *args_50k(m), *keep],
            paired=True,
            env={"OMP_NUM_THREADS": "1"},
            methods=method_inputs(m),
            reevaluate=(*py, "benchmarks/quality_reevaluate.py", *args_50k(m), *keep),
            keeps=(run_50k(m),),
            recipes=CIFAR_RECIPES,
        )
        for m in by_cost
    ]
    out += [
        Unit(
            f"mnist_knn:{m}",
            [*py, "benchmarks/mnist_knn.py", "--methods", m, "--note", ""],
            methods=method_inputs(m),
            reports_linear=False,
            recipes=MNIST_RECIPES,
        )
        for m in methods
    ]
    out += [
        Unit(
            "label_efficiency",
            [*py, "benchmarks/label_efficiency.py", "--encoder", BENCH_SIMCLR],
            methods=SIMCLR,
            reads=MNIST_SIMCLR,
            recipes=MNIST_RECIPES,
        ),
        Unit(
            "knn_faiss_vs_sklearn",
            [*py, "benchmarks/knn_faiss_vs_sklearn.py", "--encoder", BENCH_SIMCLR],
            methods=SIMCLR,
            reports_linear=False,
            reads=MNIST_SIMCLR,
            recipes=MNIST_RECIPES,
        ),
        Unit("throughput", [*py, "benchmarks/throughput.py"], methods=SIMCLR, reports_linear=False, recipes=()),
        Unit(
            "monitor_overhead",
            [*py, "benchmarks/monitor_overhead.py"],
            methods=SIMCLR,
            reports_linear=False,
            recipes=CIFAR_RECIPES,
        ),
    ]
    for ds in ("mnist", "cifar"):
        out += [
            Unit(
                f"quality:{ds}:{m}",
                [*py, "benchmarks/quality.py", "--datasets", ds, "--methods", m],
                methods=method_inputs(m),
                recipes=MNIST_RECIPES if ds == "mnist" else CIFAR_RECIPES,
            )
            for m in methods
        ]
    # the probe's CIFAR encoder: VICReg's 50k run, one of the cheapest two-view runs to make again (182 s per
    # epoch against MoCo's 225, both in bf16 on one thread at d7c44b3), which every fresh machine must
    probe_method = "vicreg"
    enc = run_50k(probe_method)
    cases = [f"mnist={BENCH_SIMCLR}", f"cifar={enc}", f"cifar50k={enc}", f"cifar50k-to-mnist={enc}"]
    out.append(
        Unit(
            "linear_probe",
            [*py, "benchmarks/linear_probe.py", *(a for c in cases for a in ("--case", c)), "--data-dir", data_dir],
            methods=(*SIMCLR, probe_method),
            reads=(*MNIST_SIMCLR, (enc, f"quality:cifar50k:{probe_method}")),
            recipes=(*MNIST_RECIPES, *CIFAR_RECIPES),
        )
    )
    out.append(
        Unit("folder_startup", [*py, "benchmarks/folder_startup.py"], methods=(), reports_linear=False, recipes=())
    )
    out += [
        Unit(
            f"folder_throughput:n{n}-e{epochs}:{size}",
            [*py, "benchmarks/folder_throughput.py", "--sizes", str(size), "--n-train", str(n), "--epochs", str(epochs)]
            + ["--data-dir", data_dir, "--lightly-train", lightly_train, "--work", f"{RUNS}/folder_throughput"],
            prefix=PIN,
            methods=SIMCLR,
            needs=((lightly_train, LIGHTLY_TRAIN_SETUP),),
            reports_linear=False,
            recipes=(),  # its recipe is built in code
        )
        for n, epochs, sizes in FOLDER_STUDIES
        for size in sizes
    ]
    return out


def holds_encoder(run_dir: str) -> bool:
    """Whether the run folder ``run_dir`` holds a finished run's encoder (a cut run or a fresh clone has none)."""
    return (Path(run_dir) / "encoder.safetensors").is_file()


def with_makers(chosen: list[Unit], unit_list: list[Unit], state: dict) -> tuple[list[Unit], set[str], list[str]]:
    """``chosen`` and, in the refresh's order, the units that make the runs its units left to do read where those
    runs hold no encoder (a fresh clone, a cleaned ``benchmarks/runs``): they run again even where done, and their
    rows are measured again. Returns (units to run, the done ones among them to run again, one line each)."""
    left = [u for u in chosen if u.name not in state["done"]]
    missing: dict[str, list[str]] = {}
    for u in left:
        for path, maker in u.reads:
            if not holds_encoder(path):
                missing.setdefault(maker, []).append(f"{u.name} reads {path}")
    names = {u.name for u in chosen} | set(missing)
    again = {m for m in missing if m in state["done"]}
    lines = [f"{m} runs again first: {'; '.join(why)}, which holds no encoder here" for m, why in missing.items()]
    return [u for u in unit_list if u.name in names], again, lines


def missing_needs(unit_list: list[Unit], state: dict) -> list[str]:
    """One line per missing file that units not done yet run: the path, the first such unit, how to make it."""
    first: dict[str, tuple[str, str]] = {}
    for u in unit_list:
        if u.name not in state["done"]:
            for path, how in u.needs:
                if not Path(path).exists():
                    first.setdefault(path, (u.name, how))
    return [f"{path} (for {name}, ...): {how}" for path, (name, how) in first.items()]


# The files that belong to one method alone (``{m}``: its name): the module named after it and its recipes. A
# module that defines several methods (``siamese.py``: siamese and triplet) stays in the keys of each of them; one
# named after none (``autoencoder.py``) is in every unit's key.
# The linear probe's own code: it computes linear-probe numbers and nothing else (pretraining never calls it; kNN,
# the monitor and fine-tuning do not read it), so a unit that reports no such number computes the same with any
# version of it (mnist_knn's runs fit a probe they do not report).
LINEAR_PROBE_FILES = ("ssl_transfer/evaluation/linear.py",)
METHOD_FILES = ("ssl_transfer/methods/{m}.py", "recipes/{m}_*.yaml", "recipes/protocols/*_{m}_*.yaml")
_IMPORT = re.compile(r"^\s*from benchmarks(?:\.(\w+))? import \(?([\w, ]*)", re.M)


def defining_module(m: str) -> str:
    """The path of the module that defines method ``m`` (``triplet``: ``ssl_transfer/methods/siamese.py``)."""
    return METHODS.get(m).__module__.replace(".", "/") + ".py"


def benchmark_closure(files: dict[str, str], script: str, read) -> set[str]:
    """``script`` and every ``benchmarks/`` module it imports, directly or not (``read(path)``: the text)."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen or path not in files:
            continue
        seen.add(path)
        for mod, names in _IMPORT.findall(read(path)):
            targets = [mod] if mod else [n.strip() for n in names.split(",") if n.strip()]
            todo += [f"benchmarks/{t}.py" for t in targets]
    return seen


_IMPORTS: dict[tuple[str, str], frozenset[str]] = {}  # (path, code id) -> the package modules it can import
_PACKAGE_MODULE = re.compile(r"^ssl_transfer(?:\.\w+)*$")


def _module_file(module: str, files: dict[str, str]) -> str | None:
    """``ssl_transfer.data.loading`` -> ``ssl_transfer/data/loading.py`` (or the package's ``__init__.py``)."""
    base = module.replace(".", "/")
    return next((p for p in (f"{base}.py", f"{base}/__init__.py") if p in files), None)


def _imported_modules(path: str, tree: ast.Module, files: dict[str, str]) -> set[str]:
    """Every ``ssl_transfer`` module the file ``path`` can import, read conservatively from its syntax tree: import
    statements anywhere (also inside functions), ``from X import name`` as both X and X.name, relative imports,
    every string that names a package module (the lazy ``_API`` / ``_LAZY`` tables of the ``__init__`` files), and
    every module of its own folder where it iterates them (``pkgutil.iter_modules``, the method registry)."""
    package = path.rsplit("/", 1)[0].replace("/", ".")
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _PACKAGE_MODULE.match(node.value):
            out.add(node.value)
        elif isinstance(node, ast.Attribute) and node.attr == "iter_modules":
            folder = path.rsplit("/", 1)[0]
            out.update(
                f.removesuffix(".py").replace("/", ".")
                for f in files
                if f.endswith(".py") and f.rsplit("/", 1)[0] == folder
            )
    return {m for m in out if _PACKAGE_MODULE.match(m)}


def package_closure(files: dict[str, str], scripts: set[str], read) -> set[str]:
    """The package's Python files that the benchmark ``scripts`` can import, directly or not (each import also runs
    the ``__init__.py`` of every package above it): what a unit's numbers can depend on in ``ssl_transfer/``. The
    command line (``cli.py``), for one, is in no benchmark's closure. A file that does not parse counts as
    importing the whole package."""
    package = {p for p in files if p.startswith("ssl_transfer/") and p.endswith(".py")}
    seen: set[str] = set()
    todo = sorted(scripts)
    while todo:
        path = todo.pop()
        if path in seen or path not in files:
            continue
        seen.add(path)
        cid = files[path]
        modules = _IMPORTS.get((path, cid)) if cid.startswith("ast:") else None  # a code id names its syntax tree
        if modules is None:
            try:
                modules = frozenset(_imported_modules(path, ast.parse(read(path)), files))
            except SyntaxError:
                return package
            if cid.startswith("ast:"):
                _IMPORTS[path, cid] = modules
        for module in modules:
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(".".join(parts[:i]), files)
                if found:
                    todo.append(found)
    return seen & package


def unit_key(unit: Unit, files: dict[str, str], methods: list[str], read, pretraining: bool = False) -> str:
    """A hash of everything ``unit`` computes from: its command line and environment, and the blob of each code
    file it can read (``files``: path -> blob at one commit; ``read(path)``: a file's text there). Files of the
    methods it does not run, and benchmark scripts its own does not import, are left out; its ``reevaluate``
    script's imports are in. ``pretraining``: the key of what its runs came from, which leaves out the linear
    probe's code and the re-evaluating script (equal keys: its kept runs are what a rerun would train)."""
    others = frozenset(methods) - set(unit.methods) if unit.methods is not None else frozenset()
    names = frozenset(methods)
    own = {defining_module(m) for m in unit.methods or ()}
    owned = [p for m in others for p in (g.format(m=m) for g in METHOD_FILES) if p not in own]
    scripts = [unit.argv[1] if len(unit.argv) > 1 else ""]
    if unit.reevaluate and not pretraining:
        scripts.append(unit.reevaluate[1])
    bench = {"benchmarks/__init__.py"}.union(*(benchmark_closure(files, s, read) for s in scripts))
    imported = package_closure(files, bench, read)
    no_probe = pretraining or not unit.reports_linear
    h = hashlib.sha256(repr((unit.argv[1:], sorted(unit.env.items()))).encode())
    if unit.prefix:
        h.update(repr(unit.prefix).encode())
    for path, blob in sorted(files.items()):
        if not is_code(path) or (path.startswith("benchmarks/") and path not in bench):
            continue
        package_module = path.startswith("ssl_transfer/") and path.endswith(".py")
        if package_module and not path.startswith("ssl_transfer/methods/") and path not in imported:
            continue  # (method files: by the methods the unit runs, below)
        if any(fnmatch.fnmatch(path, g) for g in owned) or (no_probe and path in LINEAR_PROBE_FILES):
            continue
        if (
            unit.recipes is not None
            and path.startswith("recipes/")
            and not any(fnmatch.fnmatch(path, g) for g in unit.recipes)
        ):
            continue
        if path.startswith("benchmarks/"):
            blob = without_methods(path, blob, read, others, names)
        h.update(f"{path} {blob}\n".encode())
    return h.hexdigest()[:16]


# The functions of each benchmark module that only turn stored results (and the machine's description) into text,
# tables and plots: no number a unit records is computed by them, so a change to one keeps every unit done.
# :func:`rerender` writes their sections again at the end of a refresh. A function belongs here only if nothing
# outside this set calls it to compute a stored value (tests/test_benchmarks_refresh.py checks the call graph).
REPORTING: dict[str, frozenset[str]] = {
    "benchmarks/common.py": frozenset(
        {
            "machine",
            "package_versions",
            "write_section",
            "markdown_table",
            "command_line",
            "commands_text",
            "machine_tags",
            "print_section",
            "section_text",
        }
    ),
    "benchmarks/quality.py": frozenset({"batch_label", "dataset_rows", "precision_text", "render", "plot_curves"}),
    "benchmarks/parity.py": frozenset(
        {"summarize", "optim_text", "verdict", "mean_sd_text", "row_precision", "render"}
    ),
    "benchmarks/mnist_knn.py": frozenset({"render"}),
    "benchmarks/throughput.py": frozenset({"render"}),
    "benchmarks/linear_probe.py": frozenset({"render"}),
    "benchmarks/folder_throughput.py": frozenset({"knn_cell", "study_rows", "render"}),
}

_CODE_IDS: dict[tuple[str, str], str] = {}  # (path, blob) -> code id; a blob names its content across commits
_TABLE_IDS: dict[tuple[str, frozenset[str]], str] = {}  # (code id, methods left out) -> code id


def _tree_id(tree: ast.AST) -> str:
    return "ast:" + hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:20]


def _without_prose(tree: ast.Module) -> ast.Module:
    """``tree`` less what no number reads: docstrings, and the ``help=`` text of calls (argparse's ``--help``)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:]
        if isinstance(node, ast.Call):
            node.keywords = [k for k in node.keywords if k.arg != "help"]
    return tree


def _without_reporting(path: str, tree: ast.Module) -> ast.Module:
    """``tree`` (of the file ``path``) less the module-level functions :data:`REPORTING` names for it."""
    drop = REPORTING.get(path, frozenset())
    if drop:
        tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name in drop)]
    return tree


def _normalized(path: str, text: str) -> ast.Module:
    """The syntax tree of ``path`` that its code id hashes: less prose and reporting functions."""
    return _without_reporting(path, _without_prose(ast.parse(text)))


def code_id(path: str, blob: str, read) -> str:
    """What a number can depend on in the file ``path`` (git ``blob``; ``read(path)``: its text): for Python
    source, a hash of its syntax tree less docstrings, ``help=`` texts and the functions that only report
    (:data:`REPORTING`), so that comments, docstrings, help, formatting and table layout do not count; for any
    other file (and Python that does not parse), the blob itself."""
    if not path.endswith(".py"):
        return blob
    if (path, blob) not in _CODE_IDS:
        try:
            tree = _normalized(path, read(path))
        except SyntaxError:
            _CODE_IDS[path, blob] = blob
        else:
            _CODE_IDS[path, blob] = _tree_id(tree)
    return _CODE_IDS[path, blob]


def without_methods(path: str, cid: str, read, drop: frozenset[str], methods: frozenset[str]) -> str:
    """The :func:`code_id` ``cid`` of the benchmark ``path``, less the entries of the methods in ``drop`` in each
    module-level table keyed by method names (parity.py's ``SPECS``): a unit that runs moco's parity reads moco's
    spec, not simsiam's, so a change to simsiam's spec does not redo moco's finished seeds."""
    if not drop or not cid.startswith("ast:"):
        return cid
    if (cid, drop) not in _TABLE_IDS:
        tree = _normalized(path, read(path))
        cut = False
        for node in tree.body:
            table = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if not (isinstance(table, ast.Dict) and table.keys):
                continue
            names = [k.value if isinstance(k, ast.Constant) else None for k in table.keys]
            if all(n in methods for n in names):
                kept = [(k, v) for n, k, v in zip(names, table.keys, table.values) if n not in drop]
                cut |= len(kept) < len(names)
                table.keys, table.values = [k for k, _ in kept], [v for _, v in kept]
        _TABLE_IDS[cid, drop] = _tree_id(tree) if cut else cid
    return _TABLE_IDS[cid, drop]


def keys_at(commit: str, unit_list: list[Unit], methods: list[str], pretraining: bool = False) -> dict[str, str]:
    """Each unit's :func:`unit_key` at ``commit`` (its pretraining key: those units that can re-evaluate), from each
    file's :func:`code_id`."""

    @functools.cache  # every unit of one script reads the same few files
    def read(path: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True).stdout

    files = {path: code_id(path, blob, read) for path, blob in code_files(commit).items()}
    chosen = [u for u in unit_list if u.reevaluate or not pretraining]
    return {u.name: unit_key(u, files, methods, read, pretraining) for u in chosen}


def reusable(
    state: dict, pre_keys: dict[str, str], pre_keys_then, unit_list: list[Unit] | None = None
) -> dict[str, str]:
    """The units not done in ``state`` whose kept runs a re-evaluation can use: unit -> the commit of its last run
    (``state["earlier"]``), where its pretraining key then (``pre_keys_then(commit)``, by today's :func:`unit_key`)
    equals today's (``pre_keys``) and (of ``unit_list``) every folder it keeps still holds an encoder (a fresh
    clone has none; a later cut run overwrote it): else it runs in full."""
    kept = {u.name: u.keeps for u in unit_list or ()}
    out = {}
    for name, e in state.get("earlier", {}).items():
        git = e.get("git")
        if name in state["done"] or name not in pre_keys or not git:
            continue
        if not all(holds_encoder(f) for f in kept.get(name, ())):
            continue
        if pre_keys_then(git).get(name) == pre_keys[name]:
            out[name] = git
    return out


def load_state(rev: str, keys: dict[str, str], keys_then=None) -> dict:
    """The refresh state at code commit ``rev``: the finished units whose inputs are unchanged: the key of their
    inputs at the commit they ran at, ``keys_then(commit)`` (computed by today's :func:`unit_key`, so a change to
    what a key leaves out does not redo finished units), equals ``keys``; without ``keys_then`` or where that commit
    is missing, the key stored with the entry."""
    state = load_json(STATE) or {}
    done = {}
    # each unit's last duration, kept across code commits, and whether its CPU had native bf16 (precision auto:
    # bf16-mixed, else float32)
    durations = {k: dict(state.get(k, {})) for k in ("seconds", "seconds_native_bf16")}
    earlier = dict(state.get("earlier", {}))  # the last finished run of each unit not done now (see reusable)
    for name, e in [*state.get("earlier", {}).items(), *state.get("done", {}).items()]:
        note_duration(durations, name, e)  # an entry is its unit's latest full run (a rerun replaces it)
    for name, e in state.get("done", {}).items():
        git = e.get("git", state.get("git"))
        key = (keys_then(git).get(name) if keys_then and git else None) or e.get("key")
        if key is not None and key == keys.get(name):
            done[name] = {**e, "git": git, "key": key}
        else:
            earlier[name] = {**e, "git": git}
    earlier = {n: e for n, e in earlier.items() if n not in done}
    return {"git": rev, "done": done, **durations, "earlier": earlier}


def note_duration(state: dict, name: str, entry: dict) -> None:
    """Make the duration of ``entry`` (a unit's record) the last one of unit ``name`` in ``state``, with whether
    its CPU had native bf16; an entry without one (a re-evaluation) changes nothing."""
    if "seconds" in entry:
        state.setdefault("seconds", {})[name] = entry["seconds"]
        if "native_bf16" in entry:
            state.setdefault("seconds_native_bf16", {})[name] = entry["native_bf16"]


def time_left(
    unit_list: list[Unit],
    state: dict,
    jobs: int = 2,
    reuse: dict | None = None,
    again: set[str] | frozenset[str] = frozenset(),
) -> tuple[float, int]:
    """Seconds of wall time the units not done (and the done ones in ``again``: makers of missing runs,
    :func:`with_makers`) would take by their last durations (paired units ``jobs`` at a time; the re-evaluations
    of ``reuse`` not counted), and how many of them never ran (not counted)."""
    seconds, unknown = 0.0, 0
    for u in unit_list:
        if (u.name in state["done"] and u.name not in again) or u.name in (reuse or {}):
            continue
        last = state.get("seconds", {}).get(u.name)
        if last is None:
            unknown += 1
        else:
            seconds += last / (jobs if u.paired else 1)
    return seconds, unknown


def merge_recorded(state: dict, keys: dict[str, str]) -> None:
    """Add to ``state`` the units another refresh process recorded in the state file since this one read it
    (whose stored key is today's key for that unit, so they ran on the same inputs), and their durations: two
    refreshes with disjoint ``--only`` lists (each on one core) then keep each other's records."""
    for _ in range(5):  # another process may be writing the file this instant
        try:
            disk = load_json(STATE)
            break
        except json.JSONDecodeError:
            time.sleep(0.2)
    else:
        raise SystemExit(f"refresh: {STATE} is not valid JSON; restore it from git (its units' runs are kept)")
    if not disk:
        return
    for name, e in disk.get("done", {}).items():
        if name not in state["done"] and e.get("key") is not None and e.get("key") == keys.get(name):
            state["done"][name] = e
            note_duration(state, name, e)  # the other process's run is this unit's latest: its duration wins
    for name, s in disk.get("seconds", {}).items():
        state.setdefault("seconds", {}).setdefault(name, s)
    for name, b in disk.get("seconds_native_bf16", {}).items():
        state.setdefault("seconds_native_bf16", {}).setdefault(name, b)


def run(
    unit_list: list[Unit],
    state: dict,
    keys: dict[str, str] | None = None,
    jobs: int = 2,
    reuse: dict[str, str] | None = None,
    again: set[str] | frozenset[str] = frozenset(),
    threads: int | None = None,
) -> None:
    """Run the units not done yet, in order; paired units ``jobs`` at a time (the next starts when one ends;
    ``jobs=1``: every unit alone, which leaves a core to other work). A unit in ``reuse`` runs its ``reevaluate``
    command instead of its own (its record says so); one in ``again`` runs even though done (:func:`with_makers`).
    ``threads``: every unit runs with that many torch threads (``OMP_NUM_THREADS``, over a unit's own one thread),
    recorded with its duration; only with ``jobs=1`` (a long unit alone on both cores of a session that cannot
    hold it on one). Its tables name the thread count (``benchmarks.common.machine``)."""
    if threads is not None and jobs != 1:
        raise ValueError("refresh: threads is for units run one at a time (jobs=1)")
    reuse = reuse or {}
    todo = [u for u in unit_list if u.name not in state["done"] or u.name in again]
    running: list[tuple[Unit, subprocess.Popen, float]] = []

    def finish(entry: tuple[Unit, subprocess.Popen, float]) -> None:
        u, proc, t0 = entry
        code = proc.wait()
        running.remove(entry)
        if code != 0:
            for other in list(running):  # a partner that still ends well is kept
                if other[1].wait() == 0:
                    record(other[0], other[2])
            raise SystemExit(f"refresh: {u.name} failed (exit {code}); fix it and run refresh.py again")
        record(u, t0)

    def record(u: Unit, t0: float) -> None:
        took = round(time.perf_counter() - t0)
        entry = {"finished": time.strftime("%F %T"), "git": state["git"], "key": (keys or {}).get(u.name)}
        if u.name in reuse:  # its duration is not a full run's: kept apart from the estimates
            entry.update(reevaluated_runs_of=reuse[u.name], reevaluate_seconds=took)
        else:
            entry.update(seconds=took, native_bf16=cpu_has_native_bf16())
            if threads is not None:
                entry["threads"] = threads
            note_duration(state, u.name, entry)
        state["done"][u.name] = entry
        merge_recorded(state, keys or {})
        save_json(STATE, state)

    while todo or running:
        if todo and (not running or (todo[0].paired and len(running) < jobs and running[0][0].paired)):
            u = todo.pop(0)
            merge_recorded(state, keys or {})
            if u.name in state["done"] and u.name not in again:  # another refresh process ran it meanwhile
                print(f"refresh: {u.name}: done by another refresh process", flush=True)
                continue
            argv = list(u.reevaluate) if u.name in reuse else u.argv
            print(f"refresh: {u.name}: {' '.join([*u.prefix, *argv[1:]])}", flush=True)
            env = {**os.environ, **u.env, **({"OMP_NUM_THREADS": str(threads)} if threads is not None else {})}
            proc = subprocess.Popen([*u.prefix, *argv], env=env)
            running.append((u, proc, time.perf_counter()))
            continue
        while True:  # wait for whichever ends first
            ended = [e for e in running if e[1].poll() is not None]
            if ended:
                finish(ended[0])
                break
            time.sleep(0.5)


def select(unit_list: list[Unit], only: str) -> list[Unit]:
    """The units whose names match one of the comma-separated fnmatch patterns of ``only`` (all for "");
    a pattern that matches no unit is an error naming the units."""
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    if not patterns:
        return unit_list
    for p in patterns:
        if not any(fnmatch.fnmatchcase(u.name, p) for u in unit_list):
            raise SystemExit(f"refresh: --only {p!r} matches no unit; units: {', '.join(u.name for u in unit_list)}")
    return [u for u in unit_list if any(fnmatch.fnmatchcase(u.name, p) for p in patterns)]


def section_command(key: str) -> str:
    """The command a RESULTS.md section names (its ``Command: `...` `` line), so that writing the section again from
    its store keeps it; empty where it names none."""
    found = re.search(r"^Command: `(.*)`$", section_text(key) or "", re.M)
    return found.group(1) if found else ""


def rerender() -> list[str]:
    """Write again, from their stores, the sections whose renderers :data:`REPORTING` leaves out of the units'
    keys (a change to a table's layout redoes no unit, so no unit would write its table again); returns the
    sections written. A section without a store yet is left alone."""
    from benchmarks import folder_throughput, linear_probe, mnist_knn, parity, quality, throughput

    written = []
    for key, module in (
        ("mnist_knn", mnist_knn),
        ("throughput", throughput),
        ("quality", quality),
        ("linear_probe", linear_probe),
    ):
        store = load_json(module.STORE)
        if store:  # the command of the run that wrote it: the store's (mnist_knn keeps it), else the section's
            module.render(store, store.get("command") or section_command(key))
            written.append(key)
    store = parity.load_store()
    if store:
        parity.render(store)
        written.append("parity")
    store = load_json(folder_throughput.STORE)
    if store:
        folder_throughput.render(store)
        written.append("folder_throughput")
    return written


def stamp(rev: str) -> None:
    """Name the code commit once, under RESULTS.md's title."""
    write_section(
        "refresh",
        f"Every table below except the GPU protocol's comes from the code of commit **{rev}** "
        "(`python benchmarks/refresh.py`): each part ran at a commit where everything it reads was the same as "
        f"{rev}'s, up to comments, docstrings, formatting and table layout (a table's git names the commit it ran at; "
        "`benchmarks/results/refresh.json` has each unit's).",
        first=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-dir", default="benchmarks/runs/cifar10_jpeg", help="the 50k CIFAR-10 JPEGs (extracted once)"
    )
    ap.add_argument("--lightly-train", default=LIGHTLY_TRAIN, help="LightlyTrain's executable, in its own venv")
    ap.add_argument("--status", action="store_true", help="print what is done and what is left, run nothing")
    ap.add_argument(
        "--render",
        action="store_true",
        help="write the tables again from their stores (after a layout change), run nothing",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated unit-name patterns (fnmatch, e.g. 'quality:cifar50k:vae,parity:*'): run only the "
        "units left that match, in order (to fit what a session has left)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2,
        help="paired units side by side (2, one thread each) or one at a time (1: leaves a core free)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="with --jobs 1: run each unit with this many torch threads (e.g. 2: a unit too long for a session "
        "on one core); its tables name the thread count",
    )
    ap.add_argument(
        "--no-reuse",
        action="store_true",
        help="run every unit left in full, even one whose kept runs a re-evaluation could use",
    )
    args = ap.parse_args()
    if args.threads is not None and (args.jobs != 1 or args.threads < 1):
        ap.error("--threads N (N >= 1) runs units one at a time: give it with --jobs 1")
    if args.render:
        print(f"refresh: written again from their stores: {', '.join(rerender())}")
        return
    rev = git_rev()
    unit_list = units(args.data_dir, args.lightly_train)
    methods = METHODS.names()

    @functools.cache
    def keys_then(commit: str, pretraining: bool = False) -> dict[str, str]:  # each unit's inputs at that commit
        try:
            return keys_at(commit, unit_list, methods, pretraining)
        except subprocess.CalledProcessError:  # a commit this clone does not have
            return {}

    keys = keys_at("HEAD", unit_list, methods)
    state = load_state(rev, keys, keys_then)
    pre_keys = keys_at("HEAD", unit_list, methods, pretraining=True)
    reuse = (
        {} if args.no_reuse else reusable(state, pre_keys, functools.partial(keys_then, pretraining=True), unit_list)
    )
    left = [u.name for u in unit_list if u.name not in state["done"]]
    if args.status:
        done = len(unit_list) - len(left)
        # the data dir is part of the 50k units' command lines, so of their keys: say which one was assumed
        print(f"code commit {rev}: {done} of {len(unit_list)} units done (with --data-dir {args.data_dir})")
        for name, e in state["done"].items():
            print(f"  done: {name} (at {e['git']}" + (f", {e['threads']} threads" if "threads" in e else "") + ")")
        last, last_bf16 = state.get("seconds", {}), state.get("seconds_native_bf16", {})
        here = cpu_has_native_bf16()
        print(f"this CPU: {'native bf16' if here else 'no native bf16 (precision auto trains in float32)'}")
        elsewhere = 0
        _, again, lines = with_makers([u for u in unit_list if u.name in left], unit_list, state)
        for name in left:
            how = f", re-evaluates the runs of {reuse[name]}" if name in reuse else ""
            if name in last and last_bf16.get(name) is not None and last_bf16[name] != here:
                elsewhere += 1
                how += ", on a CPU " + ("with" if last_bf16[name] else "without") + " native bf16"
            if "threads" in state["earlier"].get(name, {}):  # run with --threads (only the last run's entry has it)
                how += f", {state['earlier'][name]['threads']} threads"
            print(f"  left: {name}" + (f" (last run {last[name] / 60:.0f} min{how})" if name in last else ""))
        for line in missing_needs(unit_list, state):
            print(f"  missing: {line}")
        for line in lines:
            print(f"  {line}")
        elsewhere += sum(last_bf16.get(n, here) != here for n in again)
        wall, unknown = time_left(unit_list, state, args.jobs, reuse, again)
        print(
            f"about {wall / 3600:.1f} h left with --jobs {args.jobs} by the units' last runs (makers included)"
            + (f", plus {unknown} unit(s) never timed" if unknown else "")
            + (
                f"; {elsewhere} of them (makers included) last ran on a CPU "
                + f"{'without' if here else 'with'} native bf16: expect "
                + ("2-4x less" if here else "2-4x more")
                + " here (parity:mae in float32: 869 s per run against 347 s in bf16)"
                if elsewhere
                else ""
            )
        )
        return
    if rev.endswith("-dirty") or rev == "unknown":
        raise SystemExit(f"refresh: the code differs from its commit ({rev}); commit first, so one commit names it all")
    os.environ["REFRESH_COMMAND"] = f"python benchmarks/refresh.py --data-dir {args.data_dir}"  # the units' sections
    chosen, again, lines = with_makers(select(unit_list, args.only), unit_list, state)
    for line in lines:
        print(f"refresh: {line}", flush=True)
    missing = missing_needs(chosen, state)
    if missing:  # before hours of other units, not when the refresh reaches the unit
        raise SystemExit(
            "refresh: missing, make it first (or leave its units out with --only):\n  " + "\n  ".join(missing)
        )
    run(chosen, state, keys, jobs=args.jobs, reuse=reuse, again=again, threads=args.threads)
    print(f"refresh: written again from their stores: {', '.join(rerender())}", flush=True)
    still = sum(u.name not in state["done"] for u in unit_list)
    if still:
        print(f"refresh: the units asked for are done; {still} left")
        return
    stamp(rev)
    print(f"refresh: every unit done at code commit {rev}")


if __name__ == "__main__":
    main()
