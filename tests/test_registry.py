import pytest

from ssl_transfer.registry import Registry, UnknownNameError


def test_register_get_and_list():
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1 and reg.names() == ["a", "b"] and "b" in reg and len(reg) == 2


def test_unknown_name_lists_known_and_suggests():
    reg: Registry[int] = Registry("method")
    reg.register("simclr")(1)
    reg.register("byol")(2)
    with pytest.raises(UnknownNameError) as e:
        reg.get("simclrr")
    msg = str(e.value)
    assert "unknown method 'simclrr'" in msg and "did you mean 'simclr'" in msg and "byol, simclr" in msg


def test_double_registration_is_an_error():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_method_index_read_from_source_equals_the_registry():
    from pathlib import Path

    import ssl_transfer.methods as methods
    from ssl_transfer.registry import registered_in_source

    index = registered_in_source(Path(methods.__file__).parent, "METHODS")
    assert index == {n: (methods.METHODS.get(n).__doc__ or "").strip().splitlines()[0] for n in methods.METHODS}


def test_list_imports_no_torch():
    import subprocess
    import sys

    for what in ("methods", "backbones", "datasets", "recipes"):
        code = f"import sys\nfrom ssl_transfer.cli import main\nmain(['list', '{what}'])\nprint('torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and len(out.stdout.splitlines()) > 3, (what, out.stderr[-500:])
        assert out.stdout.strip().splitlines()[-1] == "False", what


def test_source_index_and_backbone_names_equal_their_registries():
    from pathlib import Path

    import timm

    import ssl_transfer.data.sources as sources
    from ssl_transfer.backbone_names import CIFAR_RESNETS, SMALL_CNN_WIDTHS
    from ssl_transfer.backbones import build_backbone
    from ssl_transfer.registry import calls_in_source

    index = calls_in_source(Path(sources.__file__), "source")
    assert index == {n: sources.SOURCES.get(n).description for n in sources.SOURCES}
    assert all(build_backbone(n, (3, 8, 8)).embed_dim == w[-1] for n, w in SMALL_CNN_WIDTHS.items())
    assert all(timm.create_model(n, num_classes=0).num_features == d for n, d in CIFAR_RESNETS.items())
