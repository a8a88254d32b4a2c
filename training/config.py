"""Typed, frozen configs: built from dicts with unknown keys refused, written next to checkpoints.

Every model and training run has a frozen dataclass config and named presets (`tiny` for
tests, `default` for the shipped models, …). `override(cfg, {"a.b": v})` changes nested fields
and fails loudly on a misspelt key instead of silently ignoring it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a (nested) dict; unknown keys are errors."""
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{cls.__name__}.{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if dataclasses.is_dataclass(tp) and isinstance(value, list | tuple):  # e.g. a scale given as [8, 2, 64]
        return tp(*value)
    if origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (typing.Union, types.UnionType):
        return value  # Optional[...] etc.: taken as given
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def override(cfg: T, changes: dict[str, Any]) -> T:
    """A copy of `cfg` with dotted keys replaced, e.g. {"steps": 10, "model.width": 16}."""
    data = to_dict(cfg)
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key {dotted!r}")
            node = node[part]
        if last not in node:
            raise ConfigError(f"unknown config key {dotted!r}")
        node[last] = value
    return from_dict(type(cfg), data)


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """CLI `--set key=value` pairs; values are parsed as JSON when they can be (numbers, bools)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def save(cfg: Any, path: Path) -> None:
    path.write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def load(cls: type[T], path: Path) -> T:
    return from_dict(cls, json.loads(path.read_text()))
