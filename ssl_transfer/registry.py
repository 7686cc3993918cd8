"""One small generic registry: things are selected by name, unknown names fail loudly."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown name was asked of a registry; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects (classes, factories).

    >>> METHODS = Registry("method")
    >>> @METHODS.register("ae")
    ... class Autoencoder: ...
    >>> METHODS.get("ae")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a second registration of a name is an error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise UnknownNameError listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self._items, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def registered_in_source(package_dir: Path, registry: str) -> dict[str, str]:
    """Names registered with ``@<registry>.register("name")`` on classes in the ``*.py`` files of
    ``package_dir``, mapped to the first line of each class's docstring, read from the source (``ast``) without
    importing it, so that listing them costs no torch/lightly import. A test keeps it equal to the registry."""
    found: dict[str, str] = {}
    for path in sorted(package_dir.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for dec in node.decorator_list:
                if (
                    isinstance(dec, ast.Call)
                    and ast.unparse(dec.func) == f"{registry}.register"
                    and dec.args
                    and isinstance(dec.args[0], ast.Constant)
                ):
                    found[str(dec.args[0].value)] = ((ast.get_docstring(node) or "").strip().splitlines() or [""])[0]
    return found


def methods_in_source() -> dict[str, str]:
    """The pretext methods registered in ``ssl_transfer/methods`` (name -> first docstring line), read without
    importing them (:func:`registered_in_source`)."""
    return registered_in_source(Path(__file__).parent / "methods", "METHODS")


def calls_in_source(path: Path, func: str) -> dict[str, str]:
    """``{first argument: second argument}`` of every ``func("name", "description", ...)`` call in the file at
    ``path`` (as a decorator or plainly), in file order, read with ``ast`` without importing the file."""
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == func
            and len(node.args) >= 2
            and all(isinstance(a, ast.Constant) for a in node.args[:2])
        ):
            name, text = (str(cast(ast.Constant, a).value) for a in node.args[:2])
            found.append((node.lineno, name, text))
    return {name: text for _, name, text in sorted(found)}  # in file order
