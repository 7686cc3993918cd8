import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssl_transfer.recipe import Recipe, RecipeError, apply_overrides, list_recipes, load_recipe, parse_override

from .conftest import REPO


def error_of(raw=None, overrides=None) -> str:
    with pytest.raises(RecipeError) as e:
        load_recipe(raw if raw is not None else {}, overrides)
    msg = str(e.value)
    assert "\n" not in msg, "errors must be one line"
    return msg


def test_defaults_are_valid():
    r = load_recipe()
    assert r.method.name == "ae" and r.optim.lr > 0 and r.logging.wandb == "offline"


@pytest.mark.parametrize("name", list_recipes())
def test_every_bundled_recipe_validates(name):
    r = load_recipe(name)
    assert r.name == name.split("/")[-1]  # protocols/x runs as runs/x


def test_bundled_recipes_exist():
    assert "quickstart" in list_recipes()


def test_misspelt_key_names_field_and_suggests(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    msg = str(pytest.raises(RecipeError, load_recipe, p).value)
    assert msg.startswith("optim.lrr: unknown key") and "did you mean 'lr'" in msg and "\n" not in msg


def test_negative_lr_names_field(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("optim:\n  lr: -0.1\n")
    msg = str(pytest.raises(RecipeError, load_recipe, p).value)
    assert msg == "optim.lr: must be greater than 0 (got -0.1)"


def test_bad_choice_lists_allowed_values():
    msg = error_of({"trainer": {"precision": "bf16"}})
    assert msg.startswith("trainer.precision:") and "'bf16-mixed'" in msg and "(got 'bf16')" in msg


def test_unknown_method_lists_methods():
    msg = error_of({"method": {"name": "aee"}})
    assert msg.startswith("method.name: unknown method 'aee'") and all(n in msg for n in ["ae,", "simclr", "vicreg"])


def test_method_specific_keys_are_checked_per_method():
    assert load_recipe({"method": {"name": "dae", "noise_std": 0.3}}).method.noise_std == 0.3
    msg = error_of({"method": {"name": "ae", "noise_std": 0.3}})  # a dae key on ae
    assert msg.startswith("method.noise_std: unknown key")


def test_misplaced_top_level_key_points_to_its_section():
    assert "did you mean 'optim.lr'" in error_of({"lr": 0.1})


def test_source_requirements_and_unknown_source():
    assert error_of({"data": {"source": "npz"}}) == "data.path: required when data.source=npz"
    assert "unknown data source 'mnistt'" in error_of({"data": {"source": "mnistt"}})


def test_unknown_backbone_suggests_timm_names():
    msg = error_of({"backbone": {"name": "resnet1"}})
    assert msg.startswith("backbone.name: unknown backbone 'resnet1'") and "resnet18" in msg


def test_several_errors_stay_on_one_line():
    msg = error_of({"optim": {"lr": 0}, "trainer": {"max_epochs": 0}})
    assert "optim.lr" in msg and "trainer.max_epochs" in msg and "; " in msg


def test_nan_and_inf_rejected():
    assert error_of({"optim": {"lr": float("inf")}}).startswith("optim.lr")


def test_overrides_parse_yaml_values():
    assert parse_override("trainer.max_epochs=3") == (["trainer", "max_epochs"], 3)
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("logging.plots=false") == (["logging", "plots"], False)
    assert parse_override("augment.crop_scale=[0.2, 1.0]") == (["augment", "crop_scale"], [0.2, 1.0])
    with pytest.raises(RecipeError, match="expected key.sub=value"):
        parse_override("trainer.max_epochs")


def test_overrides_layer_over_file(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("optim:\n  lr: 0.5\ntrainer:\n  max_epochs: 7\n")
    r = load_recipe(p, ["optim.lr=0.25", "method.name=dae"])
    assert r.optim.lr == 0.25 and r.trainer.max_epochs == 7 and r.method.name == "dae" and r.name == "r"


def test_override_into_a_value_is_an_error():
    with pytest.raises(RecipeError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_unknown_override_key_is_rejected():
    assert error_of({}, ["trainer.max_epoch=3"]).startswith("trainer.max_epoch: unknown key (did you mean 'max_epochs'")


def test_augment_preset_fills_fields_and_explicit_fields_win():
    r = load_recipe({"augment": {"preset": "digits", "rotate_degrees": 5}})
    assert r.augment.rotate_degrees == 5 and r.augment.translate == 0.1
    assert "augment.preset: unknown preset" in error_of({"augment": {"preset": "digitz"}})


def test_saved_recipe_round_trips(tmp_path: Path):
    r = load_recipe("quickstart", ["optim.lr=0.01"])
    r.save(tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again == r
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["optim"]["lr"] == 0.01


def test_missing_recipe_and_bad_yaml(tmp_path: Path):
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_recipe_dir_is_repo_recipes():
    assert (REPO / "recipes" / "quickstart.yaml").is_file()
    assert isinstance(load_recipe(REPO / "recipes" / "quickstart.yaml"), Recipe)


def test_recipes_never_construct_python_objects(tmp_path: Path, capfd):
    p = tmp_path / "evil.yaml"
    p.write_text('name: !!python/object/apply:os.system ["echo hacked"]\n')
    with pytest.raises(RecipeError, match="not valid YAML.*python/object/apply"):
        load_recipe(p)
    with pytest.raises(RecipeError):
        load_recipe(None, ["name=!!python/object/apply:os.system [echo hacked]"])
    assert "hacked" not in capfd.readouterr().out


def test_schema_imports_no_implementation():
    """The config layer is pydantic only: importing it loads no torch, lightly, kornia, timm or faiss
    (the method registry is imported when a recipe is validated, not before)."""
    heavy = "{'torch', 'lightly', 'kornia', 'timm', 'faiss'}"
    code = f"import sys, ssl_transfer.recipe; print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_field_is_described_and_listed():
    """Every recipe field, methods' included, has a description, and `list fields` prints it."""
    from ssl_transfer.methods import METHODS
    from ssl_transfer.recipe import describe_fields

    rows = describe_fields()
    assert [r["key"] for r in rows if not r["description"]] == []
    assert {r["method"] for r in rows} - {None} == set(METHODS.names())
    assert {r["key"] for r in describe_fields("simclr")} >= {"method.name", "method.temperature"}
    assert all(r["key"].startswith("optim.") for r in describe_fields("optim"))
    with pytest.raises(RecipeError, match="unknown section 'bogus'.*optim.*simclr"):
        describe_fields("bogus")
    out = subprocess.run(
        [sys.executable, "-m", "ssl_transfer", "list", "fields", "moco"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert "method.queue_size" in out and "keys kept as negatives" in out
    # without a method section `list fields` leaves the methods (torch, lightly) unimported: one row names them
    code = (
        "import sys; from ssl_transfer.cli import main; main(['list', 'fields']); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightly'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.splitlines()[-1] == "[]" and "method.*" in out and "simclr" in out and "optim.lr " in out
    assert {r["key"] for r in describe_fields("method")} >= {"method.temperature", "method.queue_size"}
