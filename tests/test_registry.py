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
