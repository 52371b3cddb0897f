"""Declarative configuration: one dataclass per stage, loaded from YAML and overridden from the CLI.

Each stage module defines its own documented ``@dataclass`` (e.g. ``r2rec.train.sft.SFTConfig``), TRL-style,
whose ``__post_init__`` checks ranges and choices. This module only turns YAML sections and ``key=value``
overrides into those dataclasses: every fault (an unknown key, with the closest known one; a value of the wrong
type; a value the dataclass refuses) is one :class:`r2rec.errors.ConfigError` that reads
``<config file>: <section>.<key>: <what>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, TypeVar

import yaml

from r2rec.errors import ConfigError

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
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
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
        # bool is an int to Python, a float would lose its fraction, a list or mapping is no string: all refused.
        wrong = (
            (isinstance(value, bool) and tp is not str)
            or isinstance(value, (list, tuple, dict))
            or (tp is int and isinstance(value, float) and not value.is_integer())
        )
        try:
            if not wrong:
                return tp(value)
        except (TypeError, ValueError):
            pass
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def with_overrides(values: dict | None, overrides: list[str] | None) -> dict:
    """A copy of ``values`` with ``key=value`` overrides applied (values parsed as YAML)."""
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"expected a mapping of key: value, got {values!r}")
    values = dict(values or {})
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r}: expected key=value")
        k, v = ov.split("=", 1)
        try:
            values[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ValueError(f"override {ov!r}: the value is not valid YAML") from None
    return values


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _config_message(msg: str, cls: type, where: str, names: set[str]) -> str:
    """A dataclass's own check message (``SFTConfig.learning_rate must be > 0``) in the config's terms:
    ``<where>.<key>: what``, the class names replaced by the section (``where``)."""
    prefixes = sorted({c.__name__ for c in cls.__mro__ if c is not object} | {where}, key=len, reverse=True)
    for prefix in prefixes:
        if msg.startswith(prefix + ".") or msg.startswith(prefix + ":") or msg.startswith(prefix + " "):
            msg = msg[len(prefix) :].lstrip(".: ")
            break
    key, _, rest = msg.partition(" ")
    key = key.rstrip(":")
    if key.split(".")[0].split("=")[0] in names and rest:
        return f"{where}.{key}: {rest}"
    return f"{where}: {msg}"


def build(
    cls: type[T],
    values: dict | None = None,
    overrides: list[str] | None = None,
    where: str = "",
    path: str | os.PathLike | None = None,
) -> T:
    """Build dataclass ``cls`` from a mapping plus ``key=value`` overrides.

    Every fault is a :class:`r2rec.errors.ConfigError` naming ``where`` (the YAML section) and the key, with
    ``path`` (the config file) in front when given: an unknown key (with the closest known one), a value of the
    wrong type, and whatever the dataclass's own ``__post_init__`` checks refuse (ranges, choices).
    """
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        values = with_overrides(values, overrides)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}", path=path) from None
    unknown = sorted(set(values) - names)
    if unknown:
        hint = did_you_mean(unknown[0], names) if len(unknown) == 1 else ""
        raise ConfigError(f"{where}: unknown key(s) {unknown}{hint}; known: {sorted(names)}", path=path)
    try:
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    except ValueError as e:
        raise ConfigError(str(e), path=path) from None
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a nested section (e.g. thoughts.prompt), built by the dataclass itself
        if e.path is not None and path is None:
            raise
        raise ConfigError(_config_message(e.what, cls, where, names), path=path) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(_config_message(str(e), cls, where, names), path=path) from None


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
