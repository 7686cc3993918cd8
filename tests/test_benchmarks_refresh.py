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


def test_one_job_runs_paired_units_one_after_the_other(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    units = [_unit("p1", log, 1.0, paired=True), _unit("p2", log, 1.0, paired=True)]
    refresh.run(units, {"git": "x", "done": {}}, jobs=1)
    ev = _events(log)
    assert [(k, n) for k, n, _ in ev] == [("start", "p1"), ("end", "p1"), ("start", "p2"), ("end", "p2")]


def test_done_units_are_skipped_and_units_whose_inputs_changed_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    keys = {"a": "k1", "b": "k2"}
    state = refresh.load_state("abc1234", keys)
    refresh.run([_unit("a", log)], state, keys)
    state = refresh.load_state("abc1234", keys)
    assert set(state["done"]) == {"a"} and state["done"]["a"]["key"] == "k1"
    refresh.run([_unit("a", log), _unit("b", log)], state, keys)
    assert [n for k, n, _ in _events(log) if k == "start"] == ["a", "b"]
    later = refresh.load_state("def5678", {"a": "k1", "b": "changed"})  # a new commit that changed b's inputs only
    assert set(later["done"]) == {"a"} and later["done"]["a"]["git"] == "abc1234"


def test_entries_from_before_keys_are_judged_by_their_inputs_at_their_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    refresh.save_json(refresh.STATE, {"git": "old1234", "done": {"a": {"seconds": 1}, "b": {"seconds": 2}}})
    then = {"old1234": {"a": "same", "b": "other"}}
    state = refresh.load_state("new5678", {"a": "same", "b": "now"}, then.__getitem__)
    assert set(state["done"]) == {"a"} and state["done"]["a"] == {"seconds": 1, "git": "old1234", "key": "same"}


def test_finished_units_are_judged_by_todays_key_of_their_commit_not_the_key_stored_then(tmp_path, monkeypatch):
    """A change to what a key leaves out (e.g. ``common.NOT_CODE_GLOBS``) must not redo units whose inputs did not
    change."""
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    done = {"a": {"git": "old1234", "key": "old-a"}, "b": {"git": "old1234", "key": "old-b"}}
    refresh.save_json(refresh.STATE, {"git": "old1234", "done": done})
    then = {"old1234": {"a": "same", "b": "other"}, "new5678": {}}
    state = refresh.load_state("new5678", {"a": "same", "b": "now"}, then.__getitem__)
    assert set(state["done"]) == {"a"} and state["done"]["a"]["key"] == "same"
    gone = refresh.load_state("new5678", {"a": "old-a", "b": "now"}, lambda c: {})  # its commit is not in this clone
    assert set(gone["done"]) == {"a"}  # then the stored key decides


def _key(unit: refresh.Unit, files: dict[str, str], texts: dict[str, str]) -> str:
    return refresh.unit_key(unit, files, ["simclr", "moco", "mocov3"], lambda p: texts.get(p, ""))


def test_a_units_key_follows_exactly_the_files_it_reads():
    files = {
        "ssl_transfer/__init__.py": "i0",
        "ssl_transfer/train.py": "t0",
        "ssl_transfer/cli.py": "l0",
        "ssl_transfer/methods/moco.py": "m0",
        "ssl_transfer/methods/mocov3.py": "v0",
        "recipes/moco_cifar10.yaml": "r0",
        "recipes/mocov3_cifar10.yaml": "s0",
        "recipes/protocols/cifar10_mocov3_resnet18.yaml": "p0",
        "benchmarks/quality.py": "q0",
        "benchmarks/common.py": "c0",
        "benchmarks/parity.py": "y0",
    }
    texts = {
        "benchmarks/quality.py": "from benchmarks.common import (\n    git_rev,\n)\nfrom ssl_transfer import load\n",
        # the package's lazy table: its strings are imports
        "ssl_transfer/__init__.py": "_API = {'a': 'ssl_transfer.train', 'b': 'ssl_transfer.evaluation.linear'}\n",
    }
    moco = refresh.Unit("quality:cifar:moco", ["py", "benchmarks/quality.py", "--methods", "moco"], methods=("moco",))
    every = refresh.Unit("throughput", ["py", "benchmarks/quality.py"])
    base = {u.name: _key(u, files, texts) for u in (moco, every)}

    def changed(path: str) -> dict[str, bool]:
        f = {**files, path: "new"}
        return {u.name: _key(u, f, texts) != base[u.name] for u in (moco, every)}

    assert changed("ssl_transfer/methods/mocov3.py") == {"quality:cifar:moco": False, "throughput": True}
    assert changed("recipes/protocols/cifar10_mocov3_resnet18.yaml") == {
        "quality:cifar:moco": False,
        "throughput": True,
    }
    assert changed("recipes/mocov3_cifar10.yaml")["quality:cifar:moco"] is False
    assert changed("ssl_transfer/methods/moco.py")["quality:cifar:moco"] is True
    assert changed("recipes/moco_cifar10.yaml")["quality:cifar:moco"] is True
    assert changed("ssl_transfer/train.py")["quality:cifar:moco"] is True
    assert changed("ssl_transfer/cli.py") == {"quality:cifar:moco": False, "throughput": False}  # nothing imports it
    assert changed("benchmarks/common.py")["quality:cifar:moco"] is True  # imported by the unit's script
    assert changed("benchmarks/parity.py") == {"quality:cifar:moco": False, "throughput": False}  # not imported
    for unread in (".gitignore", ".ci/run", "constraints/minimal.txt"):  # no benchmark reads them
        assert changed(unread) == {"quality:cifar:moco": False, "throughput": False}, unread
    assert changed("constraints/ci.txt") == {"quality:cifar:moco": True, "throughput": True}  # the pins it runs with
    probe = "ssl_transfer/evaluation/linear.py"
    knn_only = refresh.Unit("mnist_knn:moco", ["py", "benchmarks/quality.py"], methods=("moco",), reports_linear=False)
    f = {**files, probe: "l0"}
    assert _key(knn_only, {**f, probe: "l1"}, texts) == _key(knn_only, f, texts)  # it reports no linear probe
    assert _key(moco, {**f, probe: "l1"}, texts) != _key(moco, f, texts)
    assert _key(knn_only, {**f, "ssl_transfer/train.py": "t1"}, texts) != _key(knn_only, f, texts)
    other_args = refresh.Unit(moco.name, [*moco.argv, "--epochs", "3"], methods=("moco",))
    assert _key(other_args, files, texts) != base[moco.name]


def test_a_module_that_defines_two_methods_is_in_both_methods_keys():
    """siamese.py defines siamese and triplet: a change there must rerun triplet's units too (it did not)."""
    files = {"ssl_transfer/methods/siamese.py": "s0", "ssl_transfer/methods/moco.py": "m0"}
    names = ["siamese", "triplet", "moco"]

    def key(m: str, f: dict[str, str]) -> str:
        unit = refresh.Unit(f"quality:cifar:{m}", ["py", "benchmarks/quality.py", "--methods", m], methods=(m,))
        return refresh.unit_key(unit, f, names, lambda p: "")

    changed = {**files, "ssl_transfer/methods/siamese.py": "s1"}
    assert key("triplet", changed) != key("triplet", files)
    assert key("siamese", changed) != key("siamese", files)
    assert key("moco", changed) == key("moco", files)


def test_keys_at_a_commit_read_the_git_tree(tmp_path, monkeypatch):
    import subprocess

    def git(*a: str) -> None:
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "ssl_transfer" / "methods").mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "ssl_transfer" / "methods" / "moco.py").write_text("a = 1\n")
    (tmp_path / "ssl_transfer" / "methods" / "simclr.py").write_text("b = 1\n")
    (tmp_path / "benchmarks" / "mnist_knn.py").write_text("from benchmarks import common\n")
    (tmp_path / "benchmarks" / "common.py").write_text("c = 1\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    units = [
        refresh.Unit("mnist_knn:moco", ["py", "benchmarks/mnist_knn.py"], methods=("moco",)),
        refresh.Unit("mnist_knn:simclr", ["py", "benchmarks/mnist_knn.py"], methods=("simclr",)),
    ]
    monkeypatch.chdir(tmp_path)
    one = refresh.keys_at("HEAD", units, ["moco", "simclr"])
    (tmp_path / "ssl_transfer" / "methods" / "simclr.py").write_text("b = 2\n")
    (tmp_path / "README.md").write_text("prose\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two")
    two = refresh.keys_at("HEAD", units, ["moco", "simclr"])
    assert one["mnist_knn:moco"] == two["mnist_knn:moco"] and one["mnist_knn:simclr"] != two["mnist_knn:simclr"]
    (tmp_path / "benchmarks" / "common.py").write_text("c = 2\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "three")
    three = refresh.keys_at("HEAD", units, ["moco", "simclr"])
    assert three["mnist_knn:moco"] != two["mnist_knn:moco"]  # through `from benchmarks import common`


def test_comments_docstrings_and_formatting_do_not_change_a_key_code_does(tmp_path, monkeypatch):
    """A docstring fix must not throw away hours of finished units; a changed constant must."""
    import subprocess

    def commit(text: str, recipe: str) -> dict[str, str]:
        (tmp_path / "ssl_transfer" / "methods" / "moco.py").write_text(text)
        (tmp_path / "recipes" / "moco_cifar10.yaml").write_text(recipe)
        for args in (["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
            subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
        return refresh.keys_at("HEAD", units, ["moco"])

    (tmp_path / "ssl_transfer" / "methods").mkdir(parents=True)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "quality.py").write_text("a = 1\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    units = [refresh.Unit("quality:cifar:moco", ["py", "benchmarks/quality.py"], methods=("moco",))]
    monkeypatch.chdir(tmp_path)
    code = '"""Mod."""\n\n\nclass A:\n    """Cls."""\n\n    def f(self, x):\n        """Fn."""\n        return x + 1\n'
    base = commit(code, "lr: 0.1\n")
    prose = (
        '"""Other mod."""\nclass A:\n    """Other."""\n    # a comment\n'
        "    def f( self, x ):\n        return x+1  # why\n"
    )
    assert commit(prose, "lr: 0.1\n") == base
    assert commit(prose.replace("x+1", "x+2"), "lr: 0.1\n") != base
    assert commit(prose.replace("# a comment", "'not a docstring'"), "lr: 0.1\n") != base
    assert commit(code, "lr: 0.1  # a yaml comment\n") != base  # other files count byte for byte
    assert commit("def broken(:\n", "lr: 0.1\n") != base  # unparsable Python counts by its blob


def test_a_methods_entry_in_a_benchmark_table_and_help_texts_are_out_of_other_units_keys(tmp_path, monkeypatch):
    """Giving simsiam's parity spec 10 seeds must not redo moco's finished parity seeds (it did: parity.py is one file
    in every parity unit's key); a help text changes no number; a shared constant or a mixed table still counts."""
    import subprocess

    def commit(text: str) -> dict[str, str]:
        (tmp_path / "benchmarks" / "parity.py").write_text(text)
        for args in (["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
            subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
        return refresh.keys_at("HEAD", units, ["moco", "simsiam"])

    (tmp_path / "benchmarks").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    units = [
        refresh.Unit(f"parity:{m}", ["py", "benchmarks/parity.py", "--methods", m], methods=(m,))
        for m in ("moco", "simsiam")
    ]
    monkeypatch.chdir(tmp_path)
    code = (
        "SGD = {'lr': 0.1}\n"
        "SPECS: dict = {'moco': dict(SGD, seeds=10), 'simsiam': dict(SGD)}\n"
        "MIXED = {'moco': 1, 'other': 2}\n"
        "ap.add_argument('--seeds', help='default 0-2; moco: 0-9')\n"
    )
    base = commit(code)
    simsiam10 = commit(code.replace("dict(SGD)}", "dict(SGD, seeds=10)}"))
    assert simsiam10["parity:moco"] == base["parity:moco"] and simsiam10["parity:simsiam"] != base["parity:simsiam"]
    assert commit(code.replace("moco: 0-9", "moco, simsiam: 0-9")) == base
    assert commit(code.replace("seeds=10)", "seeds=3)"))["parity:moco"] != base["parity:moco"]
    assert all(v != base[u] for u, v in commit(code.replace("'lr': 0.1", "'lr': 0.2")).items())
    assert all(v != base[u] for u, v in commit(code.replace("'other': 2", "'other': 3")).items())


def test_a_failing_unit_stops_the_refresh_and_names_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    keys = {"ok": "k1", "broken": "k2", "after": "k3"}
    state = refresh.load_state("abc1234", keys)
    with pytest.raises(SystemExit, match="broken failed"):
        refresh.run([_unit("ok", log), _unit("broken", log, code=3), _unit("after", log)], state, keys)
    assert set(refresh.load_state("abc1234", keys)["done"]) == {"ok"}
    assert "after" not in log.read_text()


def test_only_units_that_report_a_linear_probe_read_its_code():
    by_name = {u.name: u for u in refresh.units("/tmp/cifar")}
    linear = sorted(n for n, u in by_name.items() if u.reports_linear)
    assert linear and all(n.startswith("quality:") or n in ("label_efficiency", "linear_probe") for n in linear)
    assert all(by_name[f"quality:{ds}:simclr"].reports_linear for ds in ("mnist", "cifar", "cifar50k"))
    for u in by_name.values():  # the others ask for no linear protocol and call no probe themselves
        text = Path(u.argv[1]).read_text()
        assert u.reports_linear or ('"linear"' not in text and "linear_probe(" not in text), u.name


def test_every_registered_method_has_its_units():
    from benchmarks.parity import NO_REFERENCE
    from ssl_transfer.methods import METHODS

    names = {u.name for u in refresh.units("/tmp/cifar")}
    for m in METHODS.names():
        assert {f"mnist_knn:{m}", f"quality:cifar50k:{m}"} <= names
        assert (f"parity:{m}" in names) == (m not in NO_REFERENCE)


def test_one_methods_recipe_redoes_only_its_own_units():
    """A change to MAE's recipe redoes the MAE units that load it, not the timing and evaluation units that train or
    read SimCLR (and MoCo) only: they name the methods and the recipes they depend on instead of reading every
    method's files."""
    from ssl_transfer.methods import METHODS

    methods = METHODS.names()
    files = {"ssl_transfer/train.py": "t0", "benchmarks/__init__.py": "i0"}
    files |= {f"ssl_transfer/methods/{m}.py": f"{m}0" for m in methods}
    files |= {f"recipes/{m}_{ds}.yaml": f"{m}{ds}0" for m in methods for ds in ("mnist", "cifar10")}
    files |= {f"recipes/protocols/cifar10_{m}_resnet18.yaml": f"{m}p0" for m in methods}
    unit_list = refresh.units("/tmp/cifar")
    files |= {u.argv[1]: "s0" for u in unit_list}

    def keys(f: dict[str, str]) -> dict[str, str]:
        return {u.name: refresh.unit_key(u, f, methods, lambda p: "") for u in unit_list}

    def redone(change: dict[str, str]) -> set[str]:
        after = keys({**files, **change})
        return {name for name in before if before[name] != after[name]}

    before = keys(files)
    # a recipe redoes the units that load it: MAE's MNIST recipe its MNIST units, not its parity (whose settings
    # are in parity.py) nor its CIFAR runs
    assert redone({"recipes/mae_mnist.yaml": "new"}) == {"quality:mnist:mae", "mnist_knn:mae"}
    assert redone({"recipes/mae_cifar10.yaml": "new"}) == {"quality:cifar:mae", "quality:cifar50k:mae"}
    assert redone({"ssl_transfer/methods/mae.py": "new"}) == {
        u.name for u in unit_list if u.methods is not None and "mae" in u.methods
    }
    assert "parity:mae" in redone({"ssl_transfer/methods/mae.py": "new"})
    assert redone({"recipes/protocols/cifar10_mae_resnet18.yaml": "new"}) == set()  # the GPU protocol: no unit
    for_simclr = redone({"recipes/simclr_cifar10.yaml": "new"})
    assert {"monitor_overhead", "linear_probe", "quality:cifar50k:simclr", "quality:cifar50k:distill"} <= for_simclr
    assert {"throughput", "folder_startup", "label_efficiency", "parity:simclr"}.isdisjoint(for_simclr)
    # the units that read the MNIST SimCLR run follow its recipe
    assert {"mnist_knn:simclr", "label_efficiency", "knn_faiss_vs_sklearn", "linear_probe"} <= redone(
        {"recipes/simclr_mnist.yaml": "new"}
    )


def test_the_recipe_patterns_match_the_recipes_quality_loads():
    from benchmarks import quality

    assert quality.DATASETS["mnist"].recipe_suffix == "mnist" and refresh.MNIST_RECIPES == ("recipes/*_mnist.yaml",)
    assert quality.DATASETS["cifar"].recipe_suffix == "cifar10" and refresh.CIFAR_RECIPES == ("recipes/*_cifar10.yaml",)
    assert quality.dataset("cifar50k", Path("/tmp/cifar")).recipe_suffix == "cifar10"


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


def test_only_runs_the_matching_units_and_an_unknown_pattern_names_the_units():
    units = [refresh.Unit(n, ["true"]) for n in ("quality:cifar50k:vae", "parity:simclr", "parity:byol", "throughput")]
    chosen = refresh.select(units, "parity:*, quality:cifar50k:vae")
    assert [u.name for u in chosen] == ["quality:cifar50k:vae", "parity:simclr", "parity:byol"]  # the refresh's order
    assert refresh.select(units, "") == units
    with pytest.raises(SystemExit, match=r"--only 'parity:dino' matches no unit; units: quality:cifar50k:vae, "):
        refresh.select(units, "parity:dino")


def test_a_partner_that_ends_well_after_the_other_failed_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    keys = {"broken": "k1", "slow": "k2"}
    state = refresh.load_state("abc1234", keys)
    units = [_unit("broken", log, 0.2, paired=True, code=3), _unit("slow", log, 2.0, paired=True)]
    with pytest.raises(SystemExit, match="broken failed"):
        refresh.run(units, state, keys)
    assert set(refresh.load_state("abc1234", keys)["done"]) == {"slow"}


def test_status_estimates_the_time_left_from_each_units_last_run_across_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    units = [_unit("a", log, paired=True), _unit("b", log, paired=True), _unit("c", log)]
    refresh.save_json(
        refresh.STATE,
        {"git": "old", "done": {n: {"seconds": s, "git": "old", "key": "k"} for n, s in (("a", 600), ("c", 300))}},
    )
    state = refresh.load_state("new", {"a": "changed", "b": "k", "c": "changed"})  # a new commit redoes a and c
    assert state["done"] == {}
    assert refresh.time_left(units, state, jobs=2) == (600 / 2 + 300, 1)  # b never ran: counted apart
    assert refresh.time_left(units, state, jobs=1) == (600 + 300, 1)
    refresh.run([units[1]], state, {"b": "k"})  # b's duration is recorded, and the old ones are kept
    state = refresh.load_state("new", {"a": "changed", "b": "k", "c": "changed"})
    assert set(state["seconds"]) == {"a", "b", "c"} and state["seconds"]["a"] == 600
    assert refresh.time_left(units, state, jobs=2) == (600 / 2 + 300, 0)
    assert refresh.time_left(units, state, jobs=2, again={"b"}) == (600 / 2 + 300 + state["seconds"]["b"] / 2, 0)


def test_parity_units_run_first_then_the_50k_units():
    kinds = [u.name.rsplit(":", 1)[0] for u in refresh.units("/tmp/cifar")]
    first_other = next(i for i, k in enumerate(kinds) if k != "parity")
    assert set(kinds[:first_other]) == {"parity"} and "parity" not in kinds[first_other:]
    assert kinds[first_other] == "quality:cifar50k"


def test_every_cpu_section_of_results_md_is_written_by_a_unit():
    """The stamp says every table but the GPU protocol's comes from one commit: the folder comparisons with
    LightlyTrain (issue 15) had no unit, so their tables kept an older commit under that claim."""
    import re

    written = set()
    for u in refresh.units("/tmp/cifar"):
        script = ROOT / u.argv[1]
        written |= set(re.findall(r'write_section\(\s*"(\w+)"', script.read_text()))
    sections = set(re.findall(r"<!-- (\w+):start -->", (ROOT / "benchmarks" / "RESULTS.md").read_text()))
    assert sections - {"refresh", "gpu_protocol"} <= written, sections - written


def test_a_prefixed_unit_runs_under_its_prefix_and_the_prefix_is_in_its_key(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    out = tmp_path / "out"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['PINNED'])"
    unit = refresh.Unit("pinned", [sys.executable, "-c", code], prefix=("env", "PINNED=yes"))
    refresh.run([unit], refresh.load_state("abc1234", {}))
    assert out.read_text() == "yes"
    plain = refresh.Unit("t", ["py", "benchmarks/throughput.py"])
    pinned = refresh.Unit("t", ["py", "benchmarks/throughput.py"], prefix=refresh.PIN)
    assert _key(plain, {}, {}) != _key(pinned, {}, {})


def test_a_missing_executable_a_unit_left_needs_is_named_with_how_to_make_it(tmp_path):
    here, gone = tmp_path / "lt", tmp_path / "nothing" / "lt"
    here.write_text("")
    units = [
        refresh.Unit("a", ["py", "x.py"], needs=((str(gone), "make it so"),)),
        refresh.Unit("b", ["py", "x.py"], needs=((str(here), "fine"),)),
        refresh.Unit("c", ["py", "x.py"], needs=((str(gone), "make it so"),)),
    ]
    assert refresh.missing_needs(units, {"done": {}}) == [f"{gone} (for a, ...): make it so"]
    assert refresh.missing_needs(units, {"done": {"a": {}, "c": {}}}) == []  # done: nothing to run it for
    folder = [u for u in refresh.units("/tmp/cifar", str(gone)) if u.name.startswith("folder_throughput:")]
    assert {u.name for u in folder} == {
        "folder_throughput:n4000-e10:64",
        "folder_throughput:n1000-e2:64",
        "folder_throughput:n1000-e2:128",
        "folder_throughput:n1000-e2:224",
    }
    assert all(u.prefix == refresh.PIN and u.needs[0][0] == str(gone) for u in folder)
    assert "pip install" in refresh.missing_needs(folder, {"done": {}})[0]


def test_two_refreshes_with_disjoint_units_keep_each_others_records(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    keys = {"a": "ka", "b": "kb", "c": "kc", "x": "kx"}
    first = refresh.load_state("abc1234", keys)  # two processes read the state before either records
    second = refresh.load_state("abc1234", keys)
    refresh.run([_unit("a", log)], first, keys)
    refresh.run([_unit("b", log)], second, keys)  # records after the first: it must not drop a
    disk = refresh.load_json(refresh.STATE)
    disk["done"]["c"] = {"key": "old"}  # a record made from other inputs than today's
    refresh.save_json(refresh.STATE, disk)
    refresh.run([_unit("x", log)], refresh.load_state("abc1234", keys), keys)
    state = refresh.load_state("abc1234", keys)
    assert set(state["done"]) == {"a", "b", "x"}  # c's record is from other inputs: not done
    assert set(state["seconds"]) >= {"a", "b"}


def test_a_unit_another_refresh_recorded_meanwhile_is_not_run_again(tmp_path, monkeypatch):
    # two processes whose --only lists overlap: the second records b while the first runs a; the first skips b
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    keys = {"a": "ka", "b": "kb", "c": "kc"}
    first = refresh.load_state("abc1234", keys)
    second = refresh.load_state("abc1234", keys)
    refresh.run([_unit("b", log)], second, keys)
    refresh.run([_unit("a", log), _unit("b", log), _unit("c", log)], first, keys)
    assert [n for k, n, _ in _events(log) if k == "start"] == ["b", "a", "c"]
    assert set(refresh.load_state("abc1234", keys)["done"]) == {"a", "b", "c"}


def test_a_kept_run_that_is_missing_is_made_again_before_the_unit_that_reads_it(tmp_path, monkeypatch):
    # a fresh clone has no benchmarks/runs: the done unit that keeps the run runs again, before its reader
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log, kept = tmp_path / "log", tmp_path / "runs" / "maker"
    maker, other = _unit("maker", log), _unit("other", log)
    reader = refresh.Unit("reader", _unit("reader", log).argv, reads=((str(kept), "maker"),))
    unit_list = [maker, other, reader]
    keys = {"maker": "km", "other": "ko", "reader": "kr"}
    state = refresh.load_state("c1", keys)
    state["done"] = {"maker": {"git": "c0", "key": "km"}, "other": {"git": "c0", "key": "ko"}}
    refresh.save_json(refresh.STATE, state)
    chosen, again, lines = refresh.with_makers([reader], unit_list, state)
    assert [u.name for u in chosen] == ["maker", "reader"] and again == {"maker"}
    assert lines == [f"maker runs again first: reader reads {kept}, which holds no encoder here"]
    refresh.run(chosen, state, keys, again=again)
    assert [n for k, n, _ in _events(log) if k == "start"] == ["maker", "reader"]
    assert state["done"]["maker"]["git"] == "c1"  # measured again, recorded at this commit
    # the run is there (its encoder written): nothing is made again; nor for a reader that is done
    kept.mkdir(parents=True)
    (kept / "encoder.safetensors").write_bytes(b"")
    assert refresh.with_makers([reader], unit_list, {"done": {}})[:2] == ([reader], set())
    (kept / "encoder.safetensors").unlink()
    assert refresh.with_makers([reader], unit_list, {"done": {"reader": {}}})[:2] == ([reader], set())
    # the linear probe and the MNIST tables read kept runs and name their makers, which are units
    names = {u.name for u in refresh.units("/tmp/cifar")}
    readers = [u for u in refresh.units("/tmp/cifar") if u.reads]
    assert {u.name for u in readers} >= {"linear_probe", "label_efficiency", "knn_faiss_vs_sklearn"}
    assert all(m in names for u in readers for _, m in u.reads)


def test_a_unit_whose_pretraining_is_unchanged_reevaluates_its_kept_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    full, again = _unit("q", log), _unit("q-reevaluated", log)
    q = refresh.Unit("q", full.argv, reevaluate=tuple(again.argv))
    state = refresh.load_state("c1", {"q": "k1"})
    refresh.run([q], state, {"q": "k1"})  # a full run at c1
    # c2 changed the linear probe: q's key changed, its pretraining key (p) did not
    state = refresh.load_state("c2", {"q": "k2"})
    assert "q" not in state["done"] and state["earlier"]["q"]["git"] == "c1"
    reuse = refresh.reusable(state, {"q": "p"}, {"c1": {"q": "p"}}.__getitem__)
    assert reuse == {"q": "c1"}
    refresh.run([q], state, {"q": "k2"}, reuse=reuse)
    assert [n for k, n, _ in _events(log) if k == "start"] == ["q", "q-reevaluated"]
    entry = refresh.load_state("c2", {"q": "k2"})["done"]["q"]
    assert entry["reevaluated_runs_of"] == "c1" and "seconds" not in entry
    # pretraining changed too (another key at the commit of its runs): no reuse, a full run
    assert refresh.reusable(refresh.load_state("c3", {"q": "k3"}), {"q": "p3"}, lambda c: {"q": "p"}) == {}
    # its kept run holds no encoder (a fresh clone; a later cut run overwrote it): a full run
    run_dir = tmp_path / "runs" / "q"
    kept = refresh.Unit("q", full.argv, reevaluate=tuple(again.argv), keeps=(str(run_dir),))
    state = refresh.load_state("c3", {"q": "k3"})
    assert refresh.reusable(state, {"q": "p"}, lambda c: {"q": "p"}, [kept]) == {}
    run_dir.mkdir(parents=True)
    (run_dir / "encoder.safetensors").write_bytes(b"")
    assert refresh.reusable(state, {"q": "p"}, lambda c: {"q": "p"}, [kept]) == {"q": "c2"}


def test_earlier_runs_survive_other_units_records(tmp_path, monkeypatch):
    # the first unit recorded at a new commit saves the state: the last run of each unit not done stays in it
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    state = refresh.load_state("c1", {"a": "k1", "q": "k1"})
    refresh.run([_unit("a", log), _unit("q", log)], state, {"a": "k1", "q": "k1"})
    state = refresh.load_state("c2", {"a": "k1", "q": "k2"})
    refresh.run([_unit("b", log)], state, {"a": "k1", "q": "k2", "b": "k1"})  # saves the state at c2
    again = refresh.load_state("c2", {"a": "k1", "q": "k2", "b": "k1"})
    assert set(again["done"]) == {"a", "b"} and again["earlier"]["q"]["git"] == "c1"


def test_a_reevaluating_units_pretraining_key_leaves_out_the_probe_and_the_reevaluating_script():
    files = {
        "ssl_transfer/train.py": "t0",
        "ssl_transfer/evaluation/linear.py": "l0",
        "benchmarks/quality.py": "q0",
        "benchmarks/quality_reevaluate.py": "r0",
    }
    unit = refresh.Unit(
        "quality:cifar50k:moco",
        ["py", "benchmarks/quality.py", "--methods", "moco"],
        methods=("moco",),
        reevaluate=("py", "benchmarks/quality_reevaluate.py", "--methods", "moco"),
    )

    imports = "import ssl_transfer.train\nfrom ssl_transfer.evaluation import linear\n"
    texts = {"benchmarks/quality.py": imports, "benchmarks/quality_reevaluate.py": imports}

    def keys(f: dict[str, str]) -> tuple[str, str]:
        return _key(unit, f, texts), refresh.unit_key(unit, f, ["moco"], lambda p: texts.get(p, ""), pretraining=True)

    full, pre = keys(files)
    for path, full_changes, pre_changes in (
        ("ssl_transfer/evaluation/linear.py", True, False),
        ("benchmarks/quality_reevaluate.py", True, False),
        ("ssl_transfer/train.py", True, True),
        ("benchmarks/quality.py", True, True),
    ):
        f_full, f_pre = keys({**files, path: "new"})
        assert (f_full != full, f_pre != pre) == (full_changes, pre_changes), path


def test_a_change_to_a_reporting_function_keeps_every_key_a_change_to_a_computing_one_does_not(tmp_path, monkeypatch):
    """Adding "native bf16" to the machine string or a column to a table must not redo 20 hours of finished units
    (common.py and each benchmark are in every unit's key); a change to what computes a number must."""
    import subprocess

    def commit(common: str, quality: str) -> dict[str, str]:
        (tmp_path / "benchmarks" / "common.py").write_text(common)
        (tmp_path / "benchmarks" / "quality.py").write_text(quality)
        for args in (["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
            subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
        return refresh.keys_at("HEAD", units, ["moco"])

    (tmp_path / "benchmarks").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    units = [refresh.Unit("quality:cifar:moco", ["py", "benchmarks/quality.py"], methods=("moco",))]
    monkeypatch.chdir(tmp_path)
    common = "def machine():\n    return 'AMD EPYC'\n\n\ndef seed_of(x):\n    return x + 1\n"
    quality = (
        "from benchmarks.common import machine, seed_of\n\n\n"
        "def render(store):\n    return f\"| {store['knn']} |\"\n\n\n"
        "def run(x):\n    return seed_of(x) * 2\n"
    )
    base = commit(common, quality)
    assert commit(common.replace("'AMD EPYC'", "'AMD EPYC, native bf16'"), quality) == base
    assert commit(common, quality.replace("| {store['knn']} |", "| {store['knn']} | {store['precision']} |")) == base
    assert commit(common.replace("x + 1", "x + 2"), quality) != base
    assert commit(common, quality.replace("* 2", "* 3")) != base


def _calls(fn) -> set[str]:
    import ast

    return {
        n.func.id if isinstance(n.func, ast.Name) else n.func.attr
        for n in ast.walk(fn)
        if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))
    }


def test_reporting_functions_are_called_only_by_reporting_code_and_main():
    """What REPORTING leaves out of the keys must compute no stored number: no other function of the benchmarks
    calls one (``main`` may: it stores the machine string and renders), and each named function exists."""
    import ast

    names = set().union(*refresh.REPORTING.values())
    for path, own in refresh.REPORTING.items():
        defined = {n.name for n in ast.parse((ROOT / path).read_text()).body if isinstance(n, ast.FunctionDef)}
        assert own <= defined, f"{path}: REPORTING names functions it does not define: {sorted(own - defined)}"
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        rel = f"benchmarks/{path.name}"
        if rel == "benchmarks/refresh.py":
            continue  # in no unit's key: it writes the tables again (rerender) and names the commit (stamp)
        own = refresh.REPORTING.get(rel, frozenset())
        for fn in ast.parse(path.read_text()).body:
            if isinstance(fn, ast.FunctionDef) and fn.name not in own and fn.name != "main":
                called = _calls(fn) & names
                assert not called, f"{rel}: {fn.name} calls the reporting functions {sorted(called)}"


def test_the_sections_of_reporting_functions_are_written_again_from_their_stores(tmp_path, monkeypatch):
    """A layout change redoes no unit, so no unit writes its table again: the refresh does, from the stores."""
    import benchmarks.common as common
    import benchmarks.quality as quality

    results = tmp_path / "RESULTS.md"
    results.write_text(common.RESULTS.read_text())
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(quality, "plot_curves", lambda store: None)  # the plots belong to the repository
    written = refresh.rerender()
    assert {"mnist_knn", "throughput", "quality", "linear_probe", "parity", "folder_throughput"} <= set(written)
    fresh = results.read_text()
    stale = fresh.replace("ours' precision", "precision (old layout)")
    stale = stale.replace("### mnist: cnn_tiny", "### mnist (old heading): cnn_tiny")
    assert stale != fresh
    results.write_text(stale)
    refresh.rerender()
    assert results.read_text() == fresh
    command = refresh.section_command("quality")
    assert command.startswith("python benchmarks/") and f"Command: `{command}`" in fresh


def test_a_units_duration_is_its_latest_runs_even_when_another_refresh_ran_it(tmp_path, monkeypatch):
    """parity:mae's 86 min float32 run was recorded by one refresh process while another held its 36 min bf16
    duration from an earlier commit: the other one wrote the old duration back, and --status kept it."""
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    log = tmp_path / "log"
    refresh.save_json(
        refresh.STATE,
        {"git": "old", "done": {"a": {"seconds": 600, "git": "old", "key": "old"}}, "seconds": {"a": 600}},
    )
    keys = {"a": "ka", "b": "kb"}
    first = refresh.load_state("new", keys)  # both read a's 600 s from the earlier commit
    second = refresh.load_state("new", keys)
    refresh.run([_unit("a", log)], second, keys)  # a runs again (in about no time)
    refresh.run([_unit("b", log)], first, keys)  # then the first records b, holding a's 600 s
    state = refresh.load_state("new", keys)
    assert state["seconds"]["a"] < 60 and state["done"]["a"]["seconds"] == state["seconds"]["a"]
    assert state["seconds_native_bf16"]["a"] == refresh.cpu_has_native_bf16() == state["done"]["a"]["native_bf16"]


def test_the_package_files_a_benchmark_can_import_exclude_the_command_line_only():
    """cli.py is in no benchmark's closure, so a faster bad-recipe error does not redo the refresh; what trains and
    evaluates is in every unit's (through direct imports, the lazy name tables and the method registry's loop)."""
    files = {str(p.relative_to(ROOT)): "x" for d in ("ssl_transfer", "benchmarks") for p in (ROOT / d).rglob("*.py")}

    def read(path: str) -> str:
        return (ROOT / path).read_text()

    for script in sorted({u.argv[1] for u in refresh.units("/tmp/cifar")}):
        closure = refresh.package_closure(files, refresh.benchmark_closure(files, script, read), read)
        assert "ssl_transfer/cli.py" not in closure and "ssl_transfer/__main__.py" not in closure, script
        for needed in ("ssl_transfer/__init__.py", "ssl_transfer/recipe.py", "ssl_transfer/data/__init__.py"):
            assert needed in closure, (script, needed)
    quality = refresh.package_closure(files, refresh.benchmark_closure(files, "benchmarks/quality.py", read), read)
    for needed in ("train.py", "training/monitor.py", "evaluation/linear.py", "methods/simclr.py", "backbones.py"):
        assert f"ssl_transfer/{needed}" in quality, needed


def test_threads_runs_each_unit_with_that_many_threads_and_records_them(tmp_path, monkeypatch):
    monkeypatch.setattr(refresh, "STATE", tmp_path / "refresh.json")
    out = tmp_path / "threads"
    script = f"import os; open({str(out)!r}, 'w').write(os.environ['OMP_NUM_THREADS'])"
    unit = refresh.Unit("q", [sys.executable, "-c", script], paired=True, env={"OMP_NUM_THREADS": "1"})
    state = {"git": "x", "done": {}}
    refresh.run([unit], state, jobs=1, threads=2)
    assert out.read_text() == "2" and state["done"]["q"]["threads"] == 2
    refresh.run([unit], {"git": "x", "done": {}}, jobs=1)  # without it, the unit's own setting
    assert out.read_text() == "1"
    with pytest.raises(ValueError, match="jobs=1"):
        refresh.run([unit], {"git": "x", "done": {}}, jobs=2, threads=2)
