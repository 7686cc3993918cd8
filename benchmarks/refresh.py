"""Refresh every CPU table of RESULTS.md from one code commit, across as many sessions as it takes.

    python benchmarks/refresh.py --data-dir /tmp/cifar          # run what this code commit has not run yet
    python benchmarks/refresh.py --status                       # what is done, what is left

The code commit is the last commit that changed anything a number can depend on (``benchmarks.common.git_rev``:
everything but tests, Markdown and results), and the tree must be clean. Work is split into units (one benchmark
command, or one method of the long ones); a finished unit is recorded in ``benchmarks/results/refresh.json``
with the code commit, so a run stopped by the end of a session (or a kill) continues where it left off, and a new
code commit starts everything over. The quality benchmark's 50k units run two at a time with one thread each
(faster on 2 cores than one process with two). When every unit is done, the top of RESULTS.md names the commit
once. The GPU protocol table is not part of it: it needs a GPU (``benchmarks/protocol_reference.py``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import git_rev, load_json, save_json, write_section  # noqa: E402
from benchmarks.parity import NO_REFERENCE  # noqa: E402
from ssl_transfer.methods import METHODS  # noqa: E402

STATE = Path(__file__).parent / "results" / "refresh.json"
RUNS = "benchmarks/runs"


@dataclass(frozen=True)
class Unit:
    name: str
    argv: list[str]
    paired: bool = False  # may run beside another paired unit, one thread each
    env: dict[str, str] = field(default_factory=dict)


EPOCHS_50K = 20  # the stated budget of the 50k CIFAR-10 quality runs (issue 12)


def units(data_dir: str) -> list[Unit]:
    """Every unit of a refresh, in the order they run: the longest and riskiest first (50k CIFAR-10, parity),
    then the rest; later units read encoders that earlier ones keep under ``benchmarks/runs``."""
    methods = METHODS.names()
    py = [sys.executable]
    by_cost = sorted(methods, key=lambda m: -METHODS.get(m).num_views)  # two-view methods first
    out = [
        Unit(
            f"quality:cifar50k:{m}",
            [*py, "benchmarks/quality.py", "--datasets", "cifar50k", "--epochs-cifar50k", str(EPOCHS_50K)]
            + ["--methods", m, "--data-dir", data_dir, "--runs-dir", f"{RUNS}/quality"],
            paired=True,
            env={"OMP_NUM_THREADS": "1"},
        )
        for m in by_cost
    ]
    out += [
        Unit(f"parity:{m}", [*py, "benchmarks/parity.py", "--methods", m, "--keep"])
        for m in methods
        if m not in NO_REFERENCE
    ]
    out += [Unit(f"mnist_knn:{m}", [*py, "benchmarks/mnist_knn.py", "--methods", m, "--note", ""]) for m in methods]
    out += [
        Unit("label_efficiency", [*py, "benchmarks/label_efficiency.py", "--encoder", f"{RUNS}/bench-simclr"]),
        Unit("knn_faiss_vs_sklearn", [*py, "benchmarks/knn_faiss_vs_sklearn.py", "--encoder", f"{RUNS}/bench-simclr"]),
        Unit("throughput", [*py, "benchmarks/throughput.py"]),
        Unit("monitor_overhead", [*py, "benchmarks/monitor_overhead.py"]),
    ]
    for ds in ("mnist", "cifar"):
        out += [
            Unit(f"quality:{ds}:{m}", [*py, "benchmarks/quality.py", "--datasets", ds, "--methods", m]) for m in methods
        ]
    enc = f"{RUNS}/quality/cifar50k-moco"
    cases = [f"mnist={RUNS}/bench-simclr", f"cifar={enc}", f"cifar50k={enc}", f"cifar50k-to-mnist={enc}"]
    out.append(
        Unit(
            "linear_probe",
            [*py, "benchmarks/linear_probe.py", *(a for c in cases for a in ("--case", c)), "--data-dir", data_dir],
        )
    )
    return out


def load_state(rev: str) -> dict:
    state = load_json(STATE)
    if not state or state.get("git") != rev:  # another code commit: start over
        return {"git": rev, "done": {}}
    return state


def run(unit_list: list[Unit], state: dict) -> None:
    """Run the units not done yet, in order; paired units two at a time (the next starts when one ends)."""
    todo = [u for u in unit_list if u.name not in state["done"]]
    running: list[tuple[Unit, subprocess.Popen, float]] = []

    def finish(entry: tuple[Unit, subprocess.Popen, float]) -> None:
        u, proc, t0 = entry
        code = proc.wait()
        running.remove(entry)
        if code != 0:
            for _, other, _ in running:
                other.wait()
            raise SystemExit(f"refresh: {u.name} failed (exit {code}); fix it and run refresh.py again")
        state["done"][u.name] = {"seconds": round(time.perf_counter() - t0), "finished": time.strftime("%F %T")}
        save_json(STATE, state)

    while todo or running:
        if todo and (not running or (todo[0].paired and len(running) < 2 and running[0][0].paired)):
            u = todo.pop(0)
            print(f"refresh: {u.name}: {' '.join(u.argv[1:])}", flush=True)
            running.append((u, subprocess.Popen(u.argv, env={**os.environ, **u.env}), time.perf_counter()))
            continue
        while True:  # wait for whichever ends first
            ended = [e for e in running if e[1].poll() is not None]
            if ended:
                finish(ended[0])
                break
            time.sleep(0.5)


def stamp(rev: str) -> None:
    """Name the code commit once, under RESULTS.md's title."""
    write_section(
        "refresh",
        f"Every table below except the GPU protocol's comes from code commit **{rev}** "
        "(`python benchmarks/refresh.py`; a table's git names that code commit).",
        first=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-dir", default="benchmarks/runs/cifar10_jpeg", help="the 50k CIFAR-10 JPEGs (extracted once)"
    )
    ap.add_argument("--status", action="store_true", help="print what is done and what is left, run nothing")
    args = ap.parse_args()
    rev = git_rev()
    state = load_state(rev)
    unit_list = units(args.data_dir)
    left = [u.name for u in unit_list if u.name not in state["done"]]
    if args.status:
        print(f"code commit {rev}: {len(unit_list) - len(left)} of {len(unit_list)} units done")
        for name in left:
            print(f"  left: {name}")
        return
    if rev.endswith("-dirty") or rev == "unknown":
        raise SystemExit(f"refresh: the code differs from its commit ({rev}); commit first, so one commit names it all")
    os.environ["REFRESH_COMMAND"] = f"python benchmarks/refresh.py --data-dir {args.data_dir}"  # the units' sections
    run(unit_list, state)
    stamp(rev)
    print(f"refresh: every unit done at code commit {rev}")


if __name__ == "__main__":
    main()
