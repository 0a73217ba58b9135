"""Typed configs: every component's settings are a dataclass; dicts and YAML files are checked against it.

Unknown keys are errors (with the known keys listed), values are converted to the field's type where that
is unambiguous (``"1e-3"`` → float, list → tuple), and nested dataclasses are built recursively.
"""
from __future__ import annotations

import dataclasses
import io
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def check_at_least(config: Any, **lows: float) -> None:
    """Raise a one-line `ValueError` naming the first field of ``config`` below its lowest allowed value (or not a
    number): a size or count of 0 or less trains on nothing or divides by zero, and would exit 0 with a useless
    model. For a config's ``__post_init__``: ``check_at_least(self, dim=1, reg_weight=0)``."""
    for name, low in lows.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise ValueError(f"{type(config).__name__}.{name} must be ≥ {low}, got {value!r}")


def _short(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, for messages (a value from a file may be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases: a run file needs none, and nested ones expand a 1 KB file into
    gigabytes of values ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a run file",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {_short(value)} fits none of {annotation}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {_short(value)} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {_short(value)}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_short(value)}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true/false, got {_short(value)}")
    if annotation in (int, float, str):
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where}: expected an integer, got {_short(value)}")
        if isinstance(value, bool) and annotation is not str:
            raise ValueError(f"{where}: expected {annotation.__name__}, got {_short(value)}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {annotation.__name__}, got {_short(value)}") from None
    return value


def from_dict(cls: type[T], data: dict | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and ill-typed values raise `ValueError`."""
    where = where or cls.__name__
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass ``cls`` (see `from_dict`)."""
    from mmrec.io import read_text

    stream = io.StringIO(read_text(path, str(path)))
    stream.name = str(path)  # YAML errors name the file
    data = yaml.load(stream, Loader=_NoAliasLoader)  # safe: a !!python tag is a YAML error, never an object
    try:
        return from_dict(cls, data, where=str(path))
    except ValueError as err:  # a config's own checks (__post_init__) do not know the file
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from None


def to_dict(config: Any) -> dict:
    """The plain-dict form of a config dataclass (JSON/YAML serialisable)."""
    return dataclasses.asdict(config)
