"""One registry shape for everything built by name (models, encoder families, adapters), as timm's
``register_model`` / ``create_model``: a decorator fills a table, one factory per kind builds from it.

The modules that register are found, not listed: on the first lookup of a name the table does not have,
every module of the registry's packages is imported once (`pkgutil`), so a new model file registers
itself by being in its package.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import threading
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one ``kind`` (e.g. "model"), registered by decorator, discovered in ``packages``."""

    def __init__(self, kind: str, packages: Sequence[str] = ()) -> None:
        self.kind = kind
        self.packages = tuple(packages)
        self._entries: dict[str, T] = {}
        self._discovered = False
        self._lock = threading.Lock()

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """``@registry.register("name")`` above a class or function, or ``registry.register("name", entry)``.
        A name registered twice for different entries is an error."""
        def add(value: T) -> T:
            if not name or not isinstance(name, str):
                raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
            old = self._entries.get(name)
            if old is not None and _identity(old) != _identity(value):
                raise ValueError(f"{self.kind} name {name!r} is registered twice ({old!r}, {value!r})")
            self._entries[name] = value
            return value
        return add if entry is None else add(entry)

    def discover(self) -> None:
        """Import every module of the registry's packages (or the named modules) once, so their decorators
        run; subpackages and private modules (``_x``, ``__main__``) are not imported."""
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
        for name in self.packages:
            if importlib.util.find_spec(name) is None:
                continue
            package = importlib.import_module(name)
            for module in pkgutil.iter_modules(getattr(package, "__path__", []), name + "."):
                if not module.ispkg and not module.name.rpartition(".")[2].startswith("_"):
                    importlib.import_module(module.name)

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is a `ValueError` listing the known ones."""
        if name not in self._entries:
            self.discover()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted (after discovery)."""
        self.discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.discover()
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _identity(entry: object) -> object:
    """What makes two registrations the same (a module imported twice registers equal classes again):
    a class or function by its qualified name, a record by its ``builder``."""
    target = getattr(entry, "builder", entry)
    return (getattr(target, "__module__", None), getattr(target, "__qualname__", id(target)))
