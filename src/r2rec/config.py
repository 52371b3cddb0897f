"""Declarative configuration: one dataclass per stage, loaded from YAML and overridden from the CLI.

Each stage module defines its own documented ``@dataclass`` (e.g. ``r2rec.train.sft.SFTConfig``), TRL-style.
This module only turns YAML sections and ``key=value`` overrides into those dataclasses, with a clear error
for an unknown key or a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

DEFAULT_DATA_DIR = "../shared/data"
DATA_DIR_ENV = "R2REC_DATA_DIR"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the explicit argument, else ``$R2REC_DATA_DIR``, else ``../shared/data``."""
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def data_dirs(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Every data directory to look in, in order, each with the label a run records (config, env, default)."""
    chain = [("config", explicit), ("env", os.environ.get(DATA_DIR_ENV)), (DEFAULT_DATA_DIR, DEFAULT_DATA_DIR)]
    return [(label, Path(d)) for label, d in chain if d]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin is typing.Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where) if non_none else value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected a boolean, got {value!r}")
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def with_overrides(values: dict | None, overrides: list[str] | None) -> dict:
    """A copy of ``values`` with ``key=value`` overrides applied (values parsed as YAML)."""
    values = dict(values or {})
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r}: expected key=value")
        k, v = ov.split("=", 1)
        values[k.strip()] = yaml.safe_load(v)
    return values


def build(cls: type[T], values: dict | None = None, overrides: list[str] | None = None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping plus ``key=value`` overrides; unknown keys are errors."""
    values = with_overrides(values, overrides)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where or cls.__name__}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping of stage -> settings")
    return data
